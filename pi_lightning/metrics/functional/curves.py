"""Activation / inverse-activation curves: feature orderings, their coalitions, AUC and a fixed grid.

The Progressive Inference paper (section 4.1) scores an attribution by *activating* features one
at a time: start from the fully masked input (only the fixed context present), add features in
the order the attribution ranks them, and record the probability of the explained class after
each step. That gives ``n + 1`` points for a text of ``n`` features. The activation study (AS)
adds the most positive feature first (a high area is good); the inverse activation study (IAS)
adds the most negative first (a low area is good).

**x normalisation.** Step ``k`` (``k`` features active) is placed at ``x = k / n``, so every curve
spans ``[0, 1]`` whatever its length, and its area (trapezoid rule) is a probability-weighted
fraction in ``[0, 1]``. Examples of different lengths therefore average with equal weight, which
is what makes the paper's mean AUCs (e.g. 0.946) comparable across texts.

**Ties** are broken deterministically by position: among equal scores the earlier feature is
activated first, in both studies (a stable sort).

**Fixed fractions (cheaper curves).** The exact curve costs ``n + 1`` masked passes per study.
:func:`activation_steps` with ``points=P`` evaluates it at ``P`` fractions ``f = 0, 1/(P-1), ..., 1``
of the features only: step ``k = floor(f * n + 1/2)`` (round half up, so ``f = 0.5`` of 5 features
activates 3), duplicates dropped, so ``k = 0`` and ``k = n`` are always kept and texts with
``n + 1 <= P`` features get the exact curve. Each point is placed at its true ``x = k / n`` and the
area is the trapezoid rule over those points (:func:`activation_auc` with ``x``), i.e. the exact curve
linearly interpolated between evaluated steps. Measured on SmolLM2 Rotten Tomatoes sentences (see
``benchmarks/results/RESULTS.md``): with 11 points the per-example AUC error is small against the
spread of AUCs between examples, and AS - IAS gaps keep their sign.

**The AS - IAS gap** (:func:`activation_gap`): per example, the AS AUC minus the IAS AUC of the
same attribution. Both areas share the example's confidence (which dominates each AUC alone), so
their difference cancels most of it and is the best-powered single faithfulness figure; random
attributions score 0 in expectation, whatever the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "activation_auc",
    "activation_coalitions",
    "activation_gap",
    "activation_order",
    "activation_steps",
    "interpolate_curve",
    "inverse_activation_auc",
]


def _as_scores(scores) -> torch.Tensor:
    s = torch.as_tensor(scores)
    if s.dim() != 1 or s.numel() == 0:
        raise ValueError(
            f"Expected attribution scores as a non-empty 1-D tensor (one score per feature), got shape "
            f"{tuple(s.shape)}."
        )
    if s.is_floating_point() and not bool(torch.isfinite(s).all()):
        raise ValueError("Attribution scores contain NaN or infinity; the features cannot be ordered.")
    return s


def activation_order(scores: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """The order in which features are activated.

    Args:
        scores: ``(n,)`` attribution scores.
        inverse: ``False`` for the activation study (most positive first), ``True`` for the
            inverse activation study (most negative first).

    Returns:
        ``(n,)`` long tensor of feature indices; equal scores keep their positional order.

    Example:
        >>> activation_order(torch.tensor([0.1, 0.5, 0.1, -0.2])).tolist()
        [1, 0, 2, 3]
        >>> activation_order(torch.tensor([0.1, 0.5, 0.1, -0.2]), inverse=True).tolist()
        [3, 0, 2, 1]
    """
    s = _as_scores(scores)
    return torch.sort(s.cpu(), descending=not inverse, stable=True).indices


def check_points(points) -> int | None:
    """``points`` of a curve (None: exact; an int >= 2: fixed fractions), or a clear error (shared by
    the curve functions, evaluate_faithfulness and AttributionMonitor)."""
    if points is not None and (isinstance(points, bool) or not isinstance(points, int) or points < 2):
        raise ValueError(
            f"points must be None (every step, the exact curve) or an int >= 2 (fixed fractions of the "
            f"features, e.g. 11 for x = 0, 0.1, ..., 1), got {points!r}."
        )
    return points


def activation_steps(n: int, points: int | None = None) -> torch.Tensor:
    """The activation steps ``k`` (numbers of active features) at which a curve is evaluated.

    Args:
        n: number of features (``>= 1``).
        points: ``None`` for every step ``0..n`` (the exact curve), or the number of fixed fractions
            ``f = j / (points - 1)``; step ``k = floor(f * n + 1/2)``, duplicates dropped.

    Returns:
        ``(m,)`` long tensor of increasing steps, starting at 0 and ending at ``n``.

    Example:
        >>> activation_steps(4).tolist()
        [0, 1, 2, 3, 4]
        >>> activation_steps(25, points=5).tolist()
        [0, 6, 13, 19, 25]
        >>> activation_steps(2, points=11).tolist()
        [0, 1, 2]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n is the number of features and must be an int >= 1, got {n!r}.")
    if check_points(points) is None:
        return torch.arange(n + 1)
    # Exact rational arithmetic: f * n = j * n / (points - 1), rounded half up.
    j = torch.arange(points)
    k = torch.div(2 * j * n + (points - 1), 2 * (points - 1), rounding_mode="floor")
    return torch.unique(k)


