"""GAE: generic attention-model explainability (Chefer, Gur & Wolf, ICCV 2021), for decoder classifiers.

For self-attention models Chefer et al. propagate a relevance matrix through the layers:

    R = I;   for each layer l:  A_bar = mean over heads of (dy/dA_l * A_l)^+ ;  R <- R + A_bar R

where ``A_l`` are the layer's attention probabilities and ``y`` the explained class's logit. The
explanation is the row of ``R`` of the classifying token. In a decoder-only classifier that is the
last token (causal attention makes it the only position that sees the whole input), so token ``j``
scores ``R[last, j]``, without the identity's self-relevance ``I[last, last] = 1`` (which says
nothing about the input and would otherwise always dominate the last feature). A feature's score is
the sum over its tokens. Scores are non-negative. Cost "1x": one backward pass.

Gradients with respect to the attention probabilities need them as tensors, which SDPA and flash
attention never form: the model runs with eager attention during the pass, inside
:func:`~pi_lightning.attributors._attention.eager_attention`, which restores the model's attention
implementation afterwards (memory is quadratic in the sequence length for that pass).
"""

from __future__ import annotations

import torch

from pi_lightning.attributors._attention import attention_modules, eager_attention
from pi_lightning.attributors._grad import EmbeddingFunction
from pi_lightning.attributors.base import Attributor, aggregate, register
from pi_lightning.inference import model_mode
from pi_lightning.result import Attribution

__all__ = ["GAE"]


@register
class GAE(Attributor):
    """Gradient-weighted attention rollout (Chefer et al., 2021) from the classifying position.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> [a] = GAE(tiny_classifier("gpt2", tokenizer=tok), tok).attribute("a good movie", target=1)
        >>> a.scores.shape, bool((a.scores >= 0).all())
        (torch.Size([3]), True)
    """

    name = "gae"
    cost = "1x"

    def relevance_row(self, fn: EmbeddingFunction) -> torch.Tensor:
        """``(T,)`` GAE relevance of every input token for the classifying (last) position."""
        modules, index = attention_modules(self.adapter.hf_model)
        maps: list[torch.Tensor] = []

        def keep(_m, _i, out):
            maps.append(out[index])

        handles = [m.register_forward_hook(keep) for m in modules]
        try:
            y = fn(fn.embed().requires_grad_(True)).sum()
        finally:
            for h in handles:
                h.remove()
        if len(maps) != len(modules) or any(a is None for a in maps):
            raise RuntimeError(
                f"{type(self.adapter.hf_model).__name__} did not return attention weights in eager mode; "
                "GAE cannot run on it."
            )
        grads = torch.autograd.grad(y, maps)
        T = maps[0].shape[-1]
        R = torch.eye(T, dtype=torch.float64, device=maps[0].device)
        for a, g in zip(maps, grads, strict=False):
            # (1, H, T, T) -> (T, T): positive gradient-weighted attention, mean over heads.
            a_bar = (g.double() * a.double()).clamp(min=0).mean(dim=1)[0]
            R = R + a_bar @ R
        row = R[-1].clone()
        row[-1] -= 1.0
        return row.cpu()

    def explain(self, feats, targets, finals, state) -> list[Attribution]:
        results = []
        with model_mode(self.model, "grad"), eager_attention(self.adapter.hf_model):
            for f, c, lg in zip(feats, targets, finals, strict=True):
                row = self.relevance_row(EmbeddingFunction(self, f, c, output="logits"))
                results.append(
                    self.result(
                        f,
                        c,
                        lg,
                        aggregate(row, f, "sum"),
                        output="logits",
                        forward_passes=1.0 + self.forward_equivalents(f.n),
                        extras={"token_scores": row},
                    )
                )
        return results
