"""Kernel SHAP (Lundberg & Lee, 2017) over features, via Captum, with the shared masking function.

Captum's :class:`~captum.attr.KernelShap` samples coalitions from the Shapley kernel (the full and
the empty coalition first, with a very large weight so that the fit is exact at both ends) and fits
a linear model to the outputs. Here it sees the model as a function of a binary feature vector:
Captum perturbs the input ``ones(1, n)`` towards the baseline ``zeros(1, n)`` with one group per
feature (``feature_mask = [0, 1, ..., n-1]``), so each perturbed input *is* a coalition ``z``;
:class:`~pi_lightning.masking.Masker` turns ``z`` into the masked token sequence (inactive features
removed by default; ``mask="..."`` for the paper's mask) and the model's output for the target class at the
classifying position is returned. ``perturbations_per_eval`` coalitions are scored per call, each
distinct coalition once, batched under the token budget.

The paper's budget is ``2n`` samples (cost "2n"), the default ``budget``. Captum draws its
samples from the global torch RNG: the draw runs inside ``torch.random.fork_rng`` seeded with
``seed`` and the text (:func:`~pi_lightning.attributors.base.text_rng`), so a text's attribution does
not depend on the batch, the chunking or the call order, and the caller's random state is left
untouched. Captum's linear fit needs scikit-learn.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import KernelShap

from pi_lightning.attributors.base import Attributor, budget_count, parse_budget, register, text_rng
from pi_lightning.features import Features
from pi_lightning.result import Attribution

__all__ = ["KernelShapAttributor"]


@register
class KernelShapAttributor(Attributor):
    """Kernel SHAP with feature groups and the shared masking function.

    Args:
        budget: coalitions Captum samples per text (its full and empty coalitions first), an int or
            a multiple of the number of features n (default ``"2n"``, the paper's). Passes actually
            run: the unmasked input, the empty one, and each *distinct* sampled coalition once per
            model call, so at most ``budget + 2`` and fewer when samples repeat (Captum cannot be
            asked for distinct ones); ``Attribution.forward_passes`` records what ran.
        perturbations_per_eval: coalitions per model call (default 64; token-budget batched inside).
        seed: seed for Captum's coalition sampling (default 0).
        **kwargs: the shared :class:`~pi_lightning.attributors.base.Attributor` settings.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> ks = KernelShapAttributor(tiny_classifier("gpt2", tokenizer=tok), tok, budget=64)
        >>> [a] = ks.attribute("a good movie", target=1)
        >>> abs(float(a.scores.sum()) - (a.extras["f_full"] - a.base_value)) < 1e-3
        True
    """

    name = "kernel-shap"
    cost = "2n"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        budget: int | str = "2n",
        perturbations_per_eval: int = 64,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self._budget = parse_budget(budget, "sampled coalitions")
        val = perturbations_per_eval
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"perturbations_per_eval must be a positive int, got {val!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
        try:
            import sklearn  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "Kernel SHAP uses Captum's KernelShap, whose linear fit needs scikit-learn: "
                "`pip install scikit-learn`."
            ) from err
        self.budget = budget
        mult, fixed = self._budget
        self.cost = f"{mult:g}n" if fixed is None else f"{fixed}x"
        self.perturbations_per_eval = perturbations_per_eval
        self.seed = seed

    def samples(self, n: int) -> int:
        """Coalitions sampled for a text of ``n`` features (the budget)."""
        return budget_count(self._budget, n)

    def forward_equivalents(self, n: int) -> float:
        return float(self.samples(n))

    def coalition_function(self, features: Features, target: int):
        """The model as a function of binary coalitions ``(K, n)`` -> target output ``(K,)``."""

        def f(z: torch.Tensor) -> torch.Tensor:
            # Kernel SHAP draws coalitions with replacement: run each distinct one once.
            unique, inverse = np.unique(z.detach().cpu().numpy() > 0.5, axis=0, return_inverse=True)
            seqs, _ends = self.masker(features, unique)
            out = self.outputs(self.adapter.final_logits(seqs), target).float()
            return out[torch.as_tensor(inverse.reshape(-1))]

        return f

    def explain(self, feats, targets, finals, state) -> list[Attribution]:
        results = []
        for f, c, lg in zip(feats, targets, finals, strict=True):
            before = self.adapter.forward_passes
            fn = self.coalition_function(f, c)
            f_empty = float(fn(torch.zeros(1, f.n))[0])
            if f.n == 1:
                # One player: its Shapley value is exactly f(full) - f(empty) (Captum's sampler needs n >= 2).
                phi = (self.outputs(lg, c) - f_empty).reshape(1, 1)
            else:
                with torch.random.fork_rng(devices=[]):
                    # a text's samples: its seed and text only
                    torch.manual_seed(int(text_rng(self.seed, f).integers(2**63)))
                    phi = KernelShap(fn).attribute(
                        torch.ones(1, f.n),
                        baselines=torch.zeros(1, f.n),
                        feature_mask=torch.arange(f.n)[None, :],
                        n_samples=self.samples(f.n),
                        perturbations_per_eval=self.perturbations_per_eval,
                    )
            results.append(
                self.result(
                    f,
                    c,
                    lg,
                    phi[0].double(),
                    base_value=f_empty,
                    # Passes actually run: the unmasked input and every distinct coalition (duplicates
                    # among the samples are run once).
                    forward_passes=1.0 + float(self.adapter.forward_passes - before),
                    extras={"f_full": float(self.outputs(lg, c)), "n_samples": self.samples(f.n)},
                )
            )
        return results
