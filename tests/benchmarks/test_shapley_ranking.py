"""Known-answer tests of the ranking measures of benchmarks/shapley_accuracy.py (issue 27, item 2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from benchmarks import shapley_accuracy as sa
from pi_lightning.metrics.functional.curves import activation_auc
from pi_lightning.testing import exact_shapley


def _additive_game(weights: np.ndarray) -> np.ndarray:
    """(2^n,) values of v(S) = sum of the weights in S, in the reference's coalition order."""
    n = len(weights)
    Z = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)
    return Z @ weights


def test_coalition_index_matches_the_reference_enumeration():
    n = 5
    Z = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)
    assert sa.coalition_index(Z).tolist() == list(range(2**n))


def test_exact_curves_of_an_additive_game():
    """On v(S) = sum w_i the AS curve in the order of w adds the weights largest first: known areas."""
    w = np.array([0.1, 0.4, -0.2, 0.3])
    values = _additive_game(w)
    as_, ias = sa.exact_curves(w, values)
    curve = np.concatenate([[0.0], np.cumsum(np.sort(w)[::-1])])  # 0, .4, .7, .8, .6
    assert as_ == pytest.approx(float(activation_auc(torch.tensor(curve))))
    inv = np.concatenate([[0.0], np.cumsum(np.sort(w))])
    assert ias == pytest.approx(float(activation_auc(torch.tensor(inv))))
    # The best order of an additive game is the order of its weights (a greedy chain is optimal).
    assert sa.best_curves(values, len(w)) == pytest.approx((as_, ias))


def test_best_curves_is_the_best_of_all_orders():
    rng = np.random.default_rng(3)
    n = 5
    values = rng.random(2**n)
    areas = [
        sa.exact_curves(-np.argsort(p).astype(float), values)[0] for p in itertools.permutations(range(n))
    ]
    best_as, best_ias = sa.best_curves(values, n)
    assert best_as == pytest.approx(max(areas)) and best_ias == pytest.approx(min(areas))
    # The exact Shapley order is one of the orders: never above the best, never below the floor.
    phi = exact_shapley(lambda _z: values, n)
    as_, ias = sa.exact_curves(phi, values)
    assert min(areas) - 1e-12 <= ias <= as_ <= max(areas) + 1e-12


def test_ranking_metrics_known_answers():
    ref = np.array([2.0, 1.5, -1.0, -0.1, 0.2])
    perfect = sa.ranking_metrics(ref * 3, ref, _additive_game(ref))
    assert perfect["top1"] == perfect["top3"] == perfect["top20"] == perfect["sign"] == 1.0
    assert perfect["spearman"] == pytest.approx(1.0)
    assert perfect["gap"] == pytest.approx(perfect["as"] - perfect["ias"])
    # Swap the top two and flip the sign of the smallest: top-1 lost, top-3 kept, one sign wrong.
    est = np.array([1.5, 2.0, -1.0, 0.1, 0.2])
    m = sa.ranking_metrics(est, ref)
    assert m["top1"] == 0.0 and m["top3"] == 1.0 and m["sign"] == pytest.approx(0.8)
    assert "as" not in m  # no game values given
    reverse = sa.ranking_metrics(-ref, ref)
    assert reverse["spearman"] == pytest.approx(-1.0) and reverse["sign"] == 0.0


def test_ranking_tests_average_seeds_and_pair_inputs():
    """Seeds of one input are averaged first: 12 inputs give 12 pairs, and a method that is better on
    every input is found better with a small p."""
    records = []
    for i in range(12):
        for s in range(3):
            records.append(
                {"input": i, "seed": s, "budget_multiple": 2, "method": "mp-pi", "top1": 1.0, "ias": 0.2}
            )
            records.append(
                {"input": i, "seed": s, "budget_multiple": 2, "method": "other", "top1": 0.5, "ias": 0.3}
            )
    tests = {t["measure"]: t for t in sa.ranking_tests(records, keys=("top1", "ias"))}
    assert tests["top1"]["pairs"] == 12 and tests["top1"]["baseline_better_share"] == 1.0
    assert tests["ias"]["baseline_better_share"] == 1.0  # lower IAS is better
    assert tests["top1"]["p"] < 0.01
