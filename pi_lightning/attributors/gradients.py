"""Input x Gradient and Integrated Gradients on the input embeddings, via Captum.

Both are gradient baselines of the paper's Table 2. Captum does the differentiation; this module
only presents the model to it as a function of one example's input embeddings
(:class:`~pi_lightning.attributors._grad.EmbeddingFunction`) and aggregates the ``(T, D)``
relevance to features.

- Input x Gradient (Shrikumar et al., 2016): ``E * dF/dE``. Cost "1x" (one backward pass). The
  paper aggregates with the L2 norm (Appendix B.2), which is the default here.
- Integrated Gradients (Sundararajan et al., 2017): ``(E - E0) * mean over the path of dF/dE``,
  from the baseline ``E0`` where every attributed token is replaced by the mask's embedding (the
  fixed context is kept). ``budget`` (interpolation steps) defaults to the number of features ``n``
  as in the paper, each step one forward and one backward pass: cost "2n". Completeness:
  ``sum(phi) ~= F(E) - F(E0)``; Captum's convergence delta is kept in ``extras["delta"]``.

What IG means under each mask: it is a path integral in embedding space between the input and the
fully masked input *of the same length*, not an estimate of a coalition game. With a mask token
(``"..."``, pad, a token id) ``F(E0)`` is that game's value of the empty coalition, so IG's
attributions add up to the same total as the Shapley values of the full-input game. Removal has no
embedding (it shifts positions): under ``mask="remove"`` the baseline is the paper's ``"..."``
(:meth:`~pi_lightning.masking.Masker.baseline_ids`), so IG still explains ``F(x) - F("...")``
while the metrics score the removal game. A zero-vector baseline is not used: under removal it
scores at Random's level (``benchmarks/results/RESULTS.md``, "Figures moved out of docstrings").
"""

from __future__ import annotations

import torch
from captum.attr import InputXGradient, IntegratedGradients

from pi_lightning.attributors._grad import EmbeddingFunction, GradientAttributor, mask_baseline
from pi_lightning.attributors.base import budget_count, parse_budget, register

__all__ = ["InputXGradientAttributor", "IntegratedGradientsAttributor"]


@register
class InputXGradientAttributor(GradientAttributor):
    """Input x Gradient on the input embeddings.

    Args:
        aggregation: ``"l2"`` (default, the paper's choice) or ``"sum"`` (signed).
        **kwargs: the shared :class:`~pi_lightning.attributors.base.Attributor` settings.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> ixg = InputXGradientAttributor(tiny_classifier("gpt2", tokenizer=tok), tok)
        >>> [a] = ixg.attribute("a good movie")
        >>> a.scores.shape, bool((a.scores >= 0).all())
        (torch.Size([3]), True)
    """

    name = "inputxgrad"
    cost = "1x"
    default_aggregation = "l2"

    def token_relevance(self, fn: EmbeddingFunction) -> tuple[torch.Tensor, dict]:
        emb = fn.embed().requires_grad_(True)
        rel = InputXGradient(fn).attribute(emb)
        return rel[0], {}


@register
class IntegratedGradientsAttributor(GradientAttributor):
    """Integrated Gradients on the input embeddings, from the mask's embedding.

    Args:
        budget: forward+backward passes per text, one per interpolation step: an int, or a multiple
            of the number of features n (default ``"n"``, as in the paper; at least 2 steps). Besides
            them IG runs the unmasked prediction pass and four forward passes at the path's ends
            (Captum's convergence delta, ``f_input``, ``f_baseline``).
        method: Captum's quadrature (``"gausslegendre"`` default, ``"riemann_trapezoid"``, ...).
        aggregation: ``"sum"`` (default: completeness holds for the sum) or ``"l2"``.
        **kwargs: the shared :class:`~pi_lightning.attributors.base.Attributor` settings.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> ig = IntegratedGradientsAttributor(tiny_classifier("gpt2", tokenizer=tok), tok, budget=64)
        >>> [a] = ig.attribute("a good movie", target=1)
        >>> abs(float(a.scores.sum()) - (a.extras["f_input"] - a.extras["f_baseline"])) < 1e-3
        True
    """

    name = "ig"
    cost = "2n"
    default_aggregation = "sum"

    def __init__(
        self, model, tokenizer, *, budget: int | str = "n", method: str = "gausslegendre", **kwargs
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self._budget = parse_budget(budget, "forward+backward passes, one per interpolation step")
        self.budget = budget
        self.method = method

    def steps(self, n: int) -> int:
        """Interpolation steps (forward+backward passes) for a text of ``n`` features."""
        return budget_count(self._budget, n, minimum=2)

    def forward_equivalents(self, n: int) -> float:
        return 2.0 * self.steps(n)

    def token_relevance(self, fn: EmbeddingFunction) -> tuple[torch.Tensor, dict]:
        emb = fn.embed()
        base = mask_baseline(fn, self.masker.mask)
        steps = self.steps(fn.features.n)
        # Steps per batch: as many copies of the sequence as the token budget allows.
        per_batch = max(1, self.adapter.max_tokens // emb.shape[1])
        rel, delta = IntegratedGradients(fn).attribute(
            emb,
            baselines=base,
            n_steps=steps,
            method=self.method,
            internal_batch_size=per_batch,
            return_convergence_delta=True,
        )
        with torch.no_grad():
            f_in, f_base = (float(v) for v in fn(torch.cat([emb, base])))
        return rel[0], {"delta": float(delta), "n_steps": steps, "f_input": f_in, "f_baseline": f_base}
