"""Faithfulness metrics: per-example functions, ``torchmetrics`` classes, and the model-running evaluation.

* :mod:`pi_lightning.metrics.functional`: the math as plain functions, one twin per Metric class
  (:func:`~pi_lightning.metrics.functional.activation_auc` for :class:`ActivationAUC`, ...);
* :class:`ActivationAUC`, :class:`InverseActivationAUC`, :class:`ActivationGap`, :class:`LogOdds`,
  :class:`Comprehensiveness`, :class:`Sufficiency`: means with confidence intervals from summed
  states (DDP-safe), for a loop of one's own (the same math as the evaluator's figures);
* :class:`PairedChange`: the paired change of a per-example figure between two evaluations of the
  same probe examples (mean, 95% CI, Wilcoxon p-value; DDP-safe);
* :func:`evaluate_faithfulness`: runs the masked inputs of the activation studies and UDIG's
  metrics for a set of attributions, returning a :class:`FaithfulnessResult` that every Metric
  class can be updated from directly;
* :class:`ProbeEvaluator`: attribute texts with one method, score and aggregate them into a
  :class:`ProbeEvaluation` (``update``/``compute``, no Trainer): the one evaluation path of the
  monitor, the benchmarks and ``pi-lightning explain --metrics``;
* :class:`ProbeEvaluation`, :class:`ValidationEvaluation`, :class:`ProbeHistory`: the typed
  evaluation records the monitors store and the report, the CLI and the other callbacks read
  (:func:`histories_from_checkpoint` reads them back from a checkpoint).
"""

from pi_lightning.metrics.classes import (
    METRIC_CLASSES,
    ActivationAUC,
    ActivationGap,
    Comprehensiveness,
    InverseActivationAUC,
    LogOdds,
    Sufficiency,
)
from pi_lightning.metrics.evaluation import METRICS, FaithfulnessResult, evaluate_faithfulness
from pi_lightning.metrics.evaluator import ProbeEvaluator
from pi_lightning.metrics.paired import PairedChange
from pi_lightning.metrics.record import (
    Evaluation,
    ProbeEvaluation,
    ProbeHistory,
    ValidationEvaluation,
    histories_from_checkpoint,
)

__all__ = [
    "METRICS",
    "METRIC_CLASSES",
    "ActivationAUC",
    "ActivationGap",
    "Comprehensiveness",
    "Evaluation",
    "FaithfulnessResult",
    "InverseActivationAUC",
    "LogOdds",
    "PairedChange",
    "ProbeEvaluation",
    "ProbeEvaluator",
    "ProbeHistory",
    "Sufficiency",
    "ValidationEvaluation",
    "evaluate_faithfulness",
    "histories_from_checkpoint",
]
