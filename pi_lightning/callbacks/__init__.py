"""Lightning callbacks: attributions and their faithfulness, computed and logged while a model trains.

* :class:`AttributionMonitor`: any method on a held-out probe set, on a schedule, with AS/IAS AUC
  and UDIG's metrics, history in checkpoints, W&B tables.
* :class:`ValidationSPPI`: word-level SP-PI over the whole validation set from the validation
  loop's own forward pass (no extra compute).
* :class:`HTMLReport`: a static HTML report at the end of fit.
* :class:`ShortcutMonitor`: attribution share of named words and a label-free shortcut detector.
* :class:`StepProgressBar`: Lightning's progress bar counting the batches that will run (``max_steps``).

:func:`probe_histories` and :func:`validation_evaluations` read the monitors' typed evaluation
records (:mod:`pi_lightning.metrics.record`) from a Trainer.
"""

from pi_lightning.callbacks.attribution_monitor import AttributionMonitor, probe_histories
from pi_lightning.callbacks.html_report import HTMLReport
from pi_lightning.callbacks.progress import StepProgressBar
from pi_lightning.callbacks.shortcut_monitor import ShortcutMonitor
from pi_lightning.callbacks.validation_sppi import ValidationSPPI, validation_evaluations

__all__ = [
    "AttributionMonitor",
    "HTMLReport",
    "ShortcutMonitor",
    "StepProgressBar",
    "ValidationSPPI",
    "probe_histories",
    "validation_evaluations",
]
