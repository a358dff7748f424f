"""UDIG's faithfulness metrics: log-odds, comprehensiveness and sufficiency at top-k% of features.

Definitions (as used by DIG and UDIG; ``y_hat`` = the predicted class of the unmasked input ``x``):

* log-odds = log p(y_hat | top-k masked) - log p(y_hat | x)        (lower is better)
* comprehensiveness = p(y_hat | x) - p(y_hat | top-k masked)       (higher is better)
* sufficiency = p(y_hat | x) - p(y_hat | only top-k kept)          (lower is better)

DIG/UDIG replace the top-k embeddings by the baseline token for log-odds and delete the tokens for
comprehensiveness and sufficiency. pi_lightning applies one masking function everywhere
(:class:`~pi_lightning.masking.Masker`: removal by default, or the paper's ``"..."`` with
``mask="..."``), so "replaced by the baseline" and "removed" both mean "masked with the Masker": log-odds
and comprehensiveness then read the same masked input.

**How many features are top-k.** ``floor(n * k / 100)`` as in DIG's code, but at least one: DIG's
truncation selects no feature in texts of fewer than ``100 / k`` features and then reports 0,
which would silently score short texts as neutral. Top-k is the head of the activation-study order
(most positive first, ties by position), so "only top-k kept" is the activation curve's point
``k``.

The functions take class probabilities, so they also serve as the one implementation behind the
Metric classes of :mod:`pi_lightning.metrics`.
"""

from __future__ import annotations

import math

import torch

from pi_lightning.metrics.functional.curves import activation_order

__all__ = ["comprehensiveness", "log_odds", "sufficiency", "top_k_count", "top_k_features"]


def check_top_k(top_k: float) -> float:
    """``top_k`` as a float, or a clear error (shared by the functional metrics and evaluate_faithfulness)."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or not 0.0 < float(top_k) <= 100.0:
        raise ValueError(
            f"top_k is a percentage of features and must lie in (0, 100], got {top_k!r}. "
            "Example: top_k=20.0 for the top 20% of features."
        )
    return float(top_k)


def top_k_count(n: int, top_k: float = 20.0) -> int:
    """Number of top features for a text of ``n`` features: ``max(1, floor(n * top_k / 100))``.

    Example:
        >>> top_k_count(12), top_k_count(3), top_k_count(10, 100)
        (2, 1, 10)
    """
    top_k = check_top_k(top_k)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of features) must be a positive int, got {n!r}.")
    # The small epsilon keeps exact products such as 15 * 20 / 100 = 3 from rounding down to 2.
    return min(n, max(1, math.floor(n * top_k / 100.0 + 1e-9)))


def top_k_features(scores: torch.Tensor, top_k: float = 20.0) -> torch.Tensor:
    """Indices of the top-k% features by attribution (most positive first, ties by position).

    Example:
        >>> top_k_features(torch.tensor([0.1, 0.9, 0.3, 0.3, -1.0]), top_k=40).tolist()
        [1, 2]
    """
    order = activation_order(scores)
    return order[: top_k_count(order.numel(), top_k)]


def _check_probs(
    probs: torch.Tensor, other: torch.Tensor, other_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(probs)
    q = torch.as_tensor(other)
    if p.shape != q.shape:
        raise ValueError(
            f"probs (unmasked input) and {other_name} must have the same shape (E, C) or (C,), got "
            f"{tuple(p.shape)} and {tuple(q.shape)}."
        )
    if p.dim() not in (1, 2) or p.shape[-1] < 1 or (p.dim() == 2 and p.shape[0] == 0):
        raise ValueError(
            f"Expected class probabilities of shape (E, C) or (C,) with E, C >= 1, got {tuple(p.shape)}."
        )
    p, q = p.detach().to(torch.float64), q.detach().to(torch.float64)
    for name, t in (("probs", p), (other_name, q)):
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"{name} must be probabilities in [0, 1] (apply softmax to logits first).")
    return p, q


def _at_prediction(probs: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``p(y_hat | x)`` and ``p'(y_hat)`` with ``y_hat = argmax probs``; shapes ``(E,)`` or 0-d."""
    y_hat = probs.argmax(-1, keepdim=True)
    return probs.gather(-1, y_hat).squeeze(-1), other.gather(-1, y_hat).squeeze(-1)


def log_odds(probs: torch.Tensor, probs_masked: torch.Tensor) -> torch.Tensor:
    """``log p(y_hat | top-k masked) - log p(y_hat | x)`` per example (lower is better).

    Args:
        probs: ``(E, C)`` (or ``(C,)``) class probabilities of the unmasked inputs.
        probs_masked: the same with the top-k features masked.

    Returns:
        float64 ``(E,)`` (0-d for one example). Probabilities are clamped at the smallest positive
        float64 before the log, so a zero probability gives a large finite value, not ``-inf``.

    Example:
        >>> round(float(log_odds(torch.tensor([0.2, 0.8]), torch.tensor([0.6, 0.4]))), 4)
        -0.6931
    """
    p, q = _at_prediction(*_check_probs(probs, probs_masked, "probs_masked"))
    tiny = torch.finfo(torch.float64).tiny
    return torch.log(q.clamp(min=tiny)) - torch.log(p.clamp(min=tiny))


def comprehensiveness(probs: torch.Tensor, probs_masked: torch.Tensor) -> torch.Tensor:
    """``p(y_hat | x) - p(y_hat | top-k masked)`` per example (higher is better).

    Example:
        >>> round(float(comprehensiveness(torch.tensor([0.2, 0.8]), torch.tensor([0.6, 0.4]))), 4)
        0.4
    """
    p, q = _at_prediction(*_check_probs(probs, probs_masked, "probs_masked"))
    return p - q


def sufficiency(probs: torch.Tensor, probs_kept: torch.Tensor) -> torch.Tensor:
    """``p(y_hat | x) - p(y_hat | only top-k kept)`` per example (lower is better).

    Example:
        >>> round(float(sufficiency(torch.tensor([0.2, 0.8]), torch.tensor([0.3, 0.7]))), 4)
        0.1
    """
    p, q = _at_prediction(*_check_probs(probs, probs_kept, "probs_kept"))
    return p - q
