"""The mask distribution of Multi-Pass Progressive Inference (paper section 3.2.3-3.2.4, Eqns 12-17).

MP-PI runs the model on masked inputs and reads an intermediate prediction at the end of every
active feature: one input coalition yields the coalitions of all its prefixes. For the collected
coalitions to follow the Shapley distribution P* (what Kernel SHAP needs), the input masks are
drawn from an optimised distribution P', and the mismatch that remains is removed by regression
weights. This module computes all of it:

* :func:`shapley_distribution`: P*_{kl}, the Shapley distribution over (size k, last active l),
  Eqns 12-13.
* :func:`coalition_map` / :func:`coalition_map_transpose`: the conditional map P† from input
  classes (i, j) to intermediate classes (k, l) (Eqn 14, and Eqn 17 for the S+ variant that also
  activates every feature after j), applied in O(n^2) without ever forming the
  n(n-1) x n(n-1) matrix (:func:`pi_lightning.testing.dense_coalition_map` writes it out as the
  tests' reference).
* :func:`mask_distribution`: solves Eqn 16 and returns a cached :class:`MaskDistribution` with
  P', P^D, P* and the weights w = P*/P^D.

Derivation (the printed Eqns 14/17 carry a typo). Let the input S' have size i and last active
feature j, the other i-1 active features uniform among 1..j-1. The prefix ending at its k-th
active feature l (k < i, so l < j) needs k-1 actives among 1..l-1 and i-k-1 among l+1..j-1 (j
itself is active), so out of the C(j-1, i-1) inputs C(l-1, k-1) C(j-l-1, i-k-1) qualify; the
paper's second binomial C(j-l, i-k) counts position j as free. The prefix ending at j is S'
itself, and with S+ each l > j gives one more prefix of size i + l - j. An input yields
i' = i (plain) or i' = i + n - j (S+) distinct non-empty prefixes, hence the 1/i' normalisation.

Structure. With x_ij = P'_ij / (i' C(j-1, i-1)) (the probability of one input coalition),
P^D_kl = C(l-1, k-1) Y_kl + (diagonal term), where Y_kl = sum_{i>k, j>l} x_ij C(j-l-1, i-k-1).
Pascal's rule C(m, a) = C(m-1, a) + C(m-1, a-1) gives Y_kl = x_{k+1,l+1} + Y_{k,l+1} + Y_{k+1,l+1}:
one vector operation per column, O(n^2) in all, with only non-negative terms (no cancellation;
FFT convolutions would lose everything to binomials that span 300 orders of magnitude). The
diagonal term (prefixes ending at or after j) is a cumulative sum along diagonals. The transpose
uses the mirrored recurrence Z_ij = s_{i-1,j-1} + Z_{i,j-1} + Z_{i-1,j-1}.

Normalisation. Eqn 16 is solved as printed: P' >= 0, sum P' = 1, least squares |P' P† - P*|.
Because every pass keeps *all* its prefixes (not one of them), the solution P' is the
distribution of the input class behind a collected coalition; the masks themselves are drawn
from P'_ij / i' (renormalised), so that the collected coalitions are distributed as P^D.

Weights. The paper's w = P*/P^D is per class (k, l). With S+ the coalitions within one class are
not equally likely (a prefix that ends in a run j..l can also come from the S+ tail), so the
weight of a coalition U uses its own expected frequency c(U) = Y_kl + sum_{j=r}^{l} x_{k-l+j, j}
(r: where U's final run of consecutive active features starts): w(U) = P*(U) / c(U). Summed over
a class this is the paper's P^D_kl; without S+ all coalitions of a class have the same weight and
w(U) is the paper's class weight.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MaskDistribution",
    "clear_cache",
    "coalition_map",
    "coalition_map_transpose",
    "mask_distribution",
    "shapley_distribution",
]

#: Largest number of features supported: binomials C(n-1, k) must stay inside float64.
MAX_FEATURES = 1000


def _log_factorial(m: int) -> np.ndarray:
    """``(m + 1,)`` table of ``log(k!)`` for k = 0..m, by a cumulative sum of logs.

    Used instead of ``scipy.special.gammaln`` on integers: importing scipy.special is a large share of
    a cold start (``benchmarks/results/RESULTS.md``, "P' cold"), and the sum's rounding (~1e-13
    relative) is far below what the solver resolves.
    """
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, m + 1, dtype=np.float64)))])


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"The Shapley mask distribution needs n >= 2 features (an int), got {n!r}.")
    if n > MAX_FEATURES:
        raise ValueError(
            f"n = {n} features is more than the {MAX_FEATURES} supported (binomial coefficients "
            "would leave float64). Attribute at a coarser granularity (e.g. 'sentence')."
        )


def _binom(n: int) -> np.ndarray:
    """``(n, n)`` table: ``B[a, b] = C(a, b)`` (0 where b > a), in float64."""
    a = np.arange(n)
    lf = _log_factorial(n)
    # (n,) x (n,) -> (n, n) by broadcasting.
    lg = lf[a[:, None]] - lf[a[None, :]] - lf[np.maximum(a[:, None] - a[None, :], 0)]
    out = np.exp(lg)
    out[a[None, :] > a[:, None]] = 0.0
    return np.round(out) if n < 50 else out


def _grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index grids ``(i, j, valid)`` of shape ``(n-1, n)``: i = 1..n-1 (size), j = 1..n (last)."""
    i = np.arange(1, n)[:, None] * np.ones((1, n), dtype=np.int64)
    j = np.ones((n - 1, 1), dtype=np.int64) * np.arange(1, n + 1)[None, :]
    return i, j, j >= i


