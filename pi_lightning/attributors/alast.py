"""A-Last: last-layer attention from the classifying position (Hollenstein & Beinborn, 2021).

The score of a token is the attention weight that the classifying position (the last token, where
a decoder-only ``*ForSequenceClassification`` model reads its prediction) gives it in the last
layer, averaged over heads; a feature's score is the sum over its tokens (the share of the
classifying position's attention the feature receives). Scores are non-negative and do not depend
on the explained class. Cost "0": the rows come from the inference pass itself.

The attention row is recomputed from the last layer's input by
:func:`pi_lightning.attributors._attention.attention_rows`, so the model keeps its SDPA/flash attention and no
``T x T`` matrix is formed (eager attention, restored afterwards, only for families without a fast
path).
"""

from __future__ import annotations

import torch

from pi_lightning.attributors._attention import attention_rows
from pi_lightning.attributors.base import Attributor, aggregate, register
from pi_lightning.inference import token_budget_batches
from pi_lightning.result import Attribution

__all__ = ["ALast"]


@register
class ALast(Attributor):
    """Last-layer attention of the classifying position, mean over heads, summed per feature.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("llama")
        >>> [a] = ALast(tiny_classifier("llama", tokenizer=tok), tok).attribute("a good movie")
        >>> a.scores.shape, bool((a.scores >= 0).all())
        (torch.Size([3]), True)
    """

    name = "a-last"
    cost = "0"

    def predict(self, feats) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The inference pass, which also gives each input's ``(T,)`` last-layer attention row (the state)."""
        lengths = [len(f.input_ids) for f in feats]
        rows: list[torch.Tensor | None] = [None] * len(feats)
        finals: list[torch.Tensor | None] = [None] * len(feats)
        for batch in token_budget_batches(lengths, self.adapter.max_tokens):
            # (B, width) right-padded: token t of a sequence is column t.
            ids, mask = self.adapter.pad([feats[i].input_ids for i in batch], padding_side="right")
            logits: list[torch.Tensor] = []
            handle = self.adapter.head.register_forward_hook(
                lambda _m, _i, out, kept=logits: kept.append(out)
            )
            try:
                att = attention_rows(self.model, ids, mask)
            finally:
                handle.remove()
            self.adapter.forward_passes += len(batch)
            lg = logits[-1][0] if isinstance(logits[-1], tuple) else logits[-1]
            for r, i in enumerate(batch):
                # (B, L, H, T) -> (T,): last layer, mean over heads, this sequence's real tokens.
                rows[i] = att[r, -1].mean(0)[: lengths[i]].double().cpu()
                finals[i] = lg[r, lengths[i] - 1].float().cpu()
        return torch.stack(finals), rows

    def explain(self, feats, targets, finals, rows) -> list[Attribution]:
        return [
            self.result(f, c, lg, aggregate(row, f, "sum"), forward_passes=1.0, extras={"token_scores": row})
            for f, row, c, lg in zip(feats, rows, targets, finals, strict=True)
        ]