def activation_coalitions(
    scores: torch.Tensor, inverse: bool = False, steps: torch.Tensor | None = None
) -> torch.Tensor:
    """Coalitions of the activation study: row ``k`` has the first ``k`` features of the order active.

    Args:
        scores: ``(n,)`` attribution scores.
        inverse: see :func:`activation_order`.
        steps: the steps to build (e.g. :func:`activation_steps` with ``points``); default all ``0..n``.

    Returns:
        ``(len(steps), n)`` bool tensor (``(n + 1, n)`` by default); row 0 is the fully masked input,
        the last row the full input.

    Example:
        >>> activation_coalitions(torch.tensor([0.2, 0.9])).int().tolist()
        [[0, 0], [0, 1], [1, 1]]
        >>> scores = torch.tensor([0.2, 0.9, 0.5, 0.1])
        >>> activation_coalitions(scores, steps=torch.tensor([0, 2, 4])).int().tolist()
        [[0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]]
    """
    order = activation_order(scores, inverse)
    n = order.numel()
    steps = torch.arange(n + 1) if steps is None else torch.as_tensor(steps, dtype=torch.long).cpu()
    # rank[i] = step at which feature i is activated (1-based); row k holds features with rank <= k.
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(1, n + 1)
    return rank.unsqueeze(0) <= steps.unsqueeze(1)


def _as_curves(curves) -> tuple[list[torch.Tensor], bool]:
    """Normalise curves to a list of float64 1-D tensors; also says whether a single curve was given."""
    if isinstance(curves, torch.Tensor):
        if curves.dim() == 1:
            seq, single = [curves], True
        elif curves.dim() == 2:
            seq, single = list(curves.unbind(0)), False
        else:
            raise ValueError(
                f"Expected a curve (n+1,), a batch of equal-length curves (E, n+1) or a list of curves, "
                f"got a tensor of shape {tuple(curves.shape)}."
            )
    elif isinstance(curves, Sequence) and not isinstance(curves, (str, bytes)):
        seq, single = [torch.as_tensor(c) for c in curves], False
    else:
        raise TypeError(f"Expected curves as a tensor or a list of tensors, got {type(curves).__name__}.")
    if not seq:
        raise ValueError("Got no curves: pass at least one curve of n+1 >= 2 points.")
    out = []
    for i, c in enumerate(seq):
        if c.dim() != 1 or c.numel() < 2:
            raise ValueError(
                f"Curve {i} has shape {tuple(c.shape)}: a curve needs n+1 >= 2 points (the fully masked "
                "input and at least one feature added). Empty curves cannot be scored."
            )
        c = c.detach().to(torch.float64)
        if not bool(torch.isfinite(c).all()):
            raise ValueError(f"Curve {i} contains NaN or infinity.")
        out.append(c)
    return out, single