def shapley_distribution(n: int) -> np.ndarray:
    """P*_{kl}: Shapley probability of a coalition of size k whose last active feature is l.

    Eqn 13: ``P*_kl = P*_k C(l-1, k-1) / C(n, k)`` with ``P*_k = 1 / (C k (n-k))``.

    Returns:
        ``(n-1, n)`` float64 array indexed ``[k-1, l-1]``, summing to one.

    Example:
        >>> P = shapley_distribution(3)
        >>> P.round(4).tolist()
        [[0.1667, 0.1667, 0.1667], [0.0, 0.1667, 0.3333]]
    """
    _check_n(n)
    k, last, valid = _grid(n)
    size = 1.0 / (np.arange(1, n) * (n - np.arange(1, n)))
    size /= size.sum()
    lf = _log_factorial(n)
    lg = lf[last - 1] - lf[k - 1] - lf[np.maximum(last - k, 0)] - (lf[n] - lf[k] - lf[n - k])
    return np.where(valid, size[:, None] * np.exp(lg), 0.0)


def _active(n: int, splus: bool) -> np.ndarray:
    """i' per input class: non-empty distinct prefixes of the input (i, or i + n - j with S+)."""
    i, j, valid = _grid(n)
    return np.where(valid, i + (n - j if splus else 0), 1).astype(np.float64)


class _Tables:
    """Per-n constants of the structured map, in the transposed ``(n, n-1)`` layout ``[l-1, k-1]``
    that the recurrences run in (one contiguous row per column l: no copies in the solver loop)."""

    def __init__(self, n: int, splus: bool) -> None:
        self.n, self.splus = n, splus
        B = _binom(n)
        i, j, valid = _grid(n)
        ip = _active(n, splus)
        # C(l-1, k-1) on the (n-1, n) grid (k = i, l = j).
        C = np.where(valid, B[j - 1, np.minimum(i - 1, j - 1)], 0.0)
        scale = np.where(valid, 1.0 / (ip * np.where(valid, C, 1.0)), 0.0)
        # (n-1, n) -> (n, n-1): the solver's layout.
        self.valid, self.ip, self.C, self.scale = (np.ascontiguousarray(a.T) for a in (valid, ip, C, scale))


def _diag_cumsum(d: np.ndarray, reverse: bool = False) -> np.ndarray:
    """Cumulative sums along the diagonals (l - k fixed) of ``d`` (transposed layout ``(n, n-1)``),
    towards larger (k, l) or, with ``reverse``, towards smaller ones: one vector addition per row."""
    d = np.array(d, dtype=np.float64, order="C", copy=True)
    rows = d.shape[0]
    if reverse:
        for row in range(rows - 2, -1, -1):
            d[row, :-1] += d[row + 1, 1:]
    else:
        for row in range(1, rows):
            d[row, 1:] += d[row - 1, :-1]
    return d


def _pascal_down(xt: np.ndarray) -> np.ndarray:
    """Y[k, l] = sum_{i>k, j>l} x[i, j] C(j-l-1, i-k-1), by Y[k,l] = x[k+1,l+1] + Y[k,l+1] + Y[k+1,l+1].

    Transposed layout in and out: ``(n, n-1)``, one contiguous row per column l.
    """
    n = xt.shape[0]
    yt = np.zeros_like(xt)
    for c in range(n - 2, -1, -1):
        row, nxt = yt[c], yt[c + 1]
        np.add(xt[c + 1, 1:], nxt[:-1], out=row[:-1])
        row[:-1] += nxt[1:]
        row[-1] = nxt[-1]
    return yt


