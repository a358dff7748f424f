"""Random: the sanity baseline of the paper's Table 2.

Scores are independent standard normal draws from a private ``torch.Generator`` seeded from the
constructor's seed and the text (:func:`~pi_lightning.attributors.base.text_rng`), so a text's scores
depend on nothing else (not the batch, the chunking or the call order) and the global random state
is never touched. Any method that does not beat it on the activation study
carries no information about the model. Cost "0"; the inference pass is still run once per text to
report the prediction (and to resolve ``target="predicted"``).
"""

from __future__ import annotations

import torch

from pi_lightning.attributors.base import Attributor, register, text_rng
from pi_lightning.result import Attribution

__all__ = ["RandomAttributor"]


@register
class RandomAttributor(Attributor):
    """Random scores per feature, from a private seeded generator.

    Args:
        seed: seed of the draws (each text's scores depend only on it and the text).
        **kwargs: the shared :class:`~pi_lightning.attributors.base.Attributor` settings.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> model = tiny_classifier("gpt2", tokenizer=tok)
        >>> a = RandomAttributor(model, tok, seed=1).attribute("a good movie")[0]
        >>> b = RandomAttributor(model, tok, seed=1).attribute("a good movie")[0]
        >>> torch.equal(a.scores, b.scores)
        True
    """

    name = "random"
    cost = "0"

    def __init__(self, model, tokenizer, *, seed: int = 0, **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
        self.seed = seed

    def explain(self, feats, targets, finals, state) -> list[Attribution]:
        return [
            self.result(
                f,
                c,
                lg,
                torch.randn(
                    f.n,
                    generator=torch.Generator().manual_seed(int(text_rng(self.seed, f).integers(2**63))),
                    dtype=torch.float64,
                ),
                forward_passes=1.0,
            )
            for f, c, lg in zip(feats, targets, finals, strict=True)
        ]
