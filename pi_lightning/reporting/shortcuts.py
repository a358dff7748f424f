"""Shortcut words for people: the label-free detector over training, and the shortcut mining job's
candidates (terminal table, HTML page, W&B columns).

:class:`~pi_lightning.callbacks.ValidationSPPI` ranks the words of the validation set against a
within-text permutation null at every validation (the statistic of ``pi-lightning shortcuts``) and
keeps the significant ones (:attr:`~pi_lightning.metrics.ValidationEvaluation.significant_words`).
This module turns those records into what a reader needs: per evaluation, the significant words and
the step at which each first became significant (a word that turns significant early and stays is
what a shortcut learned fast looks like). :func:`significant_words_lines` is the finetune summary's
part, :func:`significant_words_section` the HTML report's.

:func:`~pi_lightning.jobs.mine_shortcuts` (``pi-lightning shortcuts``) returns a
:class:`~pi_lightning.jobs.ShortcutReport`; :func:`shortcut_columns` flattens it (W&B tables, HTML),
:func:`shortcuts_text` prints it, :func:`shortcut_examples` highlights the texts that hold each word
and :func:`shortcuts_page` is the page with both.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pi_lightning.features import normalize_word
from pi_lightning.metrics.record import ValidationEvaluation
from pi_lightning.reporting.page import format_value, html_table, label_name, page

if TYPE_CHECKING:  # the report's type only: reporting never runs a job
    from pi_lightning.jobs.shortcuts import ShortcutReport
    from pi_lightning.result import ExplainRow

__all__ = [
    "shortcut_columns",
    "shortcut_examples",
    "shortcuts_page",
    "shortcuts_text",
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
            f"{w['word']} ({label_name(w.get('cls'), label_names)}, q {w.get('q', float('nan')):.0e}, "
            f"since step {first})"
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
            f"<b>{html.escape(w['word'])}</b> ({html.escape(label_name(w.get('cls'), label_names))}, "
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


#: The columns of a shortcut report (:func:`shortcut_columns`): ``class`` is the name of the class the
#: word pushes toward, ``mean`` its mean attribution toward that class; the others are the rows' keys.
SHORTCUT_COLUMNS = [
    "rank",
    "word",
    "class",
    "count",
    "texts",
    "mean",
    "excess",
    "z",
    "q",
    "significant",
    "label_assoc",
    "pred_assoc",
    "flip_rate",
    "prob_change",
    "null_prob_change",
    "effect",
    "effect_q",
    "insert_prob_change",
    "insert_null_prob_change",
    "insert_effect",
    "insert_q",
    "checked",
    "checked_cls",
    "flagged",
    "flagged_by",
    "contradicted",
    "masked",
    "inserted",
]


def shortcut_columns(report: ShortcutReport, top: int | None = None) -> tuple[list[str], list[list[Any]]]:
    """The ``top`` candidates as flat columns and rows (W&B tables, HTML): :data:`SHORTCUT_COLUMNS`.

    Example:
        >>> from pi_lightning.jobs import ShortcutReport
        >>> r = ShortcutReport([{"rank": 1, "word": "zxq", "cls": 1, "count": 4, "texts": 4,
        ...                      "mean": [-0.5, 0.5], "excess": 0.3, "z": 5.0, "q": 1e-4, "significant": True,
        ...                      "label_assoc": 0.4, "pred_assoc": 0.4}], ["neg", "pos"])
        >>> shortcut_columns(r)[1][0][:6]
        [1, 'zxq', 'pos', 4, 4, 0.5]
    """
    rows = []
    for r in report.rows[:top]:
        named = {"class": label_name(r["cls"], report.label_names), "mean": r["mean"][r["cls"]]}
        rows.append([named[c] if c in named else r.get(c) for c in SHORTCUT_COLUMNS])
    return list(SHORTCUT_COLUMNS), rows


def shortcuts_text(report: ShortcutReport, top: int = 15) -> str:
    """A fixed-width terminal table of the ``top`` candidates (``*``: significant; ``YES``: flagged by
    the counterfactual check, ``rem`` / ``ins`` / ``r+i`` saying by which test: removal, insertion or
    both; ``opp``: one test beat its null but the other moved p(class) the other way, so not flagged;
    ``n/c``: significant but not checked)."""
    head = (
        f"{'#':>3} {'word':<16} {'class':<10} {'count':>6} {'texts':>6} {'mean':>8} {'excess':>8} "
        f"{'z':>7} {'q':>8} {'sig':>3} {'label+':>7} {'flip':>6} {'dprob':>7} {'null':>7} {'effect':>7} "
        f"{'insert':>7} {'flag':>7}  masked"
    )
    lines = [head, "-" * len(head)]
    for r in report.rows[:top]:
        flip = "-" if r.get("flip_rate") is None else f"{r['flip_rate']:.2f}"
        dprob = "-" if r.get("prob_change") is None else f"{r['prob_change']:+.3f}"
        null = "-" if r.get("null_prob_change") is None else f"{r['null_prob_change']:+.3f}"
        effect = "-" if r.get("effect") is None else f"{r['effect']:+.3f}"
        insert = "-" if r.get("insert_effect") is None else f"{r['insert_effect']:+.3f}"
        by = {"removal": "rem", "insertion": "ins", "removal+insertion": "r+i"}.get(
            r.get("flagged_by") or "", ""
        )
        flag = (
            f"YES {by}".strip()
            if r.get("flagged")
            else "n/c"
            if r.get("checked") is False
            else "opp"
            if r.get("contradicted")
            else ""
        )
        la = "-" if r["label_assoc"] is None else f"{r['label_assoc']:+.2f}"
        z = "-" if r["z"] is None else f"{r['z']:.1f}"
        q = "-" if r["q"] is None else f"{r['q']:.1e}"
        name = label_name(r["cls"], report.label_names)
        other = r.get("checked_cls", r["cls"]) != r["cls"]
        toward = f" (tested toward {label_name(r['checked_cls'], report.label_names)})" if other else ""
        lines.append(
            f"{r['rank']:>3} {r['word'][:16]:<16} {name[:10]:<10} {r['count']:>6} "
            f"{r['texts']:>6} {r['mean'][r['cls']]:>+8.4f} {r['excess']:>+8.4f} {z:>7} {q:>8} "
            f"{'*' if r['significant'] else '':>3} {la:>7} {flip:>6} {dprob:>7} {null:>7} {effect:>7} "
            f"{insert:>7} {flag:>7}  {(r.get('masked') or '')[:24]}{toward}"
        )
    return "\n".join(lines)


def shortcut_examples(
    report: ShortcutReport, results: Sequence[ExplainRow], top: int = 20, per_word: int = 3
) -> dict[str, list[str]]:
    """For each of the ``top`` candidates, up to ``per_word`` of the explained texts that hold it,
    highlighted (:func:`~pi_lightning.reporting.highlight`): ``{word: [HTML]}``."""
    from pi_lightning.reporting.html import highlight

    out = {}
    for row in report.rows[:top]:
        holders = [r for r in results if any(normalize_word(f) == row["word"] for f in r.features)]
        out[row["word"]] = [
            highlight(r.text, r.char_spans, r.scores)
            for r in holders[:per_word]
            if r.text is not None and r.char_spans is not None
        ]
    return out


def shortcuts_page(
    report: ShortcutReport, top: int = 50, examples: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The HTML page of a shortcut report: what the columns mean, the ``top`` candidates (significant
    rows highlighted) and, per word, the ``examples`` (``{word: [HTML snippets]}``, e.g. from
    :func:`shortcut_examples`).

    Example:
        >>> from pi_lightning.jobs import ShortcutReport
        >>> r = ShortcutReport([{"rank": 1, "word": "<zxq>", "cls": 0, "count": 4, "texts": 4, "mean": [0.5],
        ...                      "excess": 0.3, "z": 5.0, "q": 1e-4, "significant": True, "label_assoc": None,
        ...                      "pred_assoc": None}], ["neg"])
        >>> p = shortcuts_page(r, examples={"<zxq>": ["<b>x</b>"]})
        >>> "<tr class='sig'><td class='num'>1</td><td>&lt;zxq&gt;</td>" in p, "<h3>&lt;zxq&gt;</h3>" in p
        (True, True)
    """
    cols, rows = shortcut_columns(report, top)
    sig = cols.index("significant")
    parts = [
        f"<p class='m'>{html.escape(_describe(report.settings))}</p>",
        html_table(cols, rows, row_class=lambda r: "sig" if r[sig] else None, fmt=format_value),
    ]
    for word, snippets in (examples or {}).items():
        shown = "".join(f"<div class='ex'>{s}</div>" for s in snippets)
        parts.append(f"<h3>{html.escape(word)}</h3>{shown}")
    return page("pi_lightning shortcut candidates", *parts, heading="Shortcut candidates")


def _describe(s: Mapping[str, Any]) -> str:
    return (
        f"{s.get('examples')} examples, {s.get('words_tested')} words with at least {s.get('min_count')} "
        "occurrences. Excess: mean attribution toward the class minus the within-text permutation "
        f"null's; significant (highlighted): Benjamini-Hochberg q < {s.get('alpha')}. flip: fraction of "
        "the (checked) texts holding the word whose prediction changes when it is masked; dprob: mean "
        "drop of p(class) then (the word masked with its fixed phrase: the 'masked' "
        "column); null: the same with as many random other words of the text masked; "
        "effect: dprob - null, paired; insert: the word (with its phrase, the 'inserted' column) put at "
        "its usual place into texts that lack it, gain of p(class) minus the gain of a run of as many "
        f"words of another text put there instead, paired; flagged: significant, and effect or insert >= "
        f"{s.get('min_effect')} with its paired excess over its null significant (one-sided Wilcoxon, "
        f"BH over both tests of every checked word, q < {s.get('alpha')}), and the other test's effect "
        "above zero (contradicted: one test beat its null, the other did not move p(class) its way); "
        "n/c: significant "
        f"but not checked (budget {s.get('budget')} passes)."
    )