def _pascal_up(st: np.ndarray) -> np.ndarray:
    """Z[i, j] = sum_{k<i, l<j} s[k, l] C(j-l-1, i-k-1), by Z[i,j] = s[i-1,j-1] + Z[i,j-1] + Z[i-1,j-1].

    Transposed layout in and out: ``(n, n-1)``, one contiguous row per column j.
    """
    n = st.shape[0]
    zt = np.zeros_like(st)
    for c in range(1, n):
        row, prev = zt[c], zt[c - 1]
        np.add(st[c - 1, :-1], prev[1:], out=row[1:])
        row[1:] += prev[:-1]
        row[0] = prev[0]
    return zt


def _apply(q: np.ndarray, t: _Tables) -> np.ndarray:
    """P^D = q P† (structured, O(n^2)); transposed layout in and out."""
    first = t.C * _pascal_down(q * t.scale)
    a = q / t.ip
    # S+: prefixes ending at or after j lie on the diagonal through (i, j); plain: only (i, j).
    return np.where(t.valid, first + (_diag_cumsum(a) if t.splus else a), 0.0)


def _apply_t(r: np.ndarray, t: _Tables) -> np.ndarray:
    """``P† r`` (the transpose map): gradient of the least-squares objective; transposed layout."""
    out = _pascal_up(np.where(t.valid, r * t.C, 0.0)) * t.scale
    out = out + (_diag_cumsum(np.where(t.valid, r, 0.0), reverse=True) if t.splus else r) / t.ip
    return np.where(t.valid, out, 0.0)


_TABLES: dict[tuple[int, bool], _Tables] = {}


def _tables(n: int, splus: bool) -> _Tables:
    key = (int(n), bool(splus))
    if key not in _TABLES:
        _TABLES[key] = _Tables(*key)
    return _TABLES[key]


def _T(a: np.ndarray) -> np.ndarray:
    """``(n-1, n)`` <-> ``(n, n-1)``, contiguous."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).T)


def coalition_map(p_prime: np.ndarray, splus: bool = True) -> np.ndarray:
    """P^D = P' P† (Eqn 15) in O(n^2), without forming the n(n-1) x n(n-1) matrix.

    Args:
        p_prime: ``(n-1, n)`` weights of the input classes (i, j), indexed ``[i-1, j-1]``.
        splus: use the S+ conditional distribution (Eqn 17) instead of Eqn 14.

    Returns:
        ``(n-1, n)`` distribution of the intermediate classes (k, l) (the full coalition, size n,
        is left out).
    """
    p_prime = np.asarray(p_prime, dtype=np.float64)
    if p_prime.ndim != 2 or p_prime.shape[1] != p_prime.shape[0] + 1:
        raise ValueError(f"Expected P' of shape (n-1, n), got {p_prime.shape}.")
    n = p_prime.shape[1]
    _check_n(n)
    return _T(_apply(_T(p_prime), _tables(n, splus)))


def coalition_map_transpose(r: np.ndarray, splus: bool = True) -> np.ndarray:
    """The adjoint of :func:`coalition_map`: ``<coalition_map(q), r> = <q, coalition_map_transpose(r)>``."""
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != r.shape[0] + 1:
        raise ValueError(f"Expected an array of shape (n-1, n), got {r.shape}.")
    n = r.shape[1]
    _check_n(n)
    return _T(_apply_t(_T(r), _tables(n, splus)))


def _project_simplex(v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v[mask]`` onto the probability simplex (0 outside ``mask``)."""
    w = v[mask]
    # Only the largest entries can stay positive: sort a top slice, the whole vector if needed.
    top = min(w.size, 4096)
    while True:
        u = -np.sort(-np.partition(w, w.size - top)[w.size - top :]) if top < w.size else -np.sort(-w)
        css = np.cumsum(u) - 1.0
        pos = np.nonzero(u * np.arange(1, u.size + 1) > css)[0]
        rho = pos[-1]
        if rho < u.size - 1 or top == w.size:
            break
        top = min(w.size, top * 4)
    out = np.zeros_like(v)
    out[mask] = np.maximum(w - css[rho] / (rho + 1.0), 0.0)
    return out


