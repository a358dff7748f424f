"""Faithfulness metrics as ``torchmetrics.Metric`` classes: summed states, DDP-safe, with a 95% CI.

Each class accumulates per-example values as three summed states (``count``, ``total``,
``total_sq``, all ``dist_reduce_fx="sum"``), so updating in any number of chunks, on any number of
processes, gives the same result. ``compute()`` returns the mean; :meth:`confidence_interval`
returns the half-width of its Student-t interval (the paper's Tables 5-6 report "mean +- 95% CI").
These classes are the streaming, DDP-synced form of the one aggregation math
(:func:`~pi_lightning.metrics.functional.stats.interval_from_moments` on summed moments), for a loop
of one's own; :class:`~pi_lightning.metrics.ProbeEvaluator` and :meth:`FaithfulnessResult.summary
<pi_lightning.metrics.FaithfulnessResult.summary>` apply the same math to the per-example values they
hold (this module imports :mod:`~pi_lightning.metrics.evaluation`, never the reverse).

The per-example math lives in :mod:`pi_lightning.metrics.functional`, one twin per class
(:class:`ActivationAUC` and :func:`~pi_lightning.metrics.functional.activation_auc`, ...). The
classes never hold the model. Each is updated either from a
:class:`~pi_lightning.metrics.FaithfulnessResult` directly, reading the per-example values
:func:`~pi_lightning.metrics.evaluate_faithfulness` already computed (nothing is computed twice),
or from raw curves / class probabilities through its functional twin::

    res = evaluate_faithfulness(attributions, adapter, masker)
    for metric in (as_auc, gap, log_odds, sufficiency):
        metric.update(res)
    as_auc.update(curves, x)          # raw inputs: the functional twin computes the values

:data:`METRIC_CLASSES` maps each :class:`FaithfulnessResult` field to its class.

The curve metrics can also keep the mean curve for plotting: curves have ``n + 1`` points for
texts of ``n`` features, so each is resampled on a fixed grid of ``curve_points`` values of
``x`` in ``[0, 1]`` and the resampled curves are summed (another summed state).

:class:`ActivationGap` is the headline figure: the per-example AS - IAS gap, whose mean and
confidence interval come from the same three summed states. Subtracting two areas of the same
example cancels the example's own confidence, so its interval is much narrower than either AUC's
(and it needs no extra pass). Random attributions have gap 0 in expectation.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from pi_lightning.metrics.evaluation import FaithfulnessResult
from pi_lightning.metrics.functional.curves import (
    activation_auc,
    activation_gap,
    interpolate_curve,
    inverse_activation_auc,
)
from pi_lightning.metrics.functional.removal import comprehensiveness, log_odds, sufficiency
from pi_lightning.metrics.functional.stats import interval_from_moments, moments

__all__ = [
    "METRIC_CLASSES",
    "ActivationAUC",
    "ActivationGap",
    "Comprehensiveness",
    "InverseActivationAUC",
    "LogOdds",
    "Sufficiency",
]


class _MeanWithInterval(Metric):
    """Mean of per-example values with a confidence interval, from summed moments."""

    is_differentiable = False
    full_state_update = False
    #: The :class:`FaithfulnessResult` field holding this metric's per-example values.
    field: str = ""

    def __init__(self, confidence: float = 0.95, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be a float in (0, 1), e.g. 0.95, got {confidence!r}.")
        self.confidence = confidence
        zero = torch.tensor(0.0, dtype=torch.float64)
        for name in ("count", "total", "total_sq"):
            self.add_state(name, default=zero.clone(), dist_reduce_fx="sum", persistent=True)

    def _values_of(self, result: FaithfulnessResult) -> torch.Tensor:
        """The per-example values ``evaluate_faithfulness`` computed for this metric."""
        values = getattr(result, self.field)
        if values is None:
            needed = "both 'as_auc' and 'ias_auc'" if self.field == "gap" else repr(self.field)
            raise ValueError(
                f"{type(self).__name__} reads {self.field!r} from the FaithfulnessResult, which has none: "
                f"run evaluate_faithfulness with metrics including {needed} (or metrics=None for all)."
            )
        return values

    def _add_values(self, values: torch.Tensor) -> None:
        count, total, total_sq = moments(values).to(self.total.device).unbind(0)
        self.count += count
        self.total += total
        self.total_sq += total_sq

    def compute(self) -> torch.Tensor:
        """Mean over all examples seen (NaN before any update), float64 0-d."""
        return (
            self.total / self.count
            if float(self.count) > 0
            else torch.tensor(float("nan"), dtype=torch.float64, device=self.total.device)
        )

    def confidence_interval(self) -> torch.Tensor:
        """Half-width of the ``confidence`` (default 95%) interval of the mean, synced across processes.

        NaN with fewer than two examples.
        """
        with self.sync_context(should_sync=self.sync_on_compute):
            _, half = interval_from_moments(
                float(self.count), float(self.total), float(self.total_sq), self.confidence
            )
        return torch.tensor(half, dtype=torch.float64, device=self.total.device)


class _CurveAUC(_MeanWithInterval):
    """Mean area under activation curves (``x = k / n`` in ``[0, 1]``), optional mean curve."""

    def __init__(self, curve_points: int | None = None, confidence: float = 0.95, **kwargs) -> None:
        super().__init__(confidence=confidence, **kwargs)
        if curve_points is not None and (
            isinstance(curve_points, bool) or not isinstance(curve_points, int) or curve_points < 2
        ):
            raise ValueError(
                f"curve_points must be None or an int >= 2 (grid points in [0, 1]), got {curve_points!r}."
            )
        self.curve_points = curve_points
        if curve_points is not None:
            self.add_state(
                "curve_sum",
                default=torch.zeros(curve_points, dtype=torch.float64),
                dist_reduce_fx="sum",
                persistent=True,
            )

    _fn = staticmethod(activation_auc)
    #: The :class:`FaithfulnessResult` field holding the curves themselves.
    curves_field: str = ""

    def update(self, curves, x=None) -> None:
        """Add examples: a :class:`~pi_lightning.metrics.FaithfulnessResult`, or raw curves.

        Args:
            curves: a ``FaithfulnessResult`` (its per-example AUCs are used as computed, and its
                curves for the mean curve), or curves: one ``(n+1,)``, a batch ``(E, n+1)``, or a list
                of curves of any lengths, each the probability of the explained class after
                ``k = 0..n`` features.
            x: with raw curves, the positions ``k / n`` of curves evaluated at fixed fractions only
                (see :func:`~pi_lightning.metrics.functional.activation_steps`).
        """
        if isinstance(curves, FaithfulnessResult):
            if x is not None:
                raise ValueError("x comes with the FaithfulnessResult (its curve_x); do not pass it as well.")
            result = curves
            aucs = self._values_of(result)
            curves, x = getattr(result, self.curves_field), result.curve_x
        else:
            aucs = type(self)._fn(curves, x)
        self._add_values(aucs)
        if self.curve_points is not None:
            grid = interpolate_curve(curves, self.curve_points, x)
            # (G,) or (E, G) -> (E, G): one row per curve.
            self.curve_sum += grid.reshape(-1, self.curve_points).sum(0).to(self.curve_sum.device)

    def mean_curve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: the grid ``x`` in ``[0, 1]`` and the mean resampled curve, synced across processes."""
        if self.curve_points is None:
            raise RuntimeError(
                f"{type(self).__name__} keeps no mean curve; construct it with curve_points=21 (for example)."
            )
        with self.sync_context(should_sync=self.sync_on_compute):
            y = self.curve_sum / self.count
        x = torch.linspace(0.0, 1.0, self.curve_points, dtype=torch.float64, device=y.device)
        return x, y


