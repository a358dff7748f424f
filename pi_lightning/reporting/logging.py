"""Every W&B call, and logging from callbacks that degrades gracefully: scalars and rich media (W&B
tables, HTML files); :func:`log_table_to_wandb`, a table in a W&B run of its own (the CLI jobs).

A callback never stops training for a logging problem: every helper here logs on rank zero only,
and a logger that fails warns (``rank_zero_warn``) and training goes on. :func:`logger_step` gives
the logger step that lines a callback's figures up with the ``val/*`` of the same validation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn

from pi_lightning.reporting.page import HtmlCell

__all__ = [
    "define_step_metric",
    "log_rich",
    "log_scalars",
    "log_summary",
    "log_table_to_wandb",
    "logger_step",
    "rank_zero_log_dir",
]


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


def define_step_metric(trainer, names, step_metric: str) -> None:
    """W&B: plot ``names`` against ``step_metric`` (logged with them) instead of the logger's step.

    A callback's figures are logged at the logger step of the validation they follow (aligned with
    ``val/*``), which is one less than the optimizer steps done; the figure's own step (optimizer
    steps done, as in the report) is logged as ``step_metric`` and W&B charts use it. Rank zero;
    other loggers are left alone; failures warn.
    """
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers or []:
        try:
            if _is_wandb(logger):
                run = logger.experiment
                done = run.__dict__.setdefault("_pi_lightning_defined", set())
                for name in [step_metric, *names]:
                    if name in done:
                        continue
                    if name == step_metric:
                        run.define_metric(name)
                    else:
                        run.define_metric(name, step_metric=step_metric)
                    done.add(name)
        except Exception as e:
            rank_zero_warn(f"pi_lightning: defining W&B step metrics failed ({e!r}); training goes on.")


def log_summary(trainer, values: dict[str, Any]) -> None:
    """W&B run summary entries (e.g. a verdict line), on rank zero; other loggers ignore them."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers or []:
        try:
            if _is_wandb(logger):
                for k, v in values.items():
                    logger.experiment.summary[k] = v
        except Exception as e:
            rank_zero_warn(f"pi_lightning: writing the W&B summary failed ({e!r}); training goes on.")


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
    words: tuple[list[str], list[list[Any]]] | None = None,
) -> None:
    """Rich media: with a ``WandbLogger``, the table (``WandbLogger.log_table``), its highlighted cells
    and the whole page as ``wandb.Html``, and line plots; otherwise an HTML file in the log
    directory. Rank zero only; failures warn.

    W&B stores a ``wandb.Html`` inside a ``wandb.Table`` as the bare string ``"Html"``, so the table
    gets the plain text of :class:`HtmlCell` cells (it stays sortable by its score columns) and each
    highlighted cell is logged on its own as ``<key>/highlighted/<row>`` (one media panel per
    example, with a step slider), next to the full table page as ``<key>/page``. ``words`` is a
    long-format table (one row per example, word and step) logged as ``<key>/words``.
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
                if words is not None:
                    logger.log_table(key=f"{key}/words", columns=list(words[0]), data=words[1], step=step)
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


def log_table_to_wandb(
    project: str,
    key: str,
    table: tuple[Sequence[str], Sequence[Sequence[Any]]],
    *,
    out_dir: str | Path,
    job_type: str,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Log one table (``(columns, rows)``) as ``key`` to a new W&B run of ``project`` (files in
    ``out_dir``; offline unless ``WANDB_MODE=online``), then finish the run, also when logging fails."""
    import wandb  # lazy: never imported at pi_lightning import time

    run = wandb.init(
        project=project,
        dir=str(out_dir),
        job_type=job_type,
        mode=os.environ.get("WANDB_MODE", "offline"),
        config=dict(config or {}),
    )
    try:
        cols, rows = table
        run.log({key: wandb.Table(columns=list(cols), data=[list(r) for r in rows])})
    finally:
        run.finish()