def _solve(t: _Tables, target: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, int, float]:
    """Eqn 16: min |q P† - P*|^2 over the simplex, by FISTA with adaptive restart.

    Returns ``(q, iterations, frank_wolfe_gap)``; the gap bounds the objective's distance to its
    minimum, and its square root bounds the distance of P^D to the (unique) optimal P^D.
    """
    valid = t.valid
    # Lipschitz constant of the gradient: power iterations on P† P†^T from a positive vector (the
    # Perron vector of a non-negative matrix: fast convergence), with a 10% safety margin.
    v = np.where(valid, 1.0, 0.0)
    for _ in range(6):  # within 0.05% of the limit at n = 512 after 6 (measured); 10% margin below
        v = _apply_t(_apply(v, t), t)
        nv = np.linalg.norm(v)
        v /= nv
    L = 1.1 * 2.0 * nv
    q = np.where(valid, 1.0 / valid.sum(), 0.0)
    y, tk = q.copy(), 1.0
    gap = np.inf
    it = 0
    for it in range(1, max_iter + 1):
        grad = 2.0 * _apply_t(_apply(y, t) - target, t)
        q_new = _project_simplex(y - grad / L, valid)
        if it % 10 == 0 or it == max_iter:
            g = 2.0 * _apply_t(_apply(q_new, t) - target, t)
            gap = float((g * q_new).sum() - g[valid].min())
            if gap <= tol:
                q = q_new
                break
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
        if ((y - q_new) * (q_new - q)).sum() > 0:  # restart when momentum points uphill
            y, t_new = q_new, 1.0
        else:
            y = q_new + ((tk - 1.0) / t_new) * (q_new - q)
        q, tk = q_new, t_new
    return q, it, gap


