"""Faithfulness metrics as plain functions (torchmetrics-style ``functional`` API).

One implementation of the math, used by the :mod:`pi_lightning.metrics` classes and by
:func:`pi_lightning.evaluation.evaluate_faithfulness`:

* activation / inverse-activation study: feature orderings, coalitions, AUC with ``x = k / n``,
  evaluated at every step or at fixed fractions, and the paired AS - IAS gap;
* UDIG's log-odds, comprehensiveness and sufficiency from class probabilities;
* mean and confidence interval from summed moments.
"""

from pi_lightning.functional.curves import (
    activation_coalitions,
    activation_gap,
    activation_order,
    activation_steps,
    curve_auc,
    interpolate_curve,
)
from pi_lightning.functional.removal import (
    comprehensiveness,
    log_odds,
    sufficiency,
    top_k_count,
    top_k_features,
)
from pi_lightning.functional.stats import mean_confidence_interval

__all__ = [
    "activation_coalitions",
    "activation_gap",
    "activation_order",
    "activation_steps",
    "comprehensiveness",
    "curve_auc",
    "interpolate_curve",
    "log_odds",
    "mean_confidence_interval",
    "sufficiency",
    "top_k_count",
    "top_k_features",
]
