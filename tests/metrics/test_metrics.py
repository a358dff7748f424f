"""Faithfulness math and Metric classes against NumPy/SciPy references; functional twins; chunking,
state_dict, DDP, bad input."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from _reference import np_auc, np_ci, run_gloo

from pi_lightning.metrics import (
    METRIC_CLASSES,
    ActivationAUC,
    ActivationGap,
    Comprehensiveness,
    InverseActivationAUC,
    LogOdds,
    Sufficiency,
)
from pi_lightning.metrics import functional as F
from pi_lightning.metrics.functional import (
    activation_auc,
    activation_coalitions,
    activation_order,
    comprehensiveness,
    interpolate_curve,
    log_odds,
    mean_confidence_interval,
    sufficiency,
    top_k_count,
    top_k_features,
)

# ---------------------------------------------------------------- NumPy references


def np_order(s, inverse=False):
    s = np.asarray(s, dtype=float)
    return np.argsort(s if inverse else -s, kind="stable")


def np_grid(c, g=21):
    c = np.asarray(c, dtype=float)
    return np.interp(np.linspace(0, 1, g), np.linspace(0, 1, len(c)), c)


def np_topk(s, k):
    n = len(s)
    return np_order(s)[: max(1, int(np.floor(n * k / 100 + 1e-9)))]


def np_removal(p, q, kind):
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    y = p.argmax(-1)
    a, b = p[np.arange(len(p)), y], q[np.arange(len(q)), y]
    return {"log_odds": np.log(b) - np.log(a), "comp": a - b, "suff": a - b}[kind]


def random_curves(seed, count=23):
    g = np.random.default_rng(seed)
    return [torch.tensor(g.random(int(g.integers(2, 15)))) for _ in range(count)]


def random_probs(seed, count=17, classes=3):
    g = np.random.default_rng(seed)
    p = torch.softmax(torch.tensor(g.normal(size=(count, classes)) * 2), -1)
    q = torch.softmax(torch.tensor(g.normal(size=(count, classes)) * 2), -1)
    return p, q


# ---------------------------------------------------------------- functional vs references


def test_order_and_coalitions_match_reference_with_ties():
    g = np.random.default_rng(0)
    for _ in range(20):
        s = g.integers(-2, 3, size=int(g.integers(1, 12))).astype(float)  # many ties
        for inv in (False, True):
            order = activation_order(torch.tensor(s), inverse=inv)
            assert order.tolist() == np_order(s, inv).tolist()
            z = activation_coalitions(torch.tensor(s), inverse=inv).numpy()
            ref = np.zeros((len(s) + 1, len(s)), dtype=bool)
            for k in range(1, len(s) + 1):
                ref[k:, np_order(s, inv)[k - 1]] = True
            assert (z == ref).all()


def test_ties_broken_by_position_in_both_studies():
    s = torch.tensor([1.0, 1.0, 0.0, 1.0])
    assert activation_order(s).tolist() == [0, 1, 3, 2]
    assert activation_order(s, inverse=True).tolist() == [2, 0, 1, 3]


def test_auc_and_grid_match_numpy():
    curves = random_curves(1)
    aucs = activation_auc(curves)
    assert aucs.dtype == torch.float64
    np.testing.assert_allclose(aucs.numpy(), [np_auc(c) for c in curves], rtol=0, atol=1e-12)
    assert float(activation_auc(curves[0])) == pytest.approx(np_auc(curves[0]), abs=1e-12)
    same = torch.rand(4, 7, dtype=torch.float64)
    np.testing.assert_allclose(activation_auc(same).numpy(), [np_auc(c) for c in same], atol=1e-12)
    grid = interpolate_curve(curves, 21)
    np.testing.assert_allclose(grid.numpy(), np.stack([np_grid(c) for c in curves]), atol=1e-12)


def test_auc_length_normalisation():
    # A constant curve has its value as area whatever its length; a step 0 -> 1 after the first of n.
    for n in (1, 2, 9):
        assert float(activation_auc(torch.full((n + 1,), 0.3))) == pytest.approx(0.3)
        step = torch.ones(n + 1)
        step[0] = 0
        assert float(activation_auc(step)) == pytest.approx(1 - 0.5 / n)


def test_topk_matches_reference():
    g = np.random.default_rng(2)
    for n in (1, 3, 4, 5, 10, 15, 37):
        for k in (1.0, 20.0, 33.3, 50, 100):
            s = g.integers(-3, 4, size=n).astype(float)
            assert top_k_features(torch.tensor(s), k).tolist() == np_topk(s, k).tolist()
    assert top_k_count(15, 20) == 3 and top_k_count(4, 20) == 1 and top_k_count(10, 100) == 10


def test_removal_metrics_match_numpy():
    p, q = random_probs(3)
    np.testing.assert_allclose(log_odds(p, q).numpy(), np_removal(p, q, "log_odds"), atol=1e-12)
    np.testing.assert_allclose(comprehensiveness(p, q).numpy(), np_removal(p, q, "comp"), atol=1e-12)
    np.testing.assert_allclose(sufficiency(p, q).numpy(), np_removal(p, q, "suff"), atol=1e-12)
    assert float(log_odds(p[0], q[0])) == pytest.approx(float(np_removal(p[:1], q[:1], "log_odds")[0]))


def test_confidence_interval_matches_scipy():
    v = torch.tensor(np.random.default_rng(4).random(50))
    m, h = mean_confidence_interval(v)
    rm, rh = np_ci(v.numpy())
    assert m == pytest.approx(rm, abs=1e-12) and h == pytest.approx(rh, rel=1e-9)
    _, h90 = mean_confidence_interval(v, 0.9)
    assert h90 == pytest.approx(np_ci(v.numpy(), 0.9)[1], rel=1e-9) and h90 < h
    assert math.isnan(mean_confidence_interval(torch.tensor([0.5]))[1])


# ---------------------------------------------------------------- Metric classes


def _curve_metric_ref(curves):
    aucs = [np_auc(c) for c in curves]
    return np_ci(aucs), np.mean([np_grid(c) for c in curves], axis=0)


@pytest.mark.parametrize("cls", [ActivationAUC, InverseActivationAUC])
def test_curve_metric_matches_reference(cls):
    curves = random_curves(5)
    m = cls(curve_points=21)
    m.update(curves)
    (rm, rh), rgrid = _curve_metric_ref(curves)
    assert float(m.compute()) == pytest.approx(rm, abs=1e-12)
    assert float(m.confidence_interval()) == pytest.approx(rh, rel=1e-9)
    x, y = m.mean_curve()
    np.testing.assert_allclose(x.numpy(), np.linspace(0, 1, 21), atol=1e-12)
    np.testing.assert_allclose(y.numpy(), rgrid, atol=1e-12)
    assert cls.higher_is_better is (cls is ActivationAUC)


@pytest.mark.parametrize(
    "cls,kind", [(LogOdds, "log_odds"), (Comprehensiveness, "comp"), (Sufficiency, "suff")]
)
def test_removal_metric_classes_match_reference(cls, kind):
    p, q = random_probs(6)
    m = cls()
    m.update(p, q)
    rm, rh = np_ci(np_removal(p, q, kind))
    assert float(m.compute()) == pytest.approx(rm, abs=1e-12)
    assert float(m.confidence_interval()) == pytest.approx(rh, rel=1e-9)


def _snake(name: str) -> str:
    """``ActivationAUC`` -> ``activation_auc``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


