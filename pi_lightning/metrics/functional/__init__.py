"""Faithfulness metrics as plain functions (the torchmetrics-style ``functional`` API).

One implementation of the math, used by the Metric classes of :mod:`pi_lightning.metrics` and by
:func:`pi_lightning.metrics.evaluate_faithfulness`. Every Metric class has a functional twin of the
same name that returns the per-example values whose mean the class computes:

* :class:`~pi_lightning.metrics.ActivationAUC`: :func:`activation_auc`
* :class:`~pi_lightning.metrics.InverseActivationAUC`: :func:`inverse_activation_auc`
* :class:`~pi_lightning.metrics.ActivationGap`: :func:`activation_gap`
* :class:`~pi_lightning.metrics.LogOdds`: :func:`log_odds`
* :class:`~pi_lightning.metrics.Comprehensiveness`: :func:`comprehensiveness`
* :class:`~pi_lightning.metrics.Sufficiency`: :func:`sufficiency`
* :class:`~pi_lightning.metrics.PairedChange`: :func:`paired_change` (and :func:`paired_test`, the
  mean change with its interval and Wilcoxon p-value; :func:`verdict`; :func:`word_changes`)

Besides the twins: the activation study's feature orderings, coalitions, evaluated steps and curve
resampling (:mod:`~pi_lightning.metrics.functional.curves`), UDIG's top-k features
(:mod:`~pi_lightning.metrics.functional.removal`), and the mean with its confidence interval from
summed moments (:mod:`~pi_lightning.metrics.functional.stats`).
"""

from pi_lightning.metrics.functional.curves import (
    activation_auc,
    activation_coalitions,
    activation_gap,
    activation_order,
    activation_steps,
    interpolate_curve,
    inverse_activation_auc,
)
from pi_lightning.metrics.functional.paired import (
    PairedTest,
    paired_change,
    paired_test,
    verdict,
    word_changes,
)
from pi_lightning.metrics.functional.removal import (
    comprehensiveness,
    log_odds,
    sufficiency,
    top_k_count,
    top_k_features,
)
from pi_lightning.metrics.functional.stats import mean_confidence_interval

__all__ = [
    "PairedTest",
    "activation_auc",
    "activation_coalitions",
    "activation_gap",
    "activation_order",
    "activation_steps",
    "comprehensiveness",
    "interpolate_curve",
    "inverse_activation_auc",
    "log_odds",
    "mean_confidence_interval",
    "paired_change",
    "paired_test",
    "sufficiency",
    "top_k_count",
    "top_k_features",
    "verdict",
    "word_changes",
]