@dataclass(frozen=True)
class MaskDistribution:
    """The input-mask distribution of MP-PI for ``n`` features, with everything to weight its coalitions.

    Attributes:
        n: number of features.
        splus: whether inputs also activate every feature after their last active one (S+).
        kind: ``"optimized"`` (Eqn 16) or ``"shapley"`` (inputs drawn from P*, Table 4 ablation).
        p_opt: ``(n-1, n)`` Eqn 16's solution (the source class of a collected coalition), sums to 1.
        p_prime: ``(n-1, n)`` the source-class distribution actually used: ``p_opt`` mixed with a
            fraction ``defensive`` of the Shapley inputs, so that every class has P^D > 0.
        sampling: ``(n-1, n)`` probabilities of drawing an input mask of class (i, j):
            ``p_prime / i'`` renormalised (each pass yields i' coalitions).
        p_d: ``(n-1, n)`` distribution of intermediate coalition classes, ``p_prime P†``.
        p_star: ``(n-1, n)`` Shapley distribution.
        objective: ``|p_opt P† - P*|_2^2``, Eqn 16's objective at its solution.
        defensive: the fraction of Shapley inputs mixed in.
        gap: Frank-Wolfe duality gap of the solution (0 for ``kind="shapley"``).
        iterations: solver iterations used.
        seconds: time spent computing it.
    """

    n: int
    splus: bool
    kind: str
    p_opt: np.ndarray
    p_prime: np.ndarray
    sampling: np.ndarray
    p_d: np.ndarray
    p_star: np.ndarray
    objective: float
    defensive: float
    gap: float
    iterations: int
    seconds: float

    @property
    def class_weights(self) -> np.ndarray:
        """The paper's regression weights w = P*/P^D per class (k, l) (0 where P^D = 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.p_d > 0, self.p_star / np.where(self.p_d > 0, self.p_d, 1.0), 0.0)

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``count`` input masks.

        Class (i, j) from :attr:`sampling`, then i-1 other active features uniformly among the
        first j-1, then (S+) every feature after j.

        Returns:
            ``(count, n)`` bool array.
        """
        n = self.n
        flat = self.sampling.ravel()
        cls = rng.choice(flat.size, size=count, p=flat)
        # Flat index -> (i, j), both 1-based.
        i, j = cls // n + 1, cls % n + 1
        keys = rng.random((count, n))
        pos = np.arange(n)[None, :]
        keys[pos >= (j - 1)[:, None]] = np.inf  # only the first j-1 features are candidates
        rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
        z = rank < (i - 1)[:, None]
        z[np.arange(count), j - 1] = True
        if self.splus:
            z |= pos > (j - 1)[:, None]
        return z

    def coalition_weights(self, coalitions: np.ndarray) -> np.ndarray:
        """w(U) = P*(U) / c(U) for non-empty, non-full coalitions (see the module docstring).

        Args:
            coalitions: ``(M, n)`` bool, none empty or full.

        Returns:
            ``(M,)`` float64 weights, in the units of :attr:`class_weights` (they agree on every
            coalition when ``splus`` is False). 0 for a coalition that cannot be collected.
        """
        p_u, c_u = self._coalition_terms(coalitions)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(c_u > 0, p_u / np.where(c_u > 0, c_u, 1.0), 0.0)

    def coalition_probabilities(self, coalitions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(P*(U), q(U))``: each coalition's probability under the Shapley distribution, and the
        probability that one input drawn by :meth:`sample` yields it among its prefixes.

        ``q(U) = c(U) / sum_ij P'_ij / i'``: an input of class (i, j) is drawn with probability
        ``(P'_ij / i') / sum P'/i'`` (:attr:`sampling`) and yields each coalition at most once, so
        ``q`` is :meth:`coalition_weights`' expected frequency ``c(U)`` in per-input units (checked
        against enumerated inputs in the tests). ``1 - (1 - q)^D`` is then the probability that U
        is collected at least once from D inputs (Horvitz-Thompson weights, MP-PI's
        ``weights="inclusion"``).

        Args:
            coalitions: ``(M, n)`` bool, none empty or full.

        Returns:
            Two ``(M,)`` float64 arrays.
        """
        p_u, c_u = self._coalition_terms(coalitions)
        t = _tables(self.n, self.splus)
        per_input = float(np.sum(np.where(t.valid, _T(self.p_prime) / t.ip, 0.0)))
        return p_u, c_u / per_input

    def _coalition_terms(self, coalitions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(P*(U), c(U))`` of each coalition (the module docstring's notation)."""
        z = np.asarray(coalitions, dtype=bool)
        n = self.n
        if z.ndim != 2 or z.shape[1] != n:
            raise ValueError(f"coalitions must have shape (M, {n}), got {z.shape}.")
        k = z.sum(1)
        if ((k == 0) | (k == n)).any():
            raise ValueError(
                "coalition_weights takes non-empty, non-full coalitions; the empty and full "
                "coalitions are Kernel SHAP's constraints."
            )
        t = _tables(n, self.splus)
        xt = _T(self.p_prime) * t.scale  # the solver's transposed layout
        x = _T(xt)
        Y = _T(_pascal_down(xt))
        last = n - 1 - np.argmax(z[:, ::-1], axis=1)  # 0-based last active
        if self.splus:
            # Start r (0-based) of the final run of active features ending at l (`last`).
            pos = np.arange(n)[None, :]
            off = (~z) & (pos < last[:, None])
            r = np.where(off.any(1), n - np.argmax(off[:, ::-1], axis=1), 0)
            # sum_{j=r}^{l} x[k-l+j, j] = S[k, l] - S[k-l+r-1, r-1], S the diagonal prefix sums.
            S = _T(_diag_cumsum(xt))
            kk = k - 1
            kr, lr = kk - (last - r) - 1, r - 1
            ok = (kr >= 0) & (lr >= 0)
            tail = S[kk, last] - np.where(ok, S[np.maximum(kr, 0), np.maximum(lr, 0)], 0.0)
        else:
            tail = x[k - 1, last]
        c_u = Y[k - 1, last] + tail
        pk = self.p_star.sum(1)  # P*_k
        lf = _log_factorial(n)
        lg = lf[n] - lf[k] - lf[n - k]
        p_u = pk[k - 1] * np.exp(-lg)
        return p_u, c_u


_CACHE: dict[tuple[int, bool, str, float], MaskDistribution] = {}


def clear_cache() -> None:
    """Forget every distribution and table computed in this process (the next call computes afresh;
    the benchmarks time a cold P' this way). Files under ``cache_dir`` are kept."""
    _CACHE.clear()
    _TABLES.clear()


