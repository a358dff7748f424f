"""The one masking function used by every perturbation method and every faithfulness metric.

The default is *removal* (``mask="remove"``): an inactive feature's tokens are dropped, so the value
of a coalition is the model's prediction on the text that remains. It is the default because it is
the one value function under which Progressive Inference is exact: reading a removal-masked input
at the end of any active feature gives the final prediction of the removal-masked input of that
prefix, so SP-PI's and MP-PI's intermediate predictions are evaluations of the very game that Kernel
SHAP, the activation studies and the other metrics score (with ``"..."`` the two games differ:
cosine 0.71-0.92 between their exact Shapley values on SmolLM2). Measured figures, paired tests and
the commands: ``benchmarks/results/RESULTS.md`` ("Which value function").

The paper's ``"..."`` (section 4.1: "We use '...' as the mask token for perturbation-based methods",
:data:`PAPER_MASK`) is one argument away, ``mask="..."``: ordinary text every tokenizer has, read as
"something was left out", kept in place of each inactive feature (a three-token word becomes one
``...``), tokenized the way the feature itself was (with or without the leading space), so
positions of the other features shift accordingly. For every masked input the masking function
returns where each feature now ends, so that intermediate predictions can be read there.

Other choices: any string, a token id (``int``), or ``"pad"`` / ``"unk"`` (the tokenizer's token).

Removal and the empty coalition. Under ``"remove"`` a masked input is the model input with the
removed features' tokens dropped, so a coalition's value is the model's prediction on the text that
remains. Because attention is causal, reading a removal-masked input at the end of a coalition's
last active feature gives the final prediction of the removal-masked input of that prefix: PI's
prefix game and the full-input game are one game (tested). When a fixed context precedes the text
(a template prefix such as ``"Review: {text}"``, or a BOS token the tokenizer adds) the empty
coalition is that context. When nothing precedes the text and every feature is removed, the
text part of the input becomes one *anchor* token, the tokenizer's BOS token, or its EOS token when
it has no BOS (GPT-2's ``<|endoftext|>``, which is what it sees at the start of every document): the
model's prediction with nothing to read. Only the empty coalition gets the anchor; every non-empty
coalition is exactly its remaining text. Ends: a removed feature ends where the token before it ends
(the context's last token, the anchor for the empty coalition, or ``-1`` when it leads a non-empty
coalition with no context: there is no position before it, and nothing reads there). The anchor is
a token no other coalition contains, so the value of the empty coalition carries the anchor's own
effect (even for a bag-of-words model the game is then not additive at the empty set); a template
with context before the text avoids that and is what the recipes should use.

Gradient baselines. Integrated Gradients and UDIG need a baseline *embedding* for an inactive
feature; removal has none (it changes positions, and a path between "present" and "absent" does
not exist in embedding space). :meth:`Masker.baseline_ids` gives the mask's tokens, or under
``"remove"`` the paper's ``"..."`` (:data:`PAPER_MASK`): IG then integrates from the ``"..."`` input,
as in the paper, whatever game the metrics score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pi_lightning.features import Features

__all__ = ["DEFAULT_MASK", "PAPER_MASK", "Masker"]

#: The paper's mask token (section 4.1).
PAPER_MASK = "..."
#: The library's default value function: removal (see the module docstring for why).
DEFAULT_MASK = "remove"


class Masker:
    """Builds masked model inputs from :class:`Features` and boolean coalitions.

    Args:
        tokenizer: the tokenizer the features were built with.
        mask: ``"remove"`` (default), ``"..."`` (the paper's), another string, a token id,
            ``"pad"`` or ``"unk"``.

    Example:
        >>> from pi_lightning.features import Featurizer
        >>> from pi_lightning.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> feats = Featurizer(tok)("a good movie")
        >>> seqs, ends = Masker(tok)(feats, [[True, False, True]])
        >>> tok.decode(seqs[0])
        'a movie'
        >>> seqs, ends = Masker(tok, "...")(feats, [[True, False, True]])
        >>> tok.decode(seqs[0])
        'a ... movie'
    """

    def __init__(self, tokenizer, mask: str | int | None = DEFAULT_MASK) -> None:
        self.tokenizer = tokenizer
        self.mask = mask
        self.remove = mask is None or mask == "remove"
        self.anchor_id: int | None = None
        if self.remove:
            self._ids = {True: (), False: ()}
            for name in ("bos_token_id", "eos_token_id"):
                tid = getattr(tokenizer, name, None)
                if tid is not None:
                    self.anchor_id = int(tid)
                    break
        elif isinstance(mask, bool) or not isinstance(mask, (int, str)):
            raise TypeError(
                f"mask must be a string, a token id, 'pad', 'unk' or 'remove', got {type(mask).__name__}."
            )
        elif isinstance(mask, int):
            if not 0 <= mask < len(tokenizer):
                raise ValueError(
                    f"mask token id {mask} is outside the tokenizer's vocabulary (0..{len(tokenizer) - 1})."
                )
            self._ids = {True: (mask,), False: (mask,)}
        elif mask in ("pad", "unk"):
            tid = getattr(tokenizer, f"{mask}_token_id", None)
            if tid is None:
                raise ValueError(
                    f"mask={mask!r} but the tokenizer has no {mask} token. Use the default '...' or a token "
                    "id."
                )
            self._ids = {True: (int(tid),), False: (int(tid),)}
        elif not mask.strip():
            raise ValueError("mask must not be an empty or whitespace string; use 'remove' to drop features.")
        else:
            self._ids = {True: self._contextual_ids(" " + mask), False: self._contextual_ids(mask)}

    def _contextual_ids(self, piece: str) -> tuple[int, ...]:
        """Token ids of ``piece`` as it tokenizes after some text (not at the start of a string)."""
        enc = lambda s: list(self.tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
        probe = enc("a")
        full = enc("a" + piece)
        if full[: len(probe)] == probe and len(full) > len(probe):
            return tuple(full[len(probe) :])
        return tuple(enc(piece))

    def mask_ids(self, space_before: bool) -> tuple[int, ...]:
        """The token ids that replace one inactive feature (none under ``"remove"``)."""
        return self._ids[bool(space_before)]

    def baseline_ids(self, space_before: bool) -> tuple[int, ...]:
        """Tokens whose mean embedding stands for an inactive feature in gradient methods.

        The mask's tokens; under ``"remove"`` (no embedding) the paper's ``"..."``.
        """
        if not self.remove:
            return self.mask_ids(space_before)
        if not hasattr(self, "_paper"):
            self._paper = Masker(self.tokenizer, PAPER_MASK)
        return self._paper.mask_ids(space_before)

    def __call__(
        self, features: Features, coalitions: Sequence[Sequence[bool]] | np.ndarray | torch.Tensor
    ) -> tuple[list[list[int]], np.ndarray]:
        """Masked inputs for each coalition.

        Args:
            features: the featurized text.
            coalitions: ``(K, n)`` booleans, True = feature active (kept).

        Returns:
            ``(sequences, ends)``: K token id lists, and a ``(K, n)`` int array with the position of
            each feature's last token (or its mask's last token) in each sequence. With
            ``mask="remove"`` an inactive feature's end is the position of the token before it
            (``-1`` if none: a leading removed feature of a non-empty coalition with no context).
            With ``mask="remove"``, no context before the text and every feature removed, the text
            part is one anchor token (BOS, else EOS) and every feature ends there.

        Raises:
            ValueError: ``mask="remove"``, no context before the text, the empty coalition asked
                for, and a tokenizer with neither BOS nor EOS token.
        """
        z = np.asarray(coalitions.cpu() if isinstance(coalitions, torch.Tensor) else coalitions, dtype=bool)
        if z.ndim != 2 or z.shape[1] != features.n:
            raise ValueError(
                f"coalitions must have shape (K, {features.n}) for a text with {features.n} features, "
                f"got {tuple(z.shape)}."
            )
        # Rows that need the anchor: removal, nothing before the text, nothing of the text left.
        anchored = (~z.any(1)) if self.remove and features.context_end == 0 else np.zeros(len(z), bool)
        if anchored.any() and self.anchor_id is None:
            raise ValueError(
                "mask='remove' with no fixed context before the text needs a BOS or EOS token to stand "
                "for the empty input, and this tokenizer has neither. Use a template with a prefix "
                "(e.g. 'Review: {text}'), or a mask string such as '...'."
            )
        prefix = list(features.prefix_ids)
        suffix = list(features.suffix_ids)
        active = [list(features.feature_ids(i)) for i in range(features.n)]
        masked = [list(self.mask_ids(sb)) for sb in features.space_before]
        alen = np.array([len(a) for a in active])
        mlen = np.array([len(m) for m in masked])
        # (K, n) -> token lengths per feature, cumulated -> end positions.
        lens = np.where(z, alen[None, :], mlen[None, :])
        ends = len(prefix) + np.cumsum(lens, axis=1) - 1
        ends[anchored] = 0
        seqs = []
        for row, anchor in zip(z, anchored, strict=False):
            s = list(prefix)
            if anchor:
                s.append(self.anchor_id)
            for i, on in enumerate(row):
                s.extend(active[i] if on else masked[i])
            s.extend(suffix)
            seqs.append(s)
        return seqs, ends
