"""What every pi_lightning callback shares: finding the model, leaving training untouched, the probe
set, distributed gathering and logging that degrades gracefully.

A callback must never change what training computes: it runs its work inside
:func:`pi_lightning.inference.model_mode` with ``isolate=True``, which saves and restores the RNG
states (python, numpy, torch CPU and CUDA), every module's train/eval flag, the parameters'
``requires_grad`` and ``.grad``, under the trainer's own autocast context.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

__all__ = [
    "ModelRef",
    "gather_objects",
    "log_rich",
    "log_scalars",
    "logger_step",
    "normalize_probe",
    "rank_zero_log_dir",
    "resolve_model",
]

ModelRef = "str | Callable[[LightningModule], torch.nn.Module]"


def resolve_model(pl_module, model: str | Callable | None) -> torch.nn.Module:
    """The Hugging Face model inside a LightningModule, by attribute path (``"model"``,
    ``"backbone.clf"``) or getter; ``None`` tries ``pl_module.model``."""
    if callable(model) and not isinstance(model, str):
        found = model(pl_module)
        where = getattr(model, "__name__", "the getter")
    else:
        path = model or "model"
        found = pl_module
        for part in path.split("."):
            found = getattr(found, part, None)
            if found is None:
                raise AttributeError(
                    f"{type(pl_module).__name__} has no attribute {path!r} holding the Hugging Face model. "
                    "Pass model='<attribute name>' (e.g. 'model' or 'net.backbone') or a getter "
                    "model=lambda module: module.my_model."
                )
        where = repr(path)
    if not isinstance(found, torch.nn.Module):
        raise TypeError(f"{where} gave a {type(found).__name__}, expected the torch.nn.Module classifier.")
    return found


def normalize_probe(probe, labels: Sequence[int] | None = None) -> tuple[list[str], list[int] | None]:
    """Texts and labels from: a ``(texts, labels)`` pair, a list of texts (+ ``labels``), a list of ``(text, label)`` pairs or of
    ``{"text": ..., "label": ...}`` rows, an object with ``.texts``/``.labels``, or a map-style dataset
    of such rows."""
    if probe is None:
        raise ValueError(
            "probe is None: pass a list of texts (with labels=...), (text, label) pairs, or a dataset."
        )
    if hasattr(probe, "texts"):
        texts, found = list(probe.texts), list(getattr(probe, "labels", None) or []) or None
    elif (
        isinstance(probe, tuple)
        and len(probe) == 2
        and not isinstance(probe[0], str)
        and len(probe[0]) == len(probe[1])
        and all(isinstance(t, str) for t in probe[0])
    ):
        texts, found = list(probe[0]), [int(y) for y in probe[1]]  # (texts, labels)
    else:
        rows = [probe[i] for i in range(len(probe))]
        if rows and isinstance(rows[0], str):
            texts, found = list(rows), None
        elif rows and isinstance(rows[0], dict):
            key = "text" if "text" in rows[0] else "sentence" if "sentence" in rows[0] else None
            if key is None:
                raise ValueError(f"Probe rows need a 'text' (or 'sentence') key, got keys {sorted(rows[0])}.")
            texts = [r[key] for r in rows]
            found = [int(r["label"]) for r in rows] if "label" in rows[0] else None
        elif rows and isinstance(rows[0], (tuple, list)) and len(rows[0]) == 2:
            texts, found = [r[0] for r in rows], [int(r[1]) for r in rows]
        elif not rows:
            texts, found = [], None
        else:
            raise TypeError(
                f"Cannot read a probe set from rows of type {type(rows[0]).__name__}: expected texts, "
                "(text, label) pairs or {'text': ..., 'label': ...} dicts."
            )
    if labels is not None:
        found = [int(y) for y in labels]
    if not texts:
        raise ValueError("The probe set is empty: pass at least one held-out text to explain.")
    if found is not None and len(found) != len(texts):
        raise ValueError(f"The probe set has {len(texts)} texts but {len(found)} labels.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"Probe texts must be non-empty strings; entries {bad[:5]} are not.")
    return texts, found


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_objects(obj: Any) -> list[Any]:
    """All ranks' ``obj``, in rank order (``[obj]`` without a process group)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    torch.distributed.all_gather_object(out, obj)
    return out


def logger_step(trainer) -> int:
    """The logger step of the validation (or training batch) a callback is reporting on.

    During fit Lightning logs a batch's metrics, and those of a validation run right after it, before
    it counts the batch: ``val/*`` of the validation that follows optimizer step 6 go to step 5, i.e.
    ``global_step - 1`` (one optimizer, no accumulation). Figures logged at this step line up with
    ``val/*``; outside fit it is ``global_step``.
    """
    step = int(trainer.global_step)
    in_fit = trainer.training or (trainer.validating and trainer.state.fn == "fit")
    return max(step - 1, 0) if in_fit else step


