"""MP-PI's mask distribution: the structured map against the dense paper formulation and against
sampled masks; Eqn 16's solution against a dense reference solver; weights; caching; errors."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest
from scipy.optimize import nnls

from pi_lightning.attributors import _shapley as S
from pi_lightning.testing import dense_coalition_map


def _enumerated_inputs(n: int, splus: bool):
    """Every input coalition of every class (i, j), from the definitions: ``(i, j, its class's count,
    the input's present features t)`` (i features, the last at j; with S+ every feature after j added)."""
    for i in range(1, n):
        for j in range(i, n + 1):
            inputs = [set(c) | {j} for c in itertools.combinations(range(1, j), i - 1)]
            for s in inputs:
                yield i, j, len(inputs), (s | set(range(j + 1, n + 1)) if splus else s)


def _enumerated_map(n: int, splus: bool) -> np.ndarray:
    """P†_{kl|ij} counted from the definitions: every input coalition of class (i, j), its prefixes."""
    M = np.zeros((n * (n - 1), n * (n - 1)))
    for i, j, count, t in _enumerated_inputs(n, splus):
        for last in sorted(t):
            k = sum(1 for m in t if m <= last)
            if k <= n - 1:
                M[(i - 1) * n + j - 1, (k - 1) * n + last - 1] += 1.0 / (len(t) * count)
    return M


def _dense_solve(M: np.ndarray, p: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Reference for Eqn 16: NNLS with a heavy sum-to-one row, then the exact KKT system on its support."""
    v = valid.ravel()
    A = M[v].T  # (outputs, inputs)
    big = 1e4
    q0, _ = nnls(np.vstack([A, big * np.ones(A.shape[1])]), np.concatenate([p, [big]]), maxiter=20000)
    F = q0 > 0
    B = A[:, F]
    k = int(F.sum())
    K = np.block([[B.T @ B, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
    sol = np.linalg.lstsq(K, np.concatenate([B.T @ p, [1.0]]), rcond=None)[0]
    q = np.zeros(A.shape[1])
    q[np.nonzero(F)[0]] = sol[:k]
    assert q.min() >= 0  # the support found by NNLS is optimal (checked by KKT below)
    grad = A.T @ (A @ q - p)
    assert (grad - grad[F].mean()).min() > -1e-12
    out = np.zeros(valid.size)
    out[v] = q
    return out


@pytest.mark.parametrize("splus", [True, False])
def test_dense_matrix_matches_enumeration(splus):
    n = 6
    np.testing.assert_allclose(dense_coalition_map(n, splus), _enumerated_map(n, splus), atol=1e-15)


@pytest.mark.parametrize("splus", [True, False])
@pytest.mark.parametrize("n", [2, 7, 13])
def test_structured_map_and_transpose_match_dense(n, splus):
    rng = np.random.default_rng(n)
    M = dense_coalition_map(n, splus)
    _, _, valid = S._grid(n)
    q = np.where(valid, rng.random((n - 1, n)), 0.0)
    r = rng.standard_normal((n - 1, n))
    np.testing.assert_allclose(S.coalition_map(q, splus), (q.ravel() @ M).reshape(n - 1, n), atol=1e-14)
    np.testing.assert_allclose(
        S.coalition_map_transpose(r, splus),
        np.where(valid, (M @ r.ravel()).reshape(n - 1, n), 0.0),
        atol=1e-13,
    )


def test_shapley_distribution():
    n = 9
    P = S.shapley_distribution(n)
    assert P.shape == (n - 1, n) and abs(P.sum() - 1) < 1e-12
    size = np.array([1 / (k * (n - k)) for k in range(1, n)])
    np.testing.assert_allclose(P.sum(1), size / size.sum(), rtol=1e-12)
    assert P[3, 2] == 0 and abs(P[2, 5] - size[2] / size.sum() * comb(5, 2) / comb(9, 3)) < 1e-15


@pytest.mark.parametrize("splus", [True, False])
@pytest.mark.parametrize("n", [8, 20, 30])
def test_optimum_matches_dense_reference(n, splus):
    dist = S.mask_distribution(n, splus)
    _, _, valid = S._grid(n)
    M = dense_coalition_map(n, splus)
    p = dist.p_star.ravel()
    q = _dense_solve(M, p, valid)
    pd_dense = q @ M
    np.testing.assert_allclose(S.coalition_map(dist.p_opt, splus).ravel(), pd_dense, atol=1e-8)
    assert abs(dist.objective - float(((pd_dense - p) ** 2).sum())) < 1e-8
    assert abs(dist.p_opt.sum() - 1) < 1e-12 and dist.p_opt.min() >= 0
    assert abs(dist.sampling.sum() - 1) < 1e-12 and (dist.sampling[~valid] == 0).all()


def _class_counts(z: np.ndarray) -> np.ndarray:
    """(B, n) input masks -> counts of their non-empty, non-full prefix classes (k, l)."""
    n = z.shape[1]
    k = np.cumsum(z, axis=1)
    last = np.broadcast_to(np.arange(n), z.shape)
    sel = z & (k <= n - 1)
    return np.bincount(((k[sel] - 1) * n + last[sel]), minlength=(n - 1) * n).reshape(n - 1, n).astype(float)


@pytest.mark.parametrize("n", [8, 20])
@pytest.mark.parametrize("kind", ["optimized", "shapley"])
def test_sampled_coalitions_follow_pd_and_weighted_shapley(n, kind):
    dist = S.mask_distribution(n, True, kind)
    z = dist.sample(100_000, np.random.default_rng(0))
    counts = _class_counts(z)
    emp = counts / counts.sum()
    assert 0.5 * np.abs(emp - dist.p_d / dist.p_d.sum()).sum() < 0.01
    weighted = counts * dist.class_weights
    weighted /= weighted.sum()
    assert 0.5 * np.abs(weighted - dist.p_star).sum() < 0.01
    # Every sampled mask is a valid S+ input: last feature active, everything after j active.
    assert z[:, -1].all()


def test_per_coalition_weights_give_shapley_per_coalition():
    """With S+ the coalitions inside one class are not equally likely; the per-coalition weights fix it."""
    n = 6
    dist = S.mask_distribution(n, True)
    z = dist.sample(600_000, np.random.default_rng(1))
    k = np.cumsum(z, axis=1)
    rows = []
    for last in range(n):
        sel = z[:, last] & (k[:, last] <= n - 1)
        pref = z[sel] & (np.arange(n) <= last)[None, :]
        rows.append(pref)
    pref = np.concatenate(rows)
    codes = pref @ (1 << np.arange(n))
    cnt = np.bincount(codes, minlength=2**n).astype(float)
    present = np.nonzero(cnt)[0]
    U = ((present[:, None] >> np.arange(n)) & 1).astype(bool)
    w = dist.coalition_weights(U)
    est = cnt[present] * w
    est /= est.sum()
    size = U.sum(1)
    kernel = np.array([1 / (comb(n, s) * s * (n - s)) for s in size])
    kernel /= np.array([1 / (s * (n - s)) for s in range(1, n)]).sum()
    assert len(present) == 2**n - 2
    assert 0.5 * np.abs(est - kernel).sum() < 0.01
    # Class weights alone leave a clear bias within classes.
    wc = dist.class_weights[size - 1, n - 1 - np.argmax(U[:, ::-1], axis=1)]
    est_c = cnt[present] * wc
    assert 0.5 * np.abs(est_c / est_c.sum() - kernel).sum() > 0.2


@pytest.mark.parametrize("splus", [True, False])
def test_coalition_probabilities_match_enumerated_inputs(splus):
    """Known answer: q(U), the chance that one drawn input yields U among its prefixes, summed over
    every input of every class with its drawing probability; P*(U) is the Shapley kernel."""
    n = 6
    dist = S.mask_distribution(n, splus)
    q_enum: dict[tuple, float] = {}
    for i, j, count, t in _enumerated_inputs(n, splus):
        for last in sorted(t):
            u = tuple(m in t and m <= last for m in range(1, n + 1))
            if not all(u):
                q_enum[u] = q_enum.get(u, 0.0) + dist.sampling[i - 1, j - 1] / count
    U = np.array(list(q_enum), dtype=bool)
    p_u, q_u = dist.coalition_probabilities(U)
    np.testing.assert_allclose(q_u, [q_enum[tuple(u)] for u in U], rtol=1e-10, atol=1e-15)
    size = U.sum(1)
    kernel = np.array([1 / (comb(n, k) * k * (n - k)) for k in size])
    np.testing.assert_allclose(p_u, kernel / sum(1 / (k * (n - k)) for k in range(1, n)), rtol=1e-10)
    # The weights are the same ratio in other units.
    ratio = dist.coalition_weights(U) * q_u / p_u
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)


def test_plain_coalition_weights_equal_class_weights():
    n = 7
    dist = S.mask_distribution(n, False)
    codes = np.arange(1, 2**n - 1)
    U = ((codes[:, None] >> np.arange(n)) & 1).astype(bool)
    size, last = U.sum(1), n - 1 - np.argmax(U[:, ::-1], axis=1)
    cw = dist.class_weights[size - 1, last]
    # Per-coalition weight = P*(U)/c(U) = class weight (up to the class size normalisation).
    ratio = dist.coalition_weights(U) / cw
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)


def test_cache_memory_and_disk(tmp_path):
    a = S.mask_distribution(11, True, cache_dir=tmp_path)
    assert S.mask_distribution(11, True) is a
    S._CACHE.pop((11, True, "optimized", 0.7))
    b = S.mask_distribution(11, True, cache_dir=tmp_path)
    assert b is not a and list(tmp_path.iterdir())
    np.testing.assert_array_equal(a.p_prime, b.p_prime)
    np.testing.assert_array_equal(a.sampling, b.sampling)


def test_large_n_is_a_distribution():
    dist = S.mask_distribution(200, True)
    assert abs(dist.p_d.sum() - (1 - dist.p_prime[np.arange(199), np.arange(199)].sum() / 200)) < 1e-9
    assert dist.objective < S.mask_distribution(200, True, "shapley").objective
    assert (dist.class_weights[dist.p_star > 0] > 0).all()


def test_errors():
    with pytest.raises(ValueError, match="n >= 2"):
        S.mask_distribution(1)
    with pytest.raises(ValueError, match="coarser granularity"):
        S.mask_distribution(5000)
    with pytest.raises(ValueError, match="kind"):
        S.mask_distribution(5, kind="uniform")
    with pytest.raises(ValueError, match="shape"):
        S.coalition_map(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="constraints"):
        S.mask_distribution(4).coalition_weights(np.ones((1, 4), bool))
