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

__all__ = ["SPPI"]


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

    def attribute(self, texts, target="predicted") -> list[Attribution]:
        feats = self.featurize(texts)
        seqs = [list(f.input_ids) for f in feats]
        # Positions read per example: the token before the first feature (if any), each feature's
        # end, and the final token (the model's actual prediction).
        positions = []
        for f in feats:
            pre = [f.context_end - 1] if f.context_end > 0 else []
            positions.append(pre + list(f.ends) + [len(f.input_ids) - 1])
        logits = self.adapter.forward_positions(seqs, positions)
        finals = torch.stack([lg[-1] for lg in logits])
        targets = self.resolve_targets(target, len(feats), finals)

        # p_0 from the fully masked input where no context token precedes the text.
        need_empty = [i for i, f in enumerate(feats) if f.context_end == 0]
        empty_logits = {}
        if need_empty:
            empty_seqs, empty_pos = [], []
            for i in need_empty:
                (s,), ends = self.masker(feats[i], np.zeros((1, feats[i].n), dtype=bool))
                empty_seqs.append(s)
                empty_pos.append([int(ends[0, -1])])
            for i, lg in zip(need_empty, self.adapter.forward_positions(empty_seqs, empty_pos)):
                empty_logits[i] = lg[0]

        results = []
        for i, (f, lg, c) in enumerate(zip(feats, logits, targets)):
            p = self.outputs(lg, c)
            if f.context_end > 0:
                p0, pends = p[0], p[1:-1]
            else:
                p0, pends = self.outputs(empty_logits[i], c), p[:-1]
            # (n + 1,) -> (n,): consecutive differences.
            phi = torch.diff(torch.cat([p0.reshape(1), pends]))
            results.append(Attribution(
                scores=phi, features=f, target=c, method=self.name, output=self.output,
                base_value=float(p0), probs=torch.softmax(lg[-1].double(), -1),
                forward_passes=1.0 + (f.context_end == 0),
                extras={"intermediate": pends.clone()},
            ))
        return results