def log_scalars(trainer, metrics: dict[str, float], step: int) -> None:
    """Scalars to every logger, on rank zero; a logging failure warns and never stops training."""
    if not trainer.is_global_zero or not trainer.loggers:
        return
    clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}
    for logger in trainer.loggers:
        try:
            logger.log_metrics(clean, step=step)
        except Exception as e:
            rank_zero_warn(
                f"pi_lightning: {type(logger).__name__} failed to log scalars ({e!r}); training goes on."
            )


def rank_zero_log_dir(trainer) -> Path:
    """A directory for files (HTML) next to the logs: the first logger's ``log_dir`` or the trainer's."""
    for logger in trainer.loggers:
        d = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if d:
            return Path(d)
    return Path(trainer.default_root_dir)


def _is_wandb(logger) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def log_rich(
    trainer,
    key: str,
    step: int,
    *,
    table: tuple[list[str], list[list[Any]]] | None = None,
    html_rows: Sequence[str] | None = None,
    curves: dict[str, tuple[list[float], list[float]]] | None = None,
    html_page: str | None = None,
) -> None:
    """Rich media: with a ``WandbLogger``, the table (``WandbLogger.log_table``), its highlighted cells
    and the whole page as ``wandb.Html``, and line plots; otherwise an HTML file in the log
    directory. Rank zero only; failures warn.

    W&B stores a ``wandb.Html`` inside a ``wandb.Table`` as the bare string ``"Html"``, so the table
    gets the plain text of :class:`HtmlCell` cells (it stays sortable by its score columns) and each
    highlighted cell is logged on its own as ``<key>/highlighted/<row>`` (one media panel per
    example, with a step slider), next to the full table page as ``<key>/page``.
    """
    if not trainer.is_global_zero:
        return
    wrote_file = False
    for logger in trainer.loggers or []:
        try:
            if _is_wandb(logger):
                import wandb  # lazy: never imported at pi_lightning import time

                payload: dict[str, Any] = {}
                if table is not None:
                    cols, rows = table
                    plain = [[c.text if isinstance(c, HtmlCell) else c for c in r] for r in rows]
                    logger.log_table(key=f"{key}/examples", columns=list(cols), data=plain, step=step)
                    for r, row in enumerate(rows):
                        cells = [c for c in row if isinstance(c, HtmlCell)]
                        if cells:
                            payload[f"{key}/highlighted/{r:02d}"] = wandb.Html("".join(c.html for c in cells))
                if (
                    html_page is not None
                    and table is not None
                    and any(isinstance(c, HtmlCell) for r in table[1] for c in r)
                ):
                    payload[f"{key}/page"] = wandb.Html(html_page)
                if curves:
                    for name, (xs, ys) in curves.items():
                        t = wandb.Table(
                            columns=["fraction of features added", "p(class)"],
                            data=[[float(x), float(y)] for x, y in zip(xs, ys, strict=False)],
                        )
                        payload[f"{key}/{name}_curve"] = wandb.plot.line(
                            t, "fraction of features added", "p(class)", title=f"{key} {name} curve"
                        )
                if payload:
                    logger.log_metrics(payload, step=step)
            elif not wrote_file and html_page is not None:
                out = rank_zero_log_dir(trainer) / "pi_lightning"
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{key.replace('/', '_')}_step{step:07d}.html").write_text(html_page, encoding="utf-8")
                wrote_file = True
        except Exception as e:
            rank_zero_warn(
                f"pi_lightning: rich logging to {type(logger).__name__} failed ({e!r}); training goes on."
            )


class HtmlCell:
    """A table cell that holds HTML (``wandb.Html`` media in W&B, raw in HTML files) and its plain
    text (``text``; by default the HTML with its tags removed), which W&B tables show.

    Example:
        >>> HtmlCell("<span title='+0.5'>good</span> &amp; <b>fun</b>").text
        'good & fun'
    """

    def __init__(self, html_text: str, text: str | None = None) -> None:
        self.html = html_text
        self.text = text if text is not None else html.unescape(re.sub(r"<[^>]*>", "", html_text))

    def __str__(self) -> str:
        return self.html


def table_page(title: str, cols: list[str], rows: list[list[Any]]) -> str:
    """A standalone HTML page for a table (used when no W&B logger is present)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{c.html if isinstance(c, HtmlCell) else html.escape(_fmt(c))}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ddd;padding:6px 10px;vertical-align:top;text-align:left}</style>"
        f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"
    )


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
