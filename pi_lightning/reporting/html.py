"""HTML: highlighted text, tables, and the static report of explanation quality over training.

:func:`highlight` renders a text with each feature's background green (supports the explained
class) or red (opposes it), its opacity proportional to the attribution normalised by the largest
absolute attribution of the example, like the paper's Figures 6-7. :class:`HtmlCell` and
:func:`table_page` build the tables the callbacks log (W&B media, or HTML files without W&B).

:func:`write_report` builds one self-contained HTML file (plots embedded as PNG, scaled to the page
width) from the typed histories (:class:`~pi_lightning.metrics.ProbeHistory`) the
:class:`~pi_lightning.callbacks.AttributionMonitor` callbacks keep: the headline AS - IAS gap with
its 95% interval per method over training, AS, IAS and probe accuracy, a summary table, and the
probe examples highlighted at the first and the last evaluation, side by side, by the best method
that ran (MP-PI, else SP-PI, else the first; the others folded below).
:func:`write_report_from_checkpoint` does the same from a Lightning checkpoint.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pi_lightning.metrics.record import ProbeHistory, ValidationEvaluation, histories_from_checkpoint
from pi_lightning.reporting.page import HtmlCell, html_table, label_name, page
from pi_lightning.reporting.shortcuts import significant_words_section, validation_from_checkpoint

__all__ = [
    "HtmlCell",
    "attribution_html",
    "explained_method",
    "highlight",
    "highlight_panel",
    "show",
    "table_page",
    "word_rows",
    "write_report",
    "write_report_from_checkpoint",
]

#: Methods whose explanations are shown first, best first (MP-PI approximates SHAP values; SP-PI is free).
PREFERRED = ("mp-pi", "sp-pi")


def explained_method(methods) -> str | None:
    """The method whose explanations a reader should see: MP-PI if it ran, else SP-PI, else the first.

    Example:
        >>> explained_method(["sp-pi", "mp-pi"]), explained_method(["ig", "sp-pi"]), explained_method([])
        ('mp-pi', 'sp-pi', None)
    """
    methods = list(methods)
    return next((m for m in PREFERRED if m in methods), methods[0] if methods else None)


def highlight(text: str, char_spans: Sequence[Sequence[int]], scores: Sequence[float]) -> str:
    """HTML for ``text`` with features highlighted by their attribution.

    Example:
        >>> highlight("good bad", [(0, 4), (5, 8)], [0.5, -1.0]).count("<span title=")
        2
    """
    finite = [float(s) if math.isfinite(float(s)) else 0.0 for s in scores]  # never rgba(..., nan)
    top = max((abs(s) for s in finite), default=0.0) or 1.0
    out, prev = [], 0
    for (a, b), s in zip(char_spans, finite, strict=False):
        out.append(html.escape(text[prev:a]))
        alpha = min(abs(float(s)) / top, 1.0) * 0.85
        rgb = "34,160,70" if s >= 0 else "215,48,39"
        out.append(
            f"<span title='{float(s):+.4f}' style='background:rgba({rgb},{alpha:.3f});"
            f"border-radius:3px;padding:0 1px'>{html.escape(text[a:b])}</span>"
        )
        prev = b
    out.append(html.escape(text[prev:]))
    return "<span style='line-height:1.9'>" + "".join(out) + "</span>"


def highlight_panel(
    text: str,
    char_spans: Sequence[Sequence[int]],
    scores: Sequence[float],
    *,
    label: str | None,
    prediction: str | None,
    explained: str,
    step: int | None = None,
    method: str | None = None,
) -> str:
    """:func:`highlight` with what a reader needs to read it: the method, the true label, the
    prediction, the explained class and the colour scale (full colour at the example's largest
    ``|attribution|``); ``None`` leaves a part out (e.g. no label).

    Example:
        >>> "predicted <b>pos</b>" in highlight_panel("good", [(0, 4)], [0.5], label="pos",
        ...                                           prediction="pos", explained="pos")
        True
    """
    finite = [abs(float(s)) for s in scores if math.isfinite(float(s))]
    top = max(finite, default=0.0)
    e = html.escape
    head = [f"<b>{e(method)}</b>"] if method is not None else []
    head += [f"label <b>{e(label)}</b>"] if label is not None else []
    head += [f"predicted <b>{e(prediction)}</b>"] if prediction is not None else []
    head += [f"explains <b>{e(explained)}</b>"] + ([f"step {int(step)}"] if step is not None else [])
    return (
        f"<div style='font-size:85%;color:#555'>{' · '.join(head)}</div>"
        + highlight(text, char_spans, scores)
        + "<div style='font-size:80%;color:#777'>"
        "<span style='background:rgba(34,160,70,0.85);padding:0 4px'>&nbsp;</span> supports "
        f"{e(explained)} · <span style='background:rgba(215,48,39,0.85);padding:0 4px'>&nbsp;</span> opposes "
        f"it · full colour at |attribution| = {top:.3f} (this example's largest), fainter = smaller</div>"
    )


def attribution_html(attribution, label_names: Sequence[str] | None = None) -> str:
    """One :class:`~pi_lightning.Attribution` as HTML (a notebook cell, a page): its text highlighted by
    :func:`highlight_panel`, headed by the method, the prediction (when known) and the explained class.

    Args:
        attribution: the attribution.
        label_names: class names (default: the class indices).

    Example:
        >>> import torch
        >>> from pi_lightning.features import Features
        >>> from pi_lightning.result import Attribution
        >>> f = Features("good <b>", (1, 2, 3), ((0, 1), (1, 2)), ((0, 4), (5, 8)), 0, 3, "word",
        ...              (False, True))
        >>> a = Attribution(torch.tensor([0.5, -0.25], dtype=torch.float64), f, target=1, method="sp-pi",
        ...                 probs=torch.tensor([0.2, 0.8]))
        >>> h = attribution_html(a, ["neg", "pos"])
        >>> "<b>sp-pi</b> · predicted <b>pos</b> · explains <b>pos</b>" in h, "&lt;b&gt;" in h
        (True, True)
    """
    f = attribution.features
    pred = attribution.prediction
    return highlight_panel(
        f.text,
        f.char_spans,
        [float(s) for s in attribution.scores],
        label=None,
        prediction=None if pred is None else label_name(pred, label_names),
        explained=label_name(attribution.target, label_names),
        method=attribution.method,
    )


def word_rows(history: ProbeHistory, label=str) -> tuple[list[str], list[list[Any]]]:
    """The long-format words table of a history: one row per (evaluation, example, word), so a logger
    can sort and filter by word: ``example, word, position, score, step, label, prediction``.

    Args:
        history: the probe history.
        label: class index -> name.
    """
    cols = ["example", "word", "position", "score", "step", "label", "prediction"]
    rows = []
    for ev in history.evals:
        for i, text in enumerate(history.texts):
            if i >= len(ev.scores) or history.char_spans is None:
                continue
            y = label(history.labels[i]) if history.labels else ""
            pred = label(ev.predictions[i]) if i < len(ev.predictions) else ""
            for j, ((a, b), score) in enumerate(zip(history.char_spans[i], ev.scores[i], strict=False)):
                rows.append([i, text[a:b], j, float(score), ev.step, y, pred])
    return cols, rows


def show(attributions) -> HtmlCell:
    """Attributions (one or a list) as one HTML block that Jupyter displays inline: ``show(atts)`` as
    the last line of a cell (a list's own repr is text)."""
    items = [attributions] if hasattr(attributions, "features") else list(attributions)
    return HtmlCell("".join(f"<div style='margin:0.6em 0'>{attribution_html(a)}</div>" for a in items))


def table_page(title: str, cols: list[str], rows: list[list[Any]]) -> str:
    """A standalone HTML page for a table (used when no W&B logger is present)."""
    return page(title, html_table(cols, rows))


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return (
        "<img style='max-width:100%;height:auto' src='data:image/png;base64,"
        + base64.b64encode(buf.getvalue()).decode()
        + "'>"
    )


#: One look per method, so that no line hides another (markers and dashes differ, not only colours).
_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")]


def _series(ax, histories, key, *, band=True, offset=True):
    """Each method's ``key`` over steps with its 95% interval as error bars and a band; methods are
    nudged apart on x by a small fraction of the run so that equal values stay visible."""
    last = max((e.step for h in histories.values() for e in h.evals), default=1) or 1
    for k, (method, h) in enumerate(histories.items()):
        evals = [e for e in h.evals if key in e.metrics]
        if not evals:
            continue
        marker, dash = _STYLES[k % len(_STYLES)]
        nudge = (k - (len(histories) - 1) / 2) * 0.006 * last if offset else 0.0
        xs = [e.step + nudge for e in evals]
        ys = [e.metrics[key] for e in evals]
        ci = [e.metrics.get(f"{key}_ci", 0.0) or 0.0 for e in evals]
        line = ax.errorbar(xs, ys, yerr=ci, marker=marker, ls=dash, capsize=3, label=method, alpha=0.9)
        if band:
            ax.fill_between(
                xs,
                [y - c for y, c in zip(ys, ci, strict=False)],
                [y + c for y, c in zip(ys, ci, strict=False)],
                alpha=0.12,
                color=line[0].get_color(),
            )
    return last


def _auc_plots(histories: Mapping[str, ProbeHistory], validation: Sequence[Mapping[str, float]] = ()) -> str:
    """The report's figure: the gap with its bands and each method's baseline, the paired change since
    the baseline, AS / IAS AUC, drift and accuracies, on honest axes (AUCs and accuracies on [0, 1],
    the gap and the change with 0 in view)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(3, 2, figsize=(11, 9.6))
    axes = axes.ravel()
    # 1. the gap, with a dashed line at each method's baseline value
    _series(axes[0], histories, "gap")
    for k, h in enumerate(histories.values()):
        first = next((e for e in h.evals if "gap" in e.metrics), None)
        if first is not None:
            axes[0].axhline(first.metrics["gap"], color=f"C{k}", lw=0.8, ls=(0, (2, 3)), alpha=0.8)
    axes[0].axhline(0.0, color="#888", lw=1)
    axes[0].set_title("AS − IAS gap ± 95% CI (dotted: its baseline; random = 0)", fontsize=10)  # noqa: RUF001
    # 2. the paired change since the baseline
    _series(axes[1], histories, "gap_change")
    for k, h in enumerate(histories.values()):
        for e in h.evals:
            if "gap_change_p" in e.metrics:
                axes[1].annotate(
                    f"p={e.metrics['gap_change_p']:.1g}",
                    (e.step, e.metrics["gap_change"]),
                    textcoords="offset points",
                    xytext=(4, 6 + 9 * k),
                    fontsize=7,
                    color=f"C{k}",
                )
    axes[1].axhline(0.0, color="#888", lw=1)
    axes[1].set_title("paired change of the gap since the baseline ± 95% CI (Wilcoxon p)", fontsize=10)
    # 3-4. AS and IAS AUC on [0, 1]
    _series(axes[2], histories, "as_auc")
    axes[2].set_title("activation AUC ± 95% CI (higher is better)", fontsize=10)
    _series(axes[3], histories, "ias_auc")
    axes[3].set_title("inverse activation AUC ± 95% CI (lower is better)", fontsize=10)
    for ax in axes[2:4]:
        ax.set_ylim(0.0, 1.0)
    # 5. drift
    _series(axes[4], histories, "drift_rank_corr", band=False)
    axes[4].set_ylim(-1.0, 1.0)
    axes[4].axhline(0.0, color="#888", lw=1)
    axes[4].set_title("drift: rank correlation of attributions with the previous evaluation", fontsize=10)
    # 6. accuracies on [0, 1]: validation (with its 95% Wilson interval) and each method's probe
    _series(axes[5], histories, "accuracy", band=False)
    if validation:
        xs = [v["step"] for v in validation]
        ys = [v["acc"] for v in validation]
        lo = [v["acc"] - v.get("low", v["acc"]) for v in validation]
        hi = [v.get("high", v["acc"]) - v["acc"] for v in validation]
        axes[5].errorbar(xs, ys, yerr=[lo, hi], marker="x", color="k", capsize=3, label="validation")
    axes[5].set_ylim(0.0, 1.0)
    axes[5].set_title("accuracy: validation set (95% CI) and probe set", fontsize=10)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer steps done (0 = baseline)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    html_img = _png(fig)
    plt.close(fig)
    return html_img


def write_report(
    histories: Mapping[str, ProbeHistory],
    path: str | Path,
    title: str = "pi_lightning report",
    validation: Sequence[ValidationEvaluation] | None = None,
    accuracy: Sequence[Mapping[str, float]] = (),
) -> Path:
    """Write the HTML report.

    Args:
        histories: ``{method: history}``, the typed :class:`~pi_lightning.metrics.ProbeHistory` of
            each monitor (:func:`~pi_lightning.callbacks.probe_histories` in process,
            :func:`~pi_lightning.metrics.histories_from_checkpoint` from a checkpoint).
        path: the HTML file to write.
        title: the page title.
        validation: :class:`~pi_lightning.callbacks.ValidationSPPI`'s records: adds the label-free
            shortcut detector's section (:func:`~pi_lightning.reporting.shortcuts.significant_words_section`).
        accuracy: validation accuracy per validation, ``{"step", "acc", "low", "high"}`` (its 95%
            interval), plotted with the probe accuracies.
    """
    from pi_lightning.reporting.change import change_since_baseline, verdict_line, words_line

    path = Path(path)
    parts = [
        page(
            title,
            "<p class='m'>Green: the word supports the explained class; red: it opposes it. Opacity is "
            "proportional to the attribution, normalised per example (full colour at the example's largest "
            "|attribution|, printed under each panel).</p>",
        )
    ]
    usable = {m: h for m, h in histories.items() if h.evals}
    names = next((h.label_names for h in histories.values() if h.label_names), None)
    detector = significant_words_section(validation, names)
    if not usable:
        parts.append("<p>No evaluation has run yet.</p>" + detector)
        path.write_text("".join(parts), encoding="utf-8")
        return path
    parts.append(
        "<h2>Summary</h2><p class='m'>Gap: per probe example, the activation AUC (features added "
        "most-supporting first) minus the inverse activation AUC (most-opposing first), averaged, with "
        "its 95% interval. Random attributions score 0; an interval clear of 0 means the explanations "
        "rank words by their real effect on the prediction.</p>"
        "<table><tr><th>method</th><th>evaluations</th><th>probe examples</th>"
        "<th>gap ± 95% CI, first → last</th><th>AS AUC first → last</th>"
        "<th>IAS AUC first → last</th><th>probe accuracy first → last</th></tr>"
    )
    for m, h in usable.items():
        first, last = h.evals[0].metrics, h.evals[-1].metrics

        def fl(k, first=first, last=last):
            # The typographic dash is the page's "missing" mark.
            return f"{first[k]:.3f} → {last[k]:.3f}" if k in first and k in last else "–"  # noqa: RUF001

        parts.append(
            f"<tr><td>{html.escape(m)}</td><td class='num'>{len(h.evals)}</td>"
            f"<td class='num'>{len(h.texts or [])}</td>"
            f"<td class='num'>{_with_ci(first, 'gap')} → {_with_ci(last, 'gap')}</td>"
            f"<td class='num'>{fl('as_auc')}</td><td class='num'>{fl('ias_auc')}</td>"
            f"<td class='num'>{fl('accuracy')}</td></tr>"
        )
    parts.append("</table>")
    changes = [c for c in (change_since_baseline(h) for h in usable.values()) if c is not None]
    if changes:
        parts.append(
            "<h2>Verdict: what changed since the baseline</h2><p class='m'>The probe examples are the same "
            "at every evaluation, so each example's gap change is paired: mean change ± 95% CI and the "
            "Wilcoxon signed-rank p-value (p &lt; 0.05 counts as a change). Words: mean change of each "
            "word's attribution over its occurrences in the probe, first → last evaluation.</p><ul>"
        )
        for c in changes:
            parts.append(
                f"<li><b>{html.escape(verdict_line(c))}</b><br><span class='m'>"
                f"{html.escape(words_line(c))}</span></li>"
            )
        parts.append("</ul>")
    parts.append("<h2>Explanation quality over training</h2>" + _auc_plots(usable, accuracy))
    shown = explained_method(usable)
    for m in [shown] + [m for m in usable if m != shown]:
        h = usable[m]
        first, last = h.evals[0], h.evals[-1]
        if m != shown:
            parts.append("<details><summary>" + html.escape(f"{m}: probe examples") + "</summary>")
        names = h.label_names
        parts.append(
            f"<h2>{html.escape(m)}: all {len(h.texts)} probe examples, first (step {int(first.step)}) vs "
            f"last (step {int(last.step)}) evaluation</h2><table><tr><th>#</th><th>label</th>"
            f"<th>step {int(first.step)}</th><th>step {int(last.step)}</th><th>gap change</th></tr>"
        )
        for i, text in enumerate(h.texts):
            spans = h.char_spans[i]
            label = h.labels[i] if h.labels else None
            cells = [
                highlight_panel(
                    text,
                    spans,
                    e.scores[i],
                    label=None if label is None else label_name(label, names),
                    prediction=label_name(e.predictions[i], names),
                    explained=label_name(e.targets[i], names),
                    step=e.step,
                )
                for e in (first, last)
            ]
            g0 = first.gap[i] if i < len(first.gap) else None
            g1 = last.gap[i] if i < len(last.gap) else None
            dg = f"{g1 - g0:+.3f}" if g0 is not None and g1 is not None else "–"  # noqa: RUF001
            parts.append(
                f"<tr><td class='num'>{i}</td><td>{html.escape(label_name(label, names, '-'))}</td>"
                f"<td>{cells[0]}</td><td>{cells[1]}</td><td class='num'>{dg}</td></tr>"
            )
        parts.append("</table>" + ("</details>" if m != shown else ""))
    parts.append(detector)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _with_ci(metrics: dict[str, float], key: str) -> str:
    """``"0.206 ± 0.053"`` (or ``"–"`` when the figure is missing)."""  # noqa: RUF002 (the page's dash)
    if key not in metrics:
        return "–"  # noqa: RUF001 (the typographic dash is the page's "missing" mark)
    ci = metrics.get(f"{key}_ci")
    return f"{metrics[key]:+.3f}" + (f" ± {ci:.3f}" if ci is not None and not math.isnan(ci) else "")


def write_report_from_checkpoint(ckpt_path: str | Path, path: str | Path) -> Path:
    """Write the HTML report from the callback state saved in a Lightning checkpoint.

    The checkpoint is loaded with ``torch.load(..., weights_only=True)``: a checkpoint is untrusted
    input, and unpickling arbitrary objects can run code. Lightning checkpoints with pi_lightning
    callback state hold tensors, numbers, strings, lists and dicts only, which that mode accepts.

    Raises:
        ValueError: the file holds objects that ``weights_only`` loading refuses (it was not written by
            Lightning with plain state), or no ``AttributionMonitor`` state.
    """
    import pickle

    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{ckpt_path} holds objects that safe loading (torch.load(weights_only=True)) refuses, so it is "
            f"not read: {str(e).splitlines()[0] if str(e) else type(e).__name__}. pi_lightning never "
            "unpickles arbitrary objects from a checkpoint. If you trust the file, load it yourself with "
            "torch.load(..., weights_only=False) and pass "
            "pi_lightning.metrics.histories_from_checkpoint(ckpt) to write_report."
        ) from e
    histories = histories_from_checkpoint(ckpt)
    if not histories:
        raise ValueError(f"{ckpt_path} holds no AttributionMonitor state: was the run trained with one?")
    states = ckpt.get("callbacks", {}) if isinstance(ckpt, Mapping) else {}
    accuracy = next(
        (
            s["accuracy"]
            for k, s in states.items()
            if str(k).startswith("HTMLReport") and isinstance(s, Mapping) and "accuracy" in s
        ),
        (),
    )
    return write_report(histories, path, validation=validation_from_checkpoint(ckpt), accuracy=accuracy)