@pytest.mark.parametrize("cls", list(METRIC_CLASSES.values()), ids=lambda c: c.__name__)
def test_functional_twin_equals_class(cls):
    """Every Metric class has a functional twin of its name whose per-example values it averages."""
    twin = getattr(F, _snake(cls.__name__))
    assert _snake(cls.__name__) in F.__all__
    curves = random_curves(11, count=6)
    other = [0.5 * c.flip(0) for c in curves]  # IAS curves of the same lengths
    p, q = random_probs(12, count=6)
    args = {"curves": (curves,), "gap": (curves, other), "probs": (p, q)}[
        "gap"
        if cls is ActivationGap
        else "curves"
        if cls in (ActivationAUC, InverseActivationAUC)
        else "probs"
    ]
    m = cls()
    m.update(*args)
    values = twin(*args)
    assert values.shape == (6,)
    assert float(m.compute()) == pytest.approx(float(values.mean()), abs=1e-12)
    assert float(m.confidence_interval()) == pytest.approx(mean_confidence_interval(values)[1], rel=1e-9)


def test_batch_split_invariance():
    curves = random_curves(7, count=25)
    p, q = random_probs(8, count=25)
    one, five = ActivationAUC(curve_points=11), ActivationAUC(curve_points=11)
    one.update(curves)
    lo1, lo5 = LogOdds(), LogOdds()
    lo1.update(p, q)
    for chunk in np.array_split(np.arange(25), 5):
        five.update([curves[i] for i in chunk])
        lo5.update(p[chunk], q[chunk])
    assert float(one.compute()) == pytest.approx(float(five.compute()), abs=1e-12)
    assert float(one.confidence_interval()) == pytest.approx(float(five.confidence_interval()), rel=1e-9)
    torch.testing.assert_close(one.mean_curve()[1], five.mean_curve()[1])
    assert float(lo1.compute()) == pytest.approx(float(lo5.compute()), abs=1e-12)
    assert float(lo1.confidence_interval()) == pytest.approx(float(lo5.confidence_interval()), rel=1e-9)


