"""Turn a text into attributable features with their token spans.

Every attribution method in pi_lightning explains a prediction in terms of *features*: tokens,
words or sentences of the attributed text. This module builds them once, from the fast
tokenizer's offset mapping, so that every method, the masking function and the metrics agree on
what feature ``i`` is and which tokens it owns.

The model input is laid out as ``prefix + text + suffix`` where the prefix and suffix come from a
template (``"Review: {text}\\nSentiment:"``) and are a fixed, non-attributed context. The three
pieces are tokenized separately and concatenated, so a feature's tokens never straddle the
context; whitespace at the end of the prefix is moved to the start of the text so that byte-BPE
tokenizers (GPT-2, Llama-3, SmolLM) see their usual leading-space tokens.

A token belongs to the feature (word or sentence) that contains its first non-space character.
A feature starts at the first token that reaches a new unit, so byte-fallback tokens that share
one character and tokens that cover two units stay whole (the units merge instead).
"""

from __future__ import annotations

import bisect
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "GRANULARITIES",
    "Features",
    "Featurizer",
    "check_template",
    "feature_char_spans",
    "group_tokens",
    "normalize_word",
]

GRANULARITIES = ("token", "word", "sentence")

# The one definition of a word (used by Featurizer, for texts and for the free validation mode's token
# ids): a run of letters/digits joined by inner apostrophes or hyphens ("don't", "self-indulgent",
# "shoot-'em-up"), or one run of punctuation, or a run of underscores.
_WORD_RE = re.compile(r"[^\W_]+(?:[-'’]+[^\W_]+)*|[^\w\s]+|_+")  # noqa: RUF001 (U+2019, the typographic apostrophe)
# Punctuation (and whitespace, underscores) at either end of a feature's text.
_EDGE_RE = re.compile(r"^[\W_]+|[\W_]+$")
# A sentence ends after . ! ? (optionally followed by closing quotes/brackets) and whitespace,
# or at a blank line.
_SENTENCE_RE = re.compile(r"\S.*?(?:[.!?]+['\")\]]*(?=\s|$)|(?=\n\s*\n)|$)", re.DOTALL)


def normalize_word(text: str, *, punctuation: bool = True) -> str:
    """The form under which the occurrences of a word count as one word: lowercased, without the
    whitespace around it (shortcut mining, the shortcut monitor, the validation detector), and with
    ``punctuation=False`` also without the punctuation around it (``"Great,"`` and ``"great"`` are one
    word; a feature of punctuation alone becomes ``""``), for the words that rose and fell in a report.

    Example:
        >>> normalize_word(" Great"), normalize_word("Great,", punctuation=False), normalize_word("[")
        ('great', 'great', '[')
        >>> normalize_word("cho's", punctuation=False), normalize_word("--", punctuation=False)
        ("cho's", '')
    """
    return text.strip().lower() if punctuation else _EDGE_RE.sub("", text).lower()


@dataclass(frozen=True)
class Features:
    """A text split into attributable features, with the model input that contains it.

    Attributes:
        text: the attributed text as given.
        input_ids: token ids of the whole model input (prefix, text, suffix).
        spans: for each feature, its ``[start, end)`` token range in ``input_ids``.
        char_spans: for each feature, its ``[start, end)`` character range in ``text``.
        context_end: number of tokens before the first feature (prefix, incl. BOS).
        suffix_start: index in ``input_ids`` where the suffix begins.
        granularity: ``"token"``, ``"word"`` or ``"sentence"``.
        space_before: for each feature, whether whitespace precedes it in the model input
            (the masking function uses it to tokenize the mask the way the feature was).
    """

    text: str
    input_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    char_spans: tuple[tuple[int, int], ...]
    context_end: int
    suffix_start: int
    granularity: str
    space_before: tuple[bool, ...]

    @property
    def n(self) -> int:
        """Number of features."""
        return len(self.spans)

    @property
    def texts(self) -> tuple[str, ...]:
        """Display text of each feature."""
        return tuple(self.text[a:b] for a, b in self.char_spans)

    @property
    def ends(self) -> tuple[int, ...]:
        """Token index of the last token of each feature (where intermediate predictions are read)."""
        return tuple(e - 1 for _, e in self.spans)

    @property
    def prefix_ids(self) -> tuple[int, ...]:
        return self.input_ids[: self.context_end]

    @property
    def suffix_ids(self) -> tuple[int, ...]:
        return self.input_ids[self.suffix_start :]

    def feature_ids(self, i: int) -> tuple[int, ...]:
        a, b = self.spans[i]
        return self.input_ids[a:b]


