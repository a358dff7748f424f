"""The label-free shortcut detector over training: which words are significant at each evaluation.

:class:`~pi_lightning.callbacks.ValidationSPPI` ranks the words of the validation set against a
within-text permutation null at every validation (the statistic of ``pi-lightning shortcuts``) and
keeps the significant ones (:attr:`~pi_lightning.metrics.ValidationEvaluation.significant_words`).
This module turns those records into what a reader needs: per evaluation, the significant words and
the step at which each first became significant (a word that turns significant early and stays is
what a shortcut learned fast looks like). :func:`significant_words_lines` is the finetune summary's
part, :func:`significant_words_section` the HTML report's.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from pi_lightning.metrics.record import ValidationEvaluation

__all__ = [
    "significant_word_history",
    "significant_words_lines",
    "significant_words_section",
    "validation_from_checkpoint",
]


def significant_word_history(
    evals: Sequence[ValidationEvaluation],
) -> list[tuple[ValidationEvaluation, list[tuple[dict[str, Any], int]]]]:
    """Per evaluation, its significant words (in the detector's order) with the step each first was.

    Example:
        >>> from pi_lightning.metrics import ValidationEvaluation
        >>> e = [ValidationEvaluation(s, s, 0, {}, significant_words=[{"word": w} for w in ws])
        ...      for s, ws in ((15, ["zxq"]), (30, ["but", "zxq"]))]
        >>> [[(w["word"], first) for w, first in words] for _, words in significant_word_history(e)]
        [[('zxq', 15)], [('but', 30), ('zxq', 15)]]
    """
    first: dict[str, int] = {}
    out = []
    for e in evals:
        words = []
        for w in e.significant_words:
            first.setdefault(w["word"], e.step)
            words.append((w, first[w["word"]]))
        out.append((e, words))
    return out


def _class(w: dict[str, Any], label_names: Sequence[str] | None) -> str:
    c = w.get("cls")
    if c is None:
        return ""
    return label_names[c] if label_names is not None and c < len(label_names) else str(c)


def significant_words_lines(
    evals: Sequence[ValidationEvaluation], label_names: Sequence[str] | None = None, show: int = 8
) -> list[str]:
    """The finetune summary's lines: per evaluation, up to ``show`` significant words, each with its
    class and the step it first became significant.

    Example:
        >>> from pi_lightning.metrics import ValidationEvaluation
        >>> e = ValidationEvaluation(15, 15, 0, {}, significant_words=[{"word": "zxq", "cls": 1, "q": 1e-4}])
        >>> significant_words_lines([e], ["negative", "positive"])[1].strip()
        'step 15: 1 significant: zxq (positive, q 1e-04, since step 15)'
    """
    if not evals:
        return []
    lines = [
        "  label-free shortcut detector over the validation set (words whose SP-PI beats a random word "
        "of the same text; BH q < alpha), by evaluation:"
    ]
    for e, words in significant_word_history(evals):
        shown = ", ".join(
            f"{w['word']} ({_class(w, label_names)}, q {w.get('q', float('nan')):.0e}, since step {first})"
            for w, first in words[:show]
        )
        more = f", +{len(words) - show} more" if len(words) > show else ""
        lines.append(f"    step {e.step}: {len(words)} significant" + (f": {shown}{more}" if words else ""))
    return lines


def significant_words_section(
    evals: Sequence[ValidationEvaluation] | None, label_names: Sequence[str] | None = None
) -> str:
    """The HTML report's section: one table row per evaluation with its significant words and the step
    at which each first became significant (empty string without evaluations)."""
    if not evals:
        return ""
    parts = [
        "<h2>Label-free shortcut detector (validation set)</h2><p class='m'>At each validation, every "
        "word of the validation set is compared with a within-text permutation null (what a random word of "
        "the same text gets; the statistic of <code>pi-lightning shortcuts</code>), with "
        "Benjamini-Hochberg q values. Listed: the significant words, most significant first, with "
        "the step at which each first became significant. A word that is significant is a candidate, not "
        "a verdict: check it causally with <code>pi-lightning shortcuts</code>.</p>"
        "<table><tr><th>step</th><th>significant words</th><th>word (class, q, first significant at "
        "step)</th></tr>"
    ]
    for e, words in significant_word_history(evals):
        cells = ", ".join(
            f"<b>{html.escape(w['word'])}</b> ({html.escape(_class(w, label_names))}, "
            f"q {w.get('q', float('nan')):.1e}, step {first})"
            for w, first in words
        )
        parts.append(
            f"<tr><td class='num'>{e.step}</td><td class='num'>{len(words)}</td><td>{cells or '–'}</td></tr>"  # noqa: RUF001
        )
    parts.append("</table>")
    return "".join(parts)


def validation_from_checkpoint(checkpoint: Mapping[str, Any]) -> list[ValidationEvaluation] | None:
    """:class:`~pi_lightning.callbacks.ValidationSPPI`'s records in a loaded Lightning checkpoint dict
    (its state: ``{"evals": [...]}`` under a ``ValidationSPPI`` state key), or ``None``.

    Example:
        >>> e = ValidationEvaluation(4, 4, 0, {}, top_words=[{"word": "zxq", "mean_phi": 0.4, "count": 3}])
        >>> ckpt = {"callbacks": {"ValidationSPPI{'output': 'prob'}": {"evals": [e.to_dict()]}}}
        >>> validation_from_checkpoint(ckpt)[0].top_words[0]["word"]
        'zxq'
    """
    states = checkpoint.get("callbacks", {}) if isinstance(checkpoint, Mapping) else {}
    for key, state in states.items():
        if str(key).startswith("ValidationSPPI") and isinstance(state, Mapping) and "evals" in state:
            return [ValidationEvaluation.from_dict(e) for e in state["evals"]]
    return None