class ActivationAUC(_CurveAUC):
    """Mean AUC of the activation study (most positive feature first); higher is better.

    Args:
        curve_points: if set, also keep the mean curve on this many grid points (see :meth:`mean_curve`).
        confidence: level of :meth:`confidence_interval`.
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> m = ActivationAUC()
        >>> m.update([torch.tensor([0.2, 0.9, 1.0]), torch.tensor([0.4, 0.8])])
        >>> round(float(m.compute()), 4)
        0.675
    """

    higher_is_better = True
    field = "as_auc"
    curves_field = "as_curves"


class InverseActivationAUC(_CurveAUC):
    """Mean AUC of the inverse activation study (most negative feature first); lower is better.

    Args: as :class:`ActivationAUC`.

    Example:
        >>> m = InverseActivationAUC()
        >>> m.update(torch.tensor([[0.6, 0.1, 0.3]]))
        >>> round(float(m.compute()), 4)
        0.275
    """

    higher_is_better = False
    field = "ias_auc"
    curves_field = "ias_curves"
    _fn = staticmethod(inverse_activation_auc)


class ActivationGap(_MeanWithInterval):
    """Mean per-example AS - IAS gap with its confidence interval; higher is better, 0 for random.

    ``update(result)`` takes a :class:`~pi_lightning.metrics.FaithfulnessResult` (its ``gap``), and
    ``update(as_curves, ias_curves, x=None)`` both studies' curves of the same examples (as
    :class:`ActivationAUC`); each example contributes ``AUC_AS - AUC_IAS``
    (:func:`~pi_lightning.metrics.functional.activation_gap`). :meth:`confidence_interval` is the paired
    interval: the spread of the differences, not of either AUC.

    Args:
        confidence: level of :meth:`confidence_interval`.
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> m = ActivationGap()
        >>> m.update([torch.tensor([0.2, 0.9, 1.0]), torch.tensor([0.4, 0.8])],
        ...          [torch.tensor([0.2, 0.1, 1.0]), torch.tensor([0.4, 0.8])])
        >>> round(float(m.compute()), 4), round(float(m.confidence_interval()), 3)
        (0.2, 2.541)
    """

    higher_is_better = True
    field = "gap"

    def update(self, as_curves, ias_curves=None, x=None) -> None:
        """Add examples: a ``FaithfulnessResult``, or their AS curves, their IAS curves (same order, same
        lengths) and optional positions."""
        if isinstance(as_curves, FaithfulnessResult):
            if ias_curves is not None or x is not None:
                raise ValueError("update(result) takes the FaithfulnessResult alone (its curves are inside).")
            self._add_values(self._values_of(as_curves))
            return
        if ias_curves is None:
            raise ValueError(
                "ActivationGap.update needs the IAS curves too: update(as_curves, ias_curves, x)."
            )
        self._add_values(activation_gap(as_curves, ias_curves, x))


