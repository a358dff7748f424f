"""HTMLReport: write the static HTML report at the end of fit.

It reads the typed history of every :class:`~pi_lightning.callbacks.AttributionMonitor` on the
Trainer (:func:`~pi_lightning.callbacks.probe_histories`) and writes one self-contained page (see
:mod:`pi_lightning.reporting.html`). Beside it goes ``report_state.pt``: the monitors' saved
state, in a checkpoint's layout, so that ``pi-lightning report <run folder>`` rebuilds the page
without a Lightning checkpoint (the default job saves none). The same page can be made from a checkpoint with
:func:`pi_lightning.reporting.write_report_from_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from pi_lightning.callbacks.attribution_monitor import probe_histories
from pi_lightning.callbacks.validation_sppi import validation_evaluations
from pi_lightning.metrics.functional.stats import wilson_interval
from pi_lightning.reporting.html import write_report
from pi_lightning.reporting.logging import rank_zero_log_dir

__all__ = ["REPORT_STATE", "HTMLReport"]

#: The file written beside the report: ``{"callbacks": {state_key: state}}`` of every callback with
#: state, the part of a Lightning checkpoint that ``pi-lightning report`` reads.
REPORT_STATE = "report_state.pt"


class HTMLReport(Callback):
    """Write ``report.html`` (or ``path``) when fitting ends, on rank zero, and beside it
    :data:`REPORT_STATE` (what ``pi-lightning report`` rebuilds it from); the validation accuracy
    (``val/acc``) of each validation is kept for its accuracy plot, and saved in its state (a
    checkpoint's, and :data:`REPORT_STATE`), so a resumed fit and a rebuilt report plot it too.

    Args:
        path: the file to write; default ``<log dir>/pi_lightning/report.html``.
        title: the page title.
    """

    def __init__(
        self, path: str | Path | None = None, title: str = "pi_lightning: explanations during training"
    ) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else None
        self.title = title
        self.written: Path | None = None
        #: validation accuracy at each validation of this fit: ``{"step", "acc", "low", "high", "n"}``.
        self.accuracy: list[dict[str, float]] = []

    @property
    @override
    def state_key(self) -> str:
        return "HTMLReport"

    @override
    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        """The validation accuracies so far: what a resumed fit and ``pi-lightning report`` plot."""
        return {"accuracy": [dict(r) for r in self.accuracy]}

    @override
    def load_state_dict(self, state_dict: dict[str, list[dict[str, float]]]) -> None:
        self.accuracy = [dict(r) for r in state_dict.get("accuracy", [])]

    @override
    def on_validation_end(self, trainer, pl_module) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or acc is None:
            return
        val = getattr(getattr(trainer, "datamodule", None), "val_set", None)
        try:
            n = len(val) if val is not None else 0
        except TypeError:
            n = 0
        row = {"step": int(trainer.global_step), "acc": float(acc), "n": n}
        if n:
            row["low"], row["high"] = wilson_interval(float(acc), n)
        self.accuracy.append(row)

    @override
    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        histories = probe_histories(trainer)
        if not histories:
            rank_zero_warn("HTMLReport: no AttributionMonitor on the Trainer, so there is nothing to report.")
            return
        path = self.path or rank_zero_log_dir(trainer) / "pi_lightning" / "report.html"
        try:
            self.written = write_report(
                histories,
                path,
                title=self.title,
                validation=validation_evaluations(trainer),
                accuracy=self.accuracy,
            )
        except Exception as e:
            rank_zero_warn(f"HTMLReport: writing {path} failed ({e!r}).")
        state = Path(path).parent / REPORT_STATE
        try:
            import torch

            states = {cb.state_key: cb.state_dict() for cb in trainer.callbacks if cb.state_dict()}
            torch.save({"callbacks": states}, state)
        except Exception as e:
            rank_zero_warn(f"HTMLReport: writing {state} failed ({e!r}); `pi-lightning report` needs it.")