class Featurizer:
    """Builds :class:`Features` for texts with one tokenizer, granularity and template.

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (needs ``return_offsets_mapping``).
        granularity: ``"token"``, ``"word"`` or ``"sentence"``.
        template: a string with exactly one ``{text}`` placeholder; what is around it is fixed,
            non-attributed context. ``"{text}"`` means no context.
        max_length: the model's context length; longer inputs are truncated (the attributed text
            is cut, the context kept) with a single warning. ``None`` reads
            ``tokenizer.model_max_length`` when it is a real limit.
        mask_tokens: tokens that replace one masked feature (see :class:`~pi_lightning.masking.Masker`);
            the text is truncated so that every masked input fits ``max_length`` too, whatever the
            coalition (each feature takes the larger of its own length and the mask's).

    Example:
        >>> from pi_lightning.testing import tiny_tokenizer
        >>> fz = Featurizer(tiny_tokenizer("gpt2"), granularity="word")
        >>> fz("a good movie, really.").texts
        ('a', 'good', 'movie', ',', 'really', '.')
    """

    def __init__(
        self,
        tokenizer,
        granularity: str = "word",
        template: str = "{text}",
        max_length: int | None = None,
        mask_tokens: int = 0,
    ) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(
                f"Unknown granularity {granularity!r}: expected one of {', '.join(GRANULARITIES)}."
            )
        check_template(template)
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"pi_lightning needs a fast tokenizer (offset mappings), got {type(tokenizer).__name__}. "
                "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
            )
        self.tokenizer = tokenizer
        self.granularity = granularity
        self.template = template
        if max_length is None:
            tml = getattr(tokenizer, "model_max_length", None)
            max_length = tml if isinstance(tml, int) and tml < 10**7 else None
        self.max_length = max_length
        if isinstance(mask_tokens, bool) or not isinstance(mask_tokens, int) or mask_tokens < 0:
            raise ValueError(f"mask_tokens must be a non-negative int, got {mask_tokens!r}.")
        self.mask_tokens = mask_tokens
        self._warned_truncation = False
        prefix, suffix = template.split("{text}")
        stripped = prefix.rstrip()
        self._lead_ws = prefix[len(stripped) :]
        self._prefix_ids = self._encode(stripped, special=True)
        self._suffix_ids = self._encode(suffix, special=False) if suffix else []

    def _encode(self, s: str, special: bool) -> list[int]:
        if not s and not special:
            return []
        return list(self.tokenizer(s, add_special_tokens=special)["input_ids"])

    def __call__(self, text: str) -> Features:
        if not isinstance(text, str):
            raise TypeError(f"Expected the text to explain as a str, got {type(text).__name__}.")
        if not text.strip():
            raise ValueError(
                f"Cannot attribute an empty or whitespace-only text (got {text!r}): "
                "remove it from the examples to explain."
            )
        lead = self._lead_ws
        enc = self.tokenizer(lead + text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        # Offsets relative to `text`; tokens inside the moved whitespace clamp to 0.
        offs = [(max(a - len(lead), 0), max(b - len(lead), 0)) for a, b in enc["offset_mapping"]]

        budget = self._budget()
        n_tokens = len(ids)
        if budget is not None and len(ids) > budget:
            ids, offs = ids[:budget], offs[:budget]
        groups = group_tokens(text, offs, self.granularity)
        if budget is not None and self.mask_tokens:
            # Every masked input must fit too: feature i takes max(its tokens, the mask's) at worst.
            worst = 0
            for k, (g0, g1) in enumerate(groups):
                worst += max(g1 - g0, self.mask_tokens)
                if worst > budget:
                    groups = groups[:k]
                    ids, offs = (
                        ids[: groups[-1][1]] if groups else [],
                        offs[: groups[-1][1]] if groups else [],
                    )
                    break
        if budget is not None and len(ids) < n_tokens:
            self._warn_truncation(n_tokens, len(ids))
        if not groups:
            raise ValueError(f"The text {text!r} produced no tokens to attribute.")
        base = len(self._prefix_ids)
        spans, space_before = [], []
        char_spans = feature_char_spans(text, offs, groups)
        for (g0, g1), (c0, _) in zip(groups, char_spans, strict=False):
            spans.append((base + g0, base + g1))
            space_before.append((c0 > 0 and text[c0 - 1].isspace()) or (c0 == 0 and bool(lead)))
        input_ids = tuple(self._prefix_ids + ids + self._suffix_ids)
        return Features(
            text=text,
            input_ids=input_ids,
            spans=tuple(spans),
            char_spans=tuple(char_spans),
            context_end=base,
            suffix_start=base + len(ids),
            granularity=self.granularity,
            space_before=tuple(space_before),
        )

    @property
    def prefix_ids(self) -> list[int]:
        """Token ids of the template's context before the text (with the tokenizer's BOS, if it adds one)."""
        return list(self._prefix_ids)

    def _budget(self) -> int | None:
        """Tokens left for the text within ``max_length`` once the template's context is in (``None``:
        no limit)."""
        if self.max_length is None:
            return None
        budget = self.max_length - len(self._prefix_ids) - len(self._suffix_ids)
        if budget < 1:
            raise ValueError(
                f"The template's fixed context takes {len(self._prefix_ids) + len(self._suffix_ids)} "
                f"tokens, leaving no room for text within the model's {self.max_length}-token context. "
                "Shorten the template."
            )
        return budget

    def _warn_truncation(self, n_tokens: int, kept: int) -> None:
        if self._warned_truncation:
            return
        # with a token mask the budget also leaves room for every feature's mask tokens
        masked = ""
        if self.mask_tokens:
            masked = f", also when every feature is masked by {self.mask_tokens} tokens"
        warnings.warn(
            f"A text of {n_tokens} tokens does not fit the model's context of {self.max_length} tokens "
            f"(max_length) with the template{masked}: the text is truncated to {kept} tokens and the "
            "template's fixed context kept (warned once; raise max_length to keep whole texts).",
            UserWarning,
            stacklevel=3,
        )
        self._warned_truncation = True

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """The model input ids of each text: the template's context and the text, laid out and truncated
        exactly as :meth:`__call__` does (its ``input_ids``), in one batched tokenizer call.

        The one template encoding of pi_lightning: training (:class:`~pi_lightning.training.TextDataModule`),
        validation, the recipes and every attributor use these ids, so a model is explained on the very
        inputs it was trained on (tokenizing ``template.format(text=...)`` as one string differs with
        SentencePiece-style tokenizers around a newline or a template's suffix).

        Args:
            texts: the texts (non-empty strings).

        Example:
            >>> from pi_lightning.testing import tiny_tokenizer
            >>> fz = Featurizer(tiny_tokenizer("llama"), template="Review: {text}\\nSentiment:")
            >>> fz.encode(["a good movie"])[0] == list(fz("a good movie").input_ids)
            True
        """
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(
                    f"Text {i} is empty or not a string ({t!r}): every text needs at least one word."
                )
        if self.mask_tokens:  # truncation then also depends on the features: the full path
            return [list(self(t).input_ids) for t in texts]
        budget = self._budget()
        enc = self.tokenizer([self._lead_ws + t for t in texts], add_special_tokens=False)["input_ids"]
        out = []
        for ids in enc:
            ids = list(ids)
            if budget is not None and len(ids) > budget:
                self._warn_truncation(len(ids), budget)
                ids = ids[:budget]
            out.append(self._prefix_ids + ids + self._suffix_ids)
        return out

    def from_token_ids(self, rows: Sequence[Sequence[int]]) -> list[Features | None]:
        """Features of inputs that are already tokenized (e.g. the rows of a validation batch, padding
        removed), with the same segmentation as texts get; one batched decode and re-tokenization.

        The attributed text of a row is the run from its first to its last token that is not a special
        token of the tokenizer, decoded; the tokens before it (a BOS) are the fixed context and those
        after it (an EOS) the suffix. With a template (not ``"{text}"``), a row that starts with the
        template's context ids and ends with its suffix ids (what :meth:`encode` makes) has those as its
        context and suffix instead, as :meth:`__call__` would. ``max_length`` plays no part. Character
        offsets come from re-tokenizing the decoded text or, where the tokens do not round-trip (e.g. a
        text cut mid-word by truncation), from the decoded length of each prefix.

        Args:
            rows: token id lists.

        Returns:
            Per row its :class:`Features` (``input_ids`` the row as given; no features for a
            whitespace-only text), or ``None`` for a row without a text token (only special tokens).

        Example:
            >>> from pi_lightning.testing import tiny_tokenizer
            >>> tok = tiny_tokenizer("gpt2")
            >>> fz = Featurizer(tok)
            >>> [f] = fz.from_token_ids([tok("a good movie")["input_ids"]])
            >>> f.texts == fz("a good movie").texts
            True
        """
        special = {int(i) for i in (getattr(self.tokenizer, "all_special_ids", None) or [])}
        pre, suf = self._prefix_ids, self._suffix_ids
        templated = self.template != "{text}"
        bounds: list[tuple[int, int] | None] = []
        segs: list[list[int]] = []
        for row in rows:
            row = [int(t) for t in row]
            b = len(row) - len(suf)
            if templated and b > len(pre) and row[: len(pre)] == pre and row[b:] == suf:
                bounds.append((len(pre), b))  # the template's context and suffix, as __call__ lays them out
                segs.append(row[len(pre) : b])
                continue
            text_pos = [t for t, tid in enumerate(row) if tid not in special]
            bounds.append((text_pos[0], text_pos[-1] + 1) if text_pos else None)
            segs.append(row[text_pos[0] : text_pos[-1] + 1] if text_pos else [])
        texts = self.tokenizer.batch_decode(segs, clean_up_tokenization_spaces=False)
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        out: list[Features | None] = []
        for row, bound, seg, text, ids, offs in zip(
            rows, bounds, segs, texts, enc["input_ids"], enc["offset_mapping"], strict=True
        ):
            if bound is None:
                out.append(None)
                continue
            a, b = bound
            if list(ids) != seg:
                offs = self._prefix_offsets(seg, text)
            groups = group_tokens(text, offs, self.granularity)  # [] for a whitespace-only text: n = 0
            char_spans = feature_char_spans(text, offs, groups)
            out.append(
                Features(
                    text=text,
                    input_ids=tuple(int(t) for t in row),
                    spans=tuple((a + g0, a + g1) for g0, g1 in groups),
                    char_spans=tuple(char_spans),
                    context_end=a,
                    suffix_start=b,
                    granularity=self.granularity,
                    space_before=tuple(c0 > 0 and text[c0 - 1].isspace() for c0, _ in char_spans),
                )
            )
        return out

    def _prefix_offsets(self, seg: list[int], text: str) -> list[tuple[int, int]]:
        """Character offsets of tokens that do not round-trip, from the decoded length of each prefix."""
        prefixes = self.tokenizer.batch_decode(
            [seg[:k] for k in range(1, len(seg) + 1)], clean_up_tokenization_spaces=False
        )
        offs, prev = [], 0
        for p_ in prefixes:
            end = min(max(len(p_), prev), len(text))
            offs.append((prev, end))
            prev = end
        return offs


def check_template(template) -> str:
    """Check a template (one ``{text}`` placeholder) and return it; the one wording of this mistake for the
    attributors, the training data, the callbacks and every console subcommand.

    Example:
        >>> check_template("Review: {txt}")
        Traceback (most recent call last):
        ...
        ValueError: template must contain exactly one '{text}' placeholder, got 'Review: {txt}'. Example: ...
    """
    if not isinstance(template, str) or template.count("{text}") != 1:
        raise ValueError(
            f"template must contain exactly one '{{text}}' placeholder, got {template!r}. "
            "Example: 'Review: {text}\\nSentiment:'."
        )
    return template


def group_tokens(
    text: str, offs: Sequence[tuple[int, int]], granularity: str = "word"
) -> list[tuple[int, int]]:
    """Group tokens into features: ``[(start, end), ...]`` token index ranges.

    The one segmentation of pi_lightning: :class:`Featurizer` calls it for texts and for already
    tokenized inputs (:meth:`Featurizer.from_token_ids`, what the free validation mode uses). A token
    belongs to the unit (word or sentence, see ``_WORD_RE`` / ``_SENTENCE_RE``) that contains its first
    non-space character; a feature starts at the first token that reaches a new unit. A token is never
    split: one that covers two units merges them (with ``".g"``, ``"reat"`` from ``"it was.great"``,
    ``.great`` is one feature, not ``.g`` and ``reat``), and whitespace-only tokens stay with the
    feature before them (or join the first one).

    Args:
        text: the text the tokens were made from.
        offs: per token its ``[start, end)`` character range in ``text``.
        granularity: ``"token"``, ``"word"`` or ``"sentence"``.

    Example:
        >>> group_tokens("don't go", [(0, 3), (3, 5), (5, 8)])
        [(0, 2), (2, 3)]
        >>> group_tokens("it was.great", [(0, 2), (2, 6), (6, 8), (8, 12)])  # ".g" covers "." and "great"
        [(0, 1), (1, 2), (2, 4)]
    """
    if granularity == "token":
        # Each token that carries a new non-space character is a unit; byte-fallback pieces of
        # one character share its offsets and whitespace-only tokens join a neighbour.
        unit_starts, seen = [], -1
        for a, b in offs:
            c = _first_nonspace(text, a, b)
            if c < b and c > seen:
                unit_starts.append(c)
                seen = c
    else:
        regex = _WORD_RE if granularity == "word" else _SENTENCE_RE
        unit_starts = [m.start() for m in regex.finditer(text)]
    groups: list[tuple[int, int]] = []
    last_unit = -1
    pending: int | None = None  # leading whitespace-only tokens join the first feature
    for t, (a, b) in enumerate(offs):
        c = _first_nonspace(text, a, b)
        if c >= b or not unit_starts:  # whitespace-only token: stays with the current feature
            if groups:
                groups[-1] = (groups[-1][0], t + 1)
            elif pending is None:
                pending = t
            continue
        unit = bisect.bisect_right(unit_starts, c) - 1
        # the unit of its last non-space character: a token that covers two units ("it was.great" ->
        # ".g", "reat") reaches into the second one, and what follows in that unit joins its feature
        e = b - 1
        while e > c and text[e].isspace():
            e -= 1
        reach = bisect.bisect_right(unit_starts, e) - 1
        if not groups or unit > last_unit:
            groups.append((t if pending is None else pending, t + 1))
            pending = None
        else:
            groups[-1] = (groups[-1][0], t + 1)
        last_unit = max(unit, reach, last_unit)
    return groups


def feature_char_spans(
    text: str, offs: Sequence[tuple[int, int]], groups: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Each feature's ``[start, end)`` character range in ``text``, without surrounding whitespace.

    Example:
        >>> feature_char_spans("don't go ", [(0, 3), (3, 5), (5, 9)], [(0, 2), (2, 3)])
        [(0, 5), (6, 8)]
    """
    out = []
    for g0, g1 in groups:
        c0 = _first_nonspace(text, offs[g0][0], offs[g1 - 1][1])
        c1 = max(offs[g1 - 1][1], c0)
        while c1 > c0 and text[c1 - 1].isspace():
            c1 -= 1
        out.append((c0, c1))
    return out


def _first_nonspace(text: str, a: int, b: int) -> int:
    while a < b and text[a].isspace():
        a += 1
    return a