class _RemovalMetric(_MeanWithInterval):
    _fn = staticmethod(log_odds)

    def update(self, probs, probs_perturbed: torch.Tensor | None = None) -> None:
        """Add examples: a ``FaithfulnessResult`` (its per-example values, as computed), or class
        probabilities ``(E, C)`` of the unmasked and of the perturbed inputs."""
        if isinstance(probs, FaithfulnessResult):
            if probs_perturbed is not None:
                raise ValueError(
                    "update(result) takes the FaithfulnessResult alone (its probabilities are inside)."
                )
            self._add_values(self._values_of(probs))
            return
        if probs_perturbed is None:
            raise ValueError(
                f"{type(self).__name__}.update needs the probabilities of the perturbed inputs too: "
                "update(probs, probs_perturbed)."
            )
        self._add_values(type(self)._fn(probs, probs_perturbed))


class LogOdds(_RemovalMetric):
    """Mean log-odds: ``log p(y_hat | top-k masked) - log p(y_hat | x)``; lower is better.

    ``update(result)`` with a :class:`~pi_lightning.metrics.FaithfulnessResult`, or
    ``update(probs, probs_masked)`` with ``(E, C)`` class probabilities of the unmasked inputs and of
    the inputs with their top-k features masked.

    Example:
        >>> m = LogOdds()
        >>> m.update(torch.tensor([[0.2, 0.8]]), torch.tensor([[0.6, 0.4]]))
        >>> round(float(m.compute()), 4)
        -0.6931
    """

    higher_is_better = False
    field = "log_odds"
    _fn = staticmethod(log_odds)


class Comprehensiveness(_RemovalMetric):
    """Mean comprehensiveness: ``p(y_hat | x) - p(y_hat | top-k masked)``; higher is better.

    ``update(probs, probs_masked)`` as :class:`LogOdds`, or ``update(result)``.

    Example:
        >>> m = Comprehensiveness()
        >>> m.update(torch.tensor([[0.2, 0.8]]), torch.tensor([[0.6, 0.4]]))
        >>> round(float(m.compute()), 4)
        0.4
    """

    higher_is_better = True
    field = "comprehensiveness"
    _fn = staticmethod(comprehensiveness)


class Sufficiency(_RemovalMetric):
    """Mean sufficiency: ``p(y_hat | x) - p(y_hat | only top-k kept)``; lower is better.

    ``update(probs, probs_kept)`` with the probabilities of the inputs that keep only their top-k
    features, or ``update(result)``.

    Example:
        >>> m = Sufficiency()
        >>> m.update(torch.tensor([[0.2, 0.8]]), torch.tensor([[0.3, 0.7]]))
        >>> round(float(m.compute()), 4)
        0.1
    """

    higher_is_better = False
    field = "sufficiency"
    _fn = staticmethod(sufficiency)


#: Each :class:`FaithfulnessResult` field of per-example values and the Metric class that averages it.
METRIC_CLASSES: dict[str, type[_MeanWithInterval]] = {
    cls.field: cls
    for cls in (ActivationAUC, InverseActivationAUC, LogOdds, Comprehensiveness, Sufficiency, ActivationGap)
}
