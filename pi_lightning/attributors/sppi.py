"""Single-Pass Progressive Inference (SP-PI), the paper's section 3.1.

phi_i = p_i^c - p_{i-1}^c, where p_i is the classification head's output at the last token of
feature i in one forward pass over the unmasked input (Eqn 6), and p_0 is the prediction with no
feature present: the head's output at the last token of the fixed context before the text (a BOS
token or a prompt prefix). When there is no token before the text, p_0 is read from a second,
tiny pass over the fully masked input (only the fixed context and masks). Local accuracy holds
exactly: sum(phi) = p_n - p_0 (Proposition 1).

A suffix in the template (text that follows the attributed text) is seen only by the final
prediction, not by the intermediate ones; SP-PI is most faithful with the attributed text last,
as in the paper's ``[Assertion]: ... [Document]: ...`` layout.
"""

from __future__ import annotations

import numpy as np
import torch

from pi_lightning.attributors.base import Attributor, register
from pi_lightning.result import Attribution

__all__ = ["SPPI", "progressive_differences"]


def progressive_differences(values: torch.Tensor, is_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SP-PI from per-position outputs (Eqn 6), vectorised over a batch.

    The one SP-PI computation: the :class:`SPPI` attributor and the free validation mode
    (:class:`~pi_lightning.callbacks.ValidationSPPI`) both call it.

    Args:
        values: ``(B, T)`` the attributed output at every position.
        is_end: ``(B, T)`` bool, True where a unit ends: the reference (the last token before the first
            feature, read as p_0) and then each feature's last token, in order.

    Returns:
        ``(phi, scored)``: ``(B, T)`` tensors; at each end after the first, phi = value there minus the
        value at the previous end (zero elsewhere), and ``scored`` marks those positions.

    Example:
        >>> v = torch.tensor([[0.5, 0.25, 0.75, 1.0]])
        >>> phi, scored = progressive_differences(v, torch.tensor([[True, False, True, True]]))
        >>> phi[scored].tolist()
        [0.25, 0.25]
    """
    T = values.shape[1]
    pos = torch.arange(T, device=values.device).expand_as(is_end)
    end_pos = torch.where(is_end, pos, -1)
    # (B, T): the previous end strictly before each position, by a running max shifted by one.
    prev_end = torch.nn.functional.pad(end_pos[:, :-1], (1, 0), value=-1).cummax(1).values
    scored = is_end & (prev_end >= 0)
    phi = torch.where(scored, values - values.gather(1, prev_end.clamp(min=0)), torch.zeros_like(values))
    return phi, scored


@register
class SPPI(Attributor):
    """Single-Pass Progressive Inference.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> [a] = SPPI(tiny_classifier("gpt2", tokenizer=tok), tok).attribute("a good movie", target=1)
        >>> a.features.texts, a.scores.shape
        (('a', 'good', 'movie'), torch.Size([3]))
    """

    name = "sp-pi"
    cost = "0"

    def predict(self, feats) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The inference pass, read at the token before the first feature (if any), each feature's end
        and the final token (the model's actual prediction); the state is those logits per example."""
        positions = []
        for f in feats:
            pre = [f.context_end - 1] if f.context_end > 0 else []
            positions.append(pre + list(f.ends) + [len(f.input_ids) - 1])
        logits = self.adapter.forward_positions([f.input_ids for f in feats], positions)
        return torch.stack([lg[-1] for lg in logits]), logits

    def explain(self, feats, targets, finals, logits) -> list[Attribution]:
        # p_0 from the fully masked input where no context token precedes the text.
        need_empty = [i for i, f in enumerate(feats) if f.context_end == 0]
        empty_logits = {}
        if need_empty:
            empty_seqs, empty_pos = [], []
            for i in need_empty:
                (s,), ends = self.masker(feats[i], np.zeros((1, feats[i].n), dtype=bool))
                empty_seqs.append(s)
                empty_pos.append([int(ends[0, -1])])
            for i, lg in zip(need_empty, self.adapter.forward_positions(empty_seqs, empty_pos), strict=True):
                empty_logits[i] = lg  # (1, C)
        # Per example the reference p_0 then every feature end: (n_i + 1,) values, padded into one
        # (N, 1 + max n) batch whose ends are its valid entries -> one vectorised SP-PI call.
        refs = []
        for i, (f, lg, c) in enumerate(zip(feats, logits, targets, strict=True)):
            p = self.outputs(lg, c)
            refs.append(
                torch.cat([self.outputs(empty_logits[i], c), p[:-1]]) if f.context_end == 0 else p[:-1]
            )
        width = max(len(r) for r in refs)
        values = torch.zeros(len(refs), width, dtype=torch.float64)
        is_end = torch.zeros(len(refs), width, dtype=torch.bool)
        for i, r in enumerate(refs):
            values[i, : len(r)], is_end[i, : len(r)] = r, True
        phi, _scored = progressive_differences(values, is_end)
        return [
            self.result(
                f,
                c,
                lg,
                phi[i, 1 : f.n + 1].clone(),
                base_value=float(refs[i][0]),
                forward_passes=1.0 + (f.context_end == 0),
                extras={"intermediate": refs[i][1:].clone()},
            )
            for i, (f, c, lg) in enumerate(zip(feats, targets, finals, strict=True))
        ]
