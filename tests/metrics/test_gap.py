"""The paired AS - IAS gap (functional and Metric) and curves at fixed fractions of the features:
NumPy references, batch-split invariance, DDP sync (2 gloo processes), bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference import np_auc, np_ci, run_gloo

from pi_lightning.metrics import ActivationAUC, ActivationGap
from pi_lightning.metrics.functional import (
    activation_auc,
    activation_coalitions,
    activation_gap,
    activation_steps,
    interpolate_curve,
    mean_confidence_interval,
)


def paired_curves(seed, count=19):
    """AS and IAS curves of the same examples (equal lengths per example), values in [0, 1]."""
    g = np.random.default_rng(seed)
    lengths = g.integers(2, 30, size=count)
    return ([torch.tensor(g.random(m)) for m in lengths], [torch.tensor(g.random(m)) for m in lengths])


def np_steps(n, points):
    """Reference rounding: k = f * n rounded half up, f = j / (points - 1), with exact fractions."""
    from fractions import Fraction

    return sorted({int(Fraction(j * n, points - 1) + Fraction(1, 2)) for j in range(points)})


# ---------------------------------------------------------------- gap: functional and Metric


def test_gap_matches_numpy_and_interval_matches_scipy():
    a, b = paired_curves(0)
    ref = np.array([np_auc(p) - np_auc(q) for p, q in zip(a, b, strict=False)])
    gaps = activation_gap(a, b)
    np.testing.assert_allclose(gaps.numpy(), ref, rtol=0, atol=1e-12)
    m = ActivationGap()
    m.update(a, b)
    mean, half = np_ci(ref)
    assert float(m.compute()) == pytest.approx(mean, abs=1e-12)
    assert float(m.confidence_interval()) == pytest.approx(half, rel=1e-9)
    assert mean_confidence_interval(gaps) == pytest.approx((mean, half), rel=1e-9)
    # The paired interval is the spread of the differences: narrower than AS's own when AS and IAS
    # share a per-example offset (the model's confidence on that example).
    shifts = np.random.default_rng(1).random(len(a))
    offset = [torch.full_like(p, float(o)) for p, o in zip(a, shifts, strict=False)]
    a2 = [0.5 * p + o for p, o in zip(a, offset, strict=False)]
    b2 = [0.5 * q + o for q, o in zip(b, offset, strict=False)]
    auc, gap = ActivationAUC(), ActivationGap()
    auc.update(a2)
    gap.update(a2, b2)
    assert float(gap.confidence_interval()) < float(auc.confidence_interval())


def test_gap_with_positions_matches_numpy():
    a, b = paired_curves(2, count=7)
    xs = []
    for p in a:
        x = np.sort(np.random.default_rng(p.numel()).random(p.numel()))
        x[0], x[-1] = 0.0, 1.0
        xs.append(
            torch.tensor(np.unique(x)) if len(np.unique(x)) == p.numel() else torch.linspace(0, 1, p.numel())
        )
    ref = [np_auc(p, x) - np_auc(q, x) for p, q, x in zip(a, b, xs, strict=False)]
    np.testing.assert_allclose(activation_gap(a, b, xs).numpy(), ref, atol=1e-12)


def test_gap_batch_split_invariance_and_state_dict():
    a, b = paired_curves(3, count=25)
    one, five = ActivationGap(), ActivationGap()
    one.update(a, b)
    for chunk in np.array_split(np.arange(25), 5):
        five.update([a[i] for i in chunk], [b[i] for i in chunk])
    assert float(one.compute()) == pytest.approx(float(five.compute()), abs=1e-12)
    assert float(one.confidence_interval()) == pytest.approx(float(five.confidence_interval()), rel=1e-9)
    c = ActivationGap()
    c.load_state_dict(five.state_dict())
    assert float(c.compute()) == float(five.compute())


def test_random_attributions_have_zero_expected_gap():
    # Any curve scored by a random order: AS and IAS orders are exchangeable, so E[gap] = 0.
    g = torch.Generator().manual_seed(0)
    values = torch.rand(12, generator=g, dtype=torch.float64)  # per-feature effects of an additive game
    gaps = []
    for _ in range(400):
        s = torch.rand(12, generator=g)
        curve = [
            values[activation_coalitions(s, inverse=inv)[k]].sum() for inv in (False, True) for k in range(13)
        ]
        gaps.append(float(activation_gap(torch.stack(curve[:13]), torch.stack(curve[13:]))))
    mean, half = mean_confidence_interval(torch.tensor(gaps))
    assert abs(mean) < half  # 0 inside the 95% interval
    assert float(np.std(gaps)) > 0.1  # and the check is not vacuous


def test_gap_bad_input():
    a, b = paired_curves(4, count=3)
    with pytest.raises(ValueError, match="pair up"):
        activation_gap(a, b[:2])
    with pytest.raises(ValueError, match="pair up"):
        ActivationGap().update(a, [torch.rand(a[0].numel() + 1), b[1], b[2]])
    with pytest.raises(ValueError, match="x position"):
        activation_auc(a, [torch.linspace(0, 1, a[0].numel())])
    with pytest.raises(ValueError, match="increase strictly"):
        activation_auc(torch.rand(3), torch.tensor([0.0, 0.7, 0.5]))


# ---------------------------------------------------------------- DDP (2 CPU processes, gloo)


def _ddp_worker(rank):
    a, b = paired_curves(5, count=13)
    idx = list(range(9)) if rank == 0 else list(range(9, 13))  # uneven shards
    m = ActivationGap()
    m.update([a[i] for i in idx], [b[i] for i in idx])
    return torch.stack([m.compute(), m.confidence_interval(), m.count])


@pytest.mark.slow
def test_gap_ddp_sync_equals_single_process():
    a, b = paired_curves(5, count=13)
    ref = ActivationGap()
    ref.update(a, b)
    outs = run_gloo(_ddp_worker)
    for out in outs:
        assert float(out[0]) == pytest.approx(float(ref.compute()), abs=1e-12)
        assert float(out[1]) == pytest.approx(float(ref.confidence_interval()), rel=1e-9)
    assert [float(o[2]) for o in outs] == [9.0, 4.0]  # local states unsynced again after compute


# ---------------------------------------------------------------- fixed fractions


@pytest.mark.parametrize("n", [1, 2, 5, 9, 10, 11, 20, 37, 60, 513])
@pytest.mark.parametrize("points", [2, 5, 11, 21])
def test_activation_steps_reference(n, points):
    steps = activation_steps(n, points).tolist()
    assert steps == np_steps(n, points)
    assert steps[0] == 0 and steps[-1] == n and len(steps) <= points
    if n + 1 <= points:
        assert steps == list(range(n + 1))  # short texts get the exact curve


def test_activation_steps_rounding_and_errors():
    assert activation_steps(5, 3).tolist() == [0, 3, 5]  # 2.5 rounds up
    assert activation_steps(20, 11).tolist() == list(range(0, 21, 2))
    assert activation_steps(6).tolist() == list(range(7))
    for bad in (1, 0, True, 2.5, "11"):
        with pytest.raises(ValueError, match="points must be"):
            activation_steps(10, bad)
    with pytest.raises(ValueError, match="number of features"):
        activation_steps(0, 11)


def test_subsampled_curve_auc_and_grid_match_numpy():
    g = np.random.default_rng(6)
    c = g.random(41)  # an exact curve of n = 40 features
    steps = activation_steps(40, 11).numpy()
    x = steps / 40
    sub = torch.tensor(c[steps])
    assert float(activation_auc(sub, torch.tensor(x))) == pytest.approx(np_auc(c[steps], x), abs=1e-12)
    grid = np.linspace(0, 1, 21)
    np.testing.assert_allclose(
        interpolate_curve(sub, 21, torch.tensor(x)).numpy(), np.interp(grid, x, c[steps]), atol=1e-12
    )
    m_exact, m_sub = ActivationAUC(curve_points=21), ActivationAUC(curve_points=21)
    m_exact.update([torch.tensor(c)])
    m_sub.update([sub], [torch.tensor(x)])
    # On a grid that contains every evaluated x, the resampled mean curves agree at those points.
    np.testing.assert_allclose(m_sub.mean_curve()[1].numpy()[::2], c[steps], atol=1e-12)
    assert float(m_exact.compute()) == pytest.approx(np_auc(c), abs=1e-12)
