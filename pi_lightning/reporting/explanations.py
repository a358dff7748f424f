"""The explain job's rows for people: a terminal table and an HTML page of highlighted texts.

``pi-lightning explain`` prints :func:`explanations_text` (prediction, and the features that push
toward and against the explained class) and writes :func:`explanations_page` (each text highlighted,
:func:`~pi_lightning.reporting.highlight`) from the typed rows
(:class:`~pi_lightning.result.ExplainRow`) that :func:`~pi_lightning.jobs.load_results` returns.
"""

from __future__ import annotations

from collections.abc import Sequence

from pi_lightning.reporting.html import highlight
from pi_lightning.reporting.page import HtmlCell, html_table, label_name, page
from pi_lightning.result import ExplainRow

__all__ = ["explanations_page", "explanations_text"]


def explanations_text(
    rows: Sequence[ExplainRow], label_names: Sequence[str] | None = None, top: int = 3, width: int = 110
) -> str:
    """A terminal table: id, prediction and its probability, label, and the strongest features each way.

    Example:
        >>> row = ExplainRow(id="0", prediction=1, probs=[0.2, 0.8], target=1,
        ...                  features=["a", "good", "movie"], scores=[0.0, 0.5, -0.1])
        >>> print(explanations_text([row]))
        id    prediction        p  label     explained  for                                   against
        0     1             0.800  -         1          good +0.500, a +0.000                 movie -0.100
    """
    lines = [f"{'id':<5} {'prediction':<12} {'p':>6}  {'label':<9} {'explained':<10} {'for':<37} against"]
    for r in rows:
        order = sorted(range(len(r.scores)), key=lambda i: -r.scores[i])
        pos = _fit([f"{r.features[i]} {r.scores[i]:+.3f}" for i in order[:top] if r.scores[i] >= 0], 37)
        neg = _fit(
            [f"{r.features[i]} {r.scores[i]:+.3f}" for i in order[::-1][:top] if r.scores[i] < 0],
            max(width - 86, 12),
        )
        line = (
            f"{str(r.id)[:5]:<5} {label_name(r.prediction, label_names, '-')[:12]:<12} "
            f"{_p(r):>6}  {label_name(r.label, label_names, '-')[:9]:<9} "
            f"{label_name(r.target, label_names, '-')[:10]:<10} {pos:<37} {neg}"
        )
        lines.append(line.rstrip())
    return "\n".join(lines)


def _p(row: ExplainRow) -> str:
    """The predicted class's probability (``-`` when the row has none)."""
    if row.prediction is None or not 0 <= row.prediction < len(row.probs):
        return "-"
    return f"{row.probs[row.prediction]:.3f}"


def _fit(items: list[str], width: int) -> str:
    """Comma-joined items, as many whole ones as fit in ``width`` characters (at least one, cut)."""
    out = ""
    for item in items:
        cand = f"{out}, {item}" if out else item
        if len(cand) > width:
            return out or item[:width]
        out = cand
    return out


def explanations_page(
    rows: Sequence[ExplainRow], label_names: Sequence[str] | None = None, title: str = ""
) -> str:
    """The HTML page of explained rows: id, prediction (p), label, explained class and the text
    highlighted (green: supports the explained class, red: opposes it).

    Example:
        >>> row = ExplainRow(id="<0>", text="good <film>", label=None, prediction=1, probs=[0.2, 0.8],
        ...                  target=1, features=["good", "<film>"], char_spans=[[0, 4], [5, 11]],
        ...                  scores=[0.5, -0.1])
        >>> p = explanations_page([row], ["neg", "pos"], "demo")
        >>> "<td>&lt;0&gt;</td><td>pos (0.800)</td><td>-</td><td>pos</td>" in p, "&lt;film&gt;</span>" in p
        (True, True)
    """
    cols = ["id", "prediction (p)", "label", "explained", "text"]
    body = [
        [
            str(r.id),
            f"{label_name(r.prediction, label_names, '-')} ({_p(r)})",
            label_name(r.label, label_names, "-"),
            label_name(r.target, label_names, "-"),
            HtmlCell(highlight(r.text or "", r.char_spans or [], r.scores)),
        ]
        for r in rows
    ]
    return page("pi_lightning explanations", html_table(cols, body), heading=title)