def test_state_dict_round_trip_and_reset():
    curves = random_curves(9)
    a = InverseActivationAUC(curve_points=21)
    a.update(curves[:10])
    sd = a.state_dict()
    assert {"count", "total", "total_sq", "curve_sum"} <= set(sd)
    b = InverseActivationAUC(curve_points=21)
    b.load_state_dict(sd)
    for m in (a, b):
        m.update(curves[10:])
    assert float(a.compute()) == float(b.compute())
    assert float(a.confidence_interval()) == float(b.confidence_interval())
    torch.testing.assert_close(a.mean_curve()[1], b.mean_curve()[1])
    full = InverseActivationAUC()
    full.update(curves)
    assert float(b.compute()) == pytest.approx(float(full.compute()), abs=1e-12)
    b.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(b.compute()))


# ---------------------------------------------------------------- DDP (2 CPU processes, gloo)


def _ddp_worker(rank):
    curves = random_curves(11, count=13)
    p, q = random_probs(12, count=13)
    auc, suf = ActivationAUC(curve_points=21), Sufficiency()
    # Uneven shards: rank 0 gets 9 examples, rank 1 gets 4.
    idx = list(range(9)) if rank == 0 else list(range(9, 13))
    auc.update([curves[i] for i in idx])
    suf.update(p[idx], q[idx])
    return torch.cat(
        [
            auc.compute().reshape(1),
            auc.confidence_interval().reshape(1),
            auc.mean_curve()[1],
            suf.compute().reshape(1),
            suf.confidence_interval().reshape(1),
            auc.count.reshape(1),
        ]
    )


@pytest.mark.slow
def test_ddp_sync_equals_single_process():
    curves = random_curves(11, count=13)
    p, q = random_probs(12, count=13)
    auc, suf = ActivationAUC(curve_points=21), Sufficiency()
    auc.update(curves)
    suf.update(p, q)
    ref = torch.cat(
        [
            auc.compute().reshape(1),
            auc.confidence_interval().reshape(1),
            auc.mean_curve()[1],
            suf.compute().reshape(1),
            suf.confidence_interval().reshape(1),
            auc.count.reshape(1),
        ]
    )
    outs = run_gloo(_ddp_worker)
    for out in outs:
        torch.testing.assert_close(out[:-1], ref[:-1], rtol=1e-10, atol=1e-12)
    # The local states are unsynced again after compute: each rank still holds only its shard.
    assert [float(o[-1]) for o in outs] == [9.0, 4.0]


# ---------------------------------------------------------------- bad input


def test_bad_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        log_odds(torch.rand(3, 2), torch.rand(4, 2))
    with pytest.raises(ValueError, match="same shape"):
        LogOdds().update(torch.rand(3, 2), torch.rand(3, 3))
    with pytest.raises(ValueError, match="probabilities"):
        sufficiency(torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="no curves"):
        activation_auc([])
    with pytest.raises(ValueError, match="n\\+1 >= 2"):
        ActivationAUC().update([torch.tensor([0.5, 0.4]), torch.tensor([0.3])])
    with pytest.raises(ValueError, match="n\\+1 >= 2"):
        activation_auc(torch.empty(0))
    with pytest.raises(ValueError, match="shape"):
        activation_auc(torch.rand(2, 3, 4))
    for k in (0, -5, 100.5, 1000, True, "20"):
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            top_k_features(torch.rand(5), k)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        activation_order(torch.rand(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        activation_order(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="curve_points"):
        ActivationAUC(curve_points=1)
    with pytest.raises(ValueError, match="confidence"):
        Comprehensiveness(confidence=95)
    with pytest.raises(RuntimeError, match="curve_points"):
        ActivationAUC().mean_curve()
