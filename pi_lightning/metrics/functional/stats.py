"""Mean and confidence interval of per-example metric values, from summed moments.

The metric classes keep only ``count``, ``sum`` and ``sum of squares`` (states that add up across
batches and processes), so the interval is computed from those three numbers, here, once: the
Student-t interval of the mean, ``t_{(1+c)/2, N-1} * s / sqrt(N)`` with the sample standard
deviation ``s``, as reported by the paper's Tables 5-6 (95%, "mean AUC +- half-width").
"""

from __future__ import annotations

import math

import torch
from scipy import stats

__all__ = ["interval_from_moments", "mean_confidence_interval", "moments", "wilson_interval"]


def moments(values: torch.Tensor) -> torch.Tensor:
    """``(count, sum, sum of squares)`` of 1-D values, float64 ``(3,)``."""
    # (...) -> (N,): every value counts once.
    v = torch.as_tensor(values).detach().to(torch.float64).reshape(-1)
    return torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64), v.sum(), (v * v).sum()])


def interval_from_moments(
    count: float, total: float, total_sq: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and confidence half-width from ``count``, ``sum`` and ``sum of squares``.

    Returns ``(nan, nan)`` with no values and ``(mean, nan)`` with one (no spread to estimate).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95, got {confidence!r}.")
    count, total, total_sq = float(count), float(total), float(total_sq)
    if count < 1:
        return math.nan, math.nan
    mean = total / count
    if count < 2:
        return mean, math.nan
    var = max(total_sq - total * total / count, 0.0) / (count - 1.0)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, count - 1.0)) * math.sqrt(var / count)
    return mean, half


def mean_confidence_interval(values: torch.Tensor, confidence: float = 0.95) -> tuple[float, float]:
    """Mean of per-example values and the half-width of its Student-t confidence interval.

    Example:
        >>> m, h = mean_confidence_interval(torch.tensor([0.5, 0.7, 0.9]))
        >>> round(m, 3), round(h, 3)
        (0.7, 0.497)
    """
    count, total, total_sq = moments(values).tolist()
    return interval_from_moments(count, total, total_sq, confidence)


def wilson_interval(accuracy: float, count: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of an accuracy measured on ``count`` examples.

    Example:
        >>> tuple(round(v, 3) for v in wilson_interval(0.78, 64))
        (0.664, 0.864)
    """
    if count < 1:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    n, p = float(count), float(accuracy)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)