def _as_positions(x, seq: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-curve ``x`` positions: ``k / n`` by default, else checked against the curves."""
    if x is None:
        return [torch.linspace(0.0, 1.0, c.numel(), dtype=torch.float64) for c in seq]
    xs, _ = _as_curves(x)
    if len(xs) != len(seq):
        raise ValueError(f"Got {len(seq)} curves but {len(xs)} x position vectors: give one per curve.")
    for i, (c, p) in enumerate(zip(seq, xs, strict=False)):
        if p.shape != c.shape:
            raise ValueError(f"Curve {i} has {c.numel()} points but its x has {p.numel()}: they must match.")
        if float(p[0]) != 0.0 or float(p[-1]) != 1.0 or not bool((p[1:] > p[:-1]).all()):
            raise ValueError(
                f"x of curve {i} must increase strictly from 0 to 1 (the fractions k / n of active "
                "features), "
                f"got {p.tolist()}."
            )
    return xs


def _curve_auc(curves, x=None) -> torch.Tensor:
    """Trapezoid areas of curves at ``x`` (default ``k / n``): a 0-d tensor for one curve, else ``(E,)``."""
    seq, single = _as_curves(curves)
    if x is None:
        areas = torch.stack([torch.trapezoid(c, dx=1.0 / (c.numel() - 1)) for c in seq])
    else:
        areas = torch.stack([torch.trapezoid(c, p) for c, p in zip(seq, _as_positions(x, seq), strict=False)])
    return areas[0] if single else areas


def activation_auc(curves, x=None) -> torch.Tensor:
    """Per-example area under activation-study curves, ``x = k / n`` in ``[0, 1]`` (trapezoid rule).

    The functional twin of :class:`~pi_lightning.metrics.ActivationAUC`, whose ``compute()`` is the
    mean of these values. Higher is better.

    Args:
        curves: one curve ``(n+1,)``, a batch ``(E, n+1)``, or a list of curves of any lengths; each
            holds the probability of the explained class after ``k`` features were activated, most
            positive first.
        x: the curves' positions, same structure (for curves evaluated at fixed fractions only, see
            :func:`activation_steps`); default: evenly spaced ``k / n``, every step evaluated.

    Returns:
        float64: a 0-d tensor for one curve, else ``(E,)``.

    Example:
        >>> float(activation_auc(torch.tensor([0.0, 1.0, 1.0])))
        0.75
        >>> activation_auc([torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])]).tolist()
        [0.5, 1.0]
        >>> float(activation_auc(torch.tensor([0.0, 1.0, 1.0]), x=torch.tensor([0.0, 0.25, 1.0])))
        0.875
    """
    return _curve_auc(curves, x)


def inverse_activation_auc(curves, x=None) -> torch.Tensor:
    """Per-example area under inverse-activation-study curves (most negative feature first).

    The functional twin of :class:`~pi_lightning.metrics.InverseActivationAUC`: the same area as
    :func:`activation_auc`, of the curves of the inverse order (:func:`activation_order` with
    ``inverse=True``). Lower is better.

    Args:
        curves, x: as :func:`activation_auc`.

    Returns:
        float64: a 0-d tensor for one curve, else ``(E,)``.

    Example:
        >>> round(float(inverse_activation_auc(torch.tensor([0.6, 0.1, 0.3]))), 4)
        0.275
    """
    return _curve_auc(curves, x)


def activation_gap(as_curves, ias_curves, x=None) -> torch.Tensor:
    """Per-example AS - IAS gap: the activation AUC minus the inverse activation AUC of each example.

    Higher is better (0 in expectation for random attributions). The mean of the gaps and its
    confidence interval (:func:`~pi_lightning.metrics.functional.mean_confidence_interval`) are the paired
    headline figure of :class:`~pi_lightning.metrics.ActivationGap`.

    Args:
        as_curves, ias_curves: the two studies' curves of the same examples (as :func:`activation_auc`).
        x: positions shared by both studies (one per example), as in :func:`activation_auc`.

    Returns:
        float64: a 0-d tensor for one example, else ``(E,)``.

    Example:
        >>> round(float(activation_gap(torch.tensor([0.2, 0.9, 1.0]), torch.tensor([0.2, 0.1, 1.0]))), 4)
        0.4
    """
    a, b = _as_curves(as_curves)[0], _as_curves(ias_curves)[0]
    if len(a) != len(b) or any(p.numel() != q.numel() for p, q in zip(a, b, strict=False)):
        raise ValueError(
            f"AS and IAS curves must pair up example by example (same count, same length each); got "
            f"{[p.numel() for p in a]} and {[q.numel() for q in b]} points."
        )
    return activation_auc(as_curves, x) - inverse_activation_auc(ias_curves, x)


def interpolate_curve(curves, num_points: int = 21, x=None) -> torch.Tensor:
    """Curves resampled at ``num_points`` evenly spaced ``x`` in ``[0, 1]`` (linear interpolation).

    Curves of different lengths (``n + 1`` points at ``x = k / n``) become comparable, so they can be
    averaged into one mean curve for plotting.

    Args:
        curves: one curve ``(n+1,)``, a batch ``(E, n+1)``, or a list of curves of any lengths.
        num_points: grid size (``>= 2``); the grid is ``torch.linspace(0, 1, num_points)``.
        x: the curves' positions (as in :func:`activation_auc`); default evenly spaced.

    Returns:
        float64 ``(num_points,)`` for one curve, else ``(E, num_points)``.

    Example:
        >>> interpolate_curve(torch.tensor([0.0, 1.0]), num_points=5).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2 (grid points in [0, 1]), got {num_points!r}.")
    seq, single = _as_curves(curves)
    grid = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)
    rows = []
    for c, p in zip(seq, _as_positions(x, seq), strict=False):
        # Segment of each grid value: left index in 0..m-2 with p[left] <= g <= p[left + 1].
        left = (torch.searchsorted(p, grid, right=True) - 1).clamp(0, c.numel() - 2)
        frac = (grid - p[left]) / (p[left + 1] - p[left])
        rows.append(c[left] * (1.0 - frac) + c[left + 1] * frac)
    out = torch.stack(rows)
    return out[0] if single else out
