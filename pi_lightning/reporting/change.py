"""What changed since the baseline, in words: one verdict line per method and the words whose
attribution rose or fell most, the same text for the CLI summary, the HTML report and W&B.

The figures come from the typed history (:class:`~pi_lightning.metrics.ProbeHistory`): the paired
change of the AS - IAS gap since the baseline that :class:`~pi_lightning.callbacks.AttributionMonitor`
stored with the latest evaluation that has one (``gap_change``, ``gap_change_ci``,
``gap_change_p``), and the word attributions of the first and the last evaluation
(:func:`~pi_lightning.metrics.functional.word_changes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pi_lightning.metrics.functional.paired import PairedTest, verdict, word_changes
from pi_lightning.metrics.record import ProbeEvaluation, ProbeHistory

__all__ = ["Change", "change_since_baseline", "format_p", "verdict_line", "words_line"]

#: Level of the verdict's test.
ALPHA = 0.05


@dataclass(frozen=True)
class Change:
    """The change of one method's explanations between its baseline and its latest evaluation.

    Attributes:
        method: the attribution method.
        first, last: the reference evaluation (the baseline when it ran) and the latest one with a
            paired change.
        test: the paired change of the gap (mean, 95% half-width, Wilcoxon p, pairs).
        verdict: ``"more faithful"``, ``"less faithful"`` or ``"no detectable change"`` (at p < 0.05).
        rose, fell: the words whose attribution rose / fell most (first -> last evaluation of the
            attributions, which every evaluation has).
    """

    method: str
    first: ProbeEvaluation
    last: ProbeEvaluation
    test: PairedTest | None
    verdict: str
    rose: list[dict]
    fell: list[dict]


def change_since_baseline(history: ProbeHistory, top: int = 5) -> Change | None:
    """The :class:`Change` of a history, or ``None`` with fewer than two evaluations."""
    if len(history.evals) < 2:
        return None
    with_change = [e for e in history.evals if "gap_change" in e.metrics]
    last = with_change[-1] if with_change else history.evals[-1]
    first = next((e for e in history.evals if "gap" in e.metrics), history.evals[0])
    test = None
    if with_change:
        m = last.metrics
        test = PairedTest(
            m["gap_change"],
            m.get("gap_change_ci", math.nan),
            m.get("gap_change_p", math.nan),
            int(m.get("gap_change_n", len(history.texts))),
        )
    rose, fell = [], []
    a, b = history.evals[0], history.evals[-1]
    if history.char_spans is not None and len(a.scores) == len(b.scores) == len(history.texts):
        try:
            rose, fell = word_changes(history.texts, history.char_spans, a.scores, b.scores, top=top)
        except ValueError:
            rose, fell = [], []
    return Change(
        history.method,
        first,
        last,
        test,
        verdict(test, ALPHA) if test else "no detectable change",
        rose,
        fell,
    )


def format_p(p: float) -> str:
    """``p = 0.031`` / ``p = 7e-05`` / ``p < 1e-10``."""
    if not math.isfinite(p):
        return "p = n/a"
    if p < 1e-10:
        return "p < 1e-10"
    return f"p = {p:.3f}" if p >= 0.001 else f"p = {p:.0e}"


def verdict_line(change: Change) -> str:
    """One line: the verdict and the paired figure behind it.

    Example: ``sp-pi: more faithful since step 0 (gap +0.162 -> +0.208; paired change +0.045 ± 0.037,
    Wilcoxon p = 0.003, 40 examples, step 0 -> 120)``.
    """
    if change.test is None:
        return f"{change.method}: no paired change (the AS/IAS curves ran at fewer than two evaluations)"
    t, f, la = change.test, change.first.metrics, change.last.metrics
    gaps = f"gap {f['gap']:+.3f} -> {la['gap']:+.3f}; " if "gap" in f and "gap" in la else ""
    ci = f" ± {t.ci:.3f}" if math.isfinite(t.ci) else ""
    return (
        f"{change.method}: {change.verdict} since step {change.first.step} ({gaps}paired change "
        f"{t.mean:+.3f}{ci}, Wilcoxon {format_p(t.p)}, {t.n} examples, step {change.first.step} -> "
        f"{change.last.step})"
    )


def words_line(change: Change, top: int = 5) -> str:
    """``rose: great (+0.12), ...; fell: ...`` (mean change of each word's attribution over its
    occurrences in the probe, first -> last evaluation)."""

    def fmt(rows):
        return ", ".join(f"{r['word']} ({r['change']:+.3f})" for r in rows[:top]) or "none"

    return f"rose: {fmt(change.rose)}; fell: {fmt(change.fell)}"
