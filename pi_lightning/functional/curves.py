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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["activation_coalitions", "activation_order", "curve_auc", "interpolate_curve"]


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


def activation_coalitions(scores: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Coalitions of the activation study: row ``k`` has the first ``k`` features of the order active.

    Args:
        scores: ``(n,)`` attribution scores.
        inverse: see :func:`activation_order`.

    Returns:
        ``(n + 1, n)`` bool tensor; row 0 is the fully masked input, row ``n`` the full input.

    Example:
        >>> activation_coalitions(torch.tensor([0.2, 0.9])).int().tolist()
        [[0, 0], [0, 1], [1, 1]]
    """
    order = activation_order(scores, inverse)
    n = order.numel()
    # rank[i] = step at which feature i is activated (1-based); row k holds features with rank <= k.
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(1, n + 1)
    return rank.unsqueeze(0) <= torch.arange(n + 1).unsqueeze(1)


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


def curve_auc(curves) -> torch.Tensor:
    """Area under activation curves, with ``x = k / n`` in ``[0, 1]`` (trapezoid rule).

    Args:
        curves: one curve ``(n+1,)``, a batch ``(E, n+1)``, or a list of curves of any lengths.

    Returns:
        float64: a 0-d tensor for one curve, else ``(E,)``.

    Example:
        >>> float(curve_auc(torch.tensor([0.0, 1.0, 1.0])))
        0.75
        >>> curve_auc([torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])]).tolist()
        [0.5, 1.0]
    """
    seq, single = _as_curves(curves)
    areas = torch.stack([torch.trapezoid(c, dx=1.0 / (c.numel() - 1)) for c in seq])
    return areas[0] if single else areas


def interpolate_curve(curves, num_points: int = 21) -> torch.Tensor:
    """Curves resampled at ``num_points`` evenly spaced ``x`` in ``[0, 1]`` (linear interpolation).

    Curves of different lengths (``n + 1`` points at ``x = k / n``) become comparable, so they can be
    averaged into one mean curve for plotting.

    Args:
        curves: one curve ``(n+1,)``, a batch ``(E, n+1)``, or a list of curves of any lengths.
        num_points: grid size (``>= 2``); the grid is ``torch.linspace(0, 1, num_points)``.

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
    for c in seq:
        n = c.numel() - 1
        pos = grid * n
        left = pos.floor().long().clamp(max=n - 1)
        frac = pos - left
        rows.append(c[left] * (1.0 - frac) + c[left + 1] * frac)
    out = torch.stack(rows)
    return out[0] if single else out