def mask_distribution(
    n: int,
    splus: bool = True,
    kind: str = "optimized",
    *,
    defensive: float = 0.7,
    max_iter: int | None = None,
    tol: float = 1e-17,
    cache_dir: str | os.PathLike | None = None,
) -> MaskDistribution:
    """MP-PI's input-mask distribution for ``n`` features, cached per ``(n, splus, kind)``.

    Args:
        n: number of features (2..1000).
        splus: S+ inputs (section 3.2.4) or plain ones.
        kind: ``"optimized"`` solves Eqn 16; ``"shapley"`` draws inputs from P* (Table 4 ablation).
        defensive: fraction of Shapley inputs mixed into Eqn 16's solution (defensive importance
            sampling). The optimum leaves some classes with P^D = 0 (e.g. with S+ the coalition
            {1..n-1} only comes from the full input, which the optimum never uses), where
            w = P*/P^D would be infinite and the regression would miss Shapley mass; the mixture
            keeps every class reachable and bounds every weight. A small mixture leaves the weights
            so uneven on long texts that the regression's effective sample size falls below n (and
            the error grows with n); the default 0.7 keeps it well above n at n = 12-40
            (measurements: benchmarks/results/RESULTS.md, "MP-PI's defensive mixture").
        max_iter: solver iterations at most; default ``clip(3e6 / n^2, 60, 3000)`` (the objective is
            within ~1e-5 of its minimum after ~50 iterations; small n run to convergence). A count,
            not a time limit, so that the result never depends on the machine.
        tol: stop once the Frank-Wolfe gap (a bound on the distance to the optimal objective)
            is below it.
        cache_dir: also keep the result in this folder (``.npz`` per key) and read it from there;
            defaults to the ``PI_LIGHTNING_CACHE`` environment variable, or memory only.

    Example:
        >>> d = mask_distribution(8)
        >>> round(float(d.sampling.sum()), 6), d.p_d.shape
        (1.0, (7, 8))
    """
    _check_n(n)
    if kind not in ("optimized", "shapley"):
        raise ValueError(f"kind must be 'optimized' or 'shapley', got {kind!r}.")
    if not 0.0 <= defensive < 1.0:
        raise ValueError(f"defensive must be a fraction in [0, 1), got {defensive!r}.")
    key = (int(n), bool(splus), kind, float(defensive) if kind == "optimized" else 0.0)
    if key in _CACHE:
        return _CACHE[key]
    cache_dir = cache_dir if cache_dir is not None else os.environ.get("PI_LIGHTNING_CACHE")
    path = None
    if cache_dir:
        path = os.path.join(
            os.fspath(cache_dir), f"mppi_mask_n{n}_{'splus' if splus else 'plain'}_{kind}_{key[3]:g}_v1.npz"
        )
        if os.path.exists(path):
            with np.load(path) as f:
                dist = MaskDistribution(
                    n,
                    bool(splus),
                    kind,
                    f["p_opt"],
                    f["p_prime"],
                    f["sampling"],
                    f["p_d"],
                    f["p_star"],
                    float(f["objective"]),
                    key[3],
                    float(f["gap"]),
                    int(f["iterations"]),
                    float(f["seconds"]),
                )
            _CACHE[key] = dist
            return dist
    start = time.perf_counter()
    t = _tables(n, splus)
    p_star = shapley_distribution(n)
    # Everything below in the solver's transposed layout (n, n-1); transposed back at the end.
    target = _T(p_star)
    shap = target * t.ip  # source classes when inputs are drawn from P*
    shap /= shap.sum()
    if kind == "shapley":
        p_opt, p_prime, it, gap = shap, shap, 0, 0.0
    else:
        if max_iter is None:
            max_iter = int(min(3000, max(60, 3e6 / n**2)))
        p_opt, it, gap = _solve(t, target, max_iter, tol)
        p_prime = (1.0 - defensive) * p_opt + defensive * shap
    sampling = np.where(t.valid, p_prime / t.ip, 0.0)
    sampling /= sampling.sum()
    p_d = _apply(p_prime, t)
    objective = float(((_apply(p_opt, t) - target) ** 2).sum())
    p_opt, p_prime, sampling, p_d = (_T(a) for a in (p_opt, p_prime, sampling, p_d))
    dist = MaskDistribution(
        n,
        bool(splus),
        kind,
        p_opt,
        p_prime,
        sampling,
        p_d,
        p_star,
        objective,
        key[3],
        float(gap),
        it,
        time.perf_counter() - start,
    )
    _CACHE[key] = dist
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".{os.getpid()}.tmp.npz"
        np.savez(
            tmp,
            p_opt=p_opt,
            p_prime=p_prime,
            sampling=sampling,
            p_d=p_d,
            p_star=p_star,
            objective=objective,
            gap=gap,
            iterations=it,
            seconds=dist.seconds,
        )
        os.replace(tmp, path)
    return dist
