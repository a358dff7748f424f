"""Accuracy per unit cost: MP-PI, the project's Kernel SHAP, Captum's KernelShap and shap's Permutation and
Partition explainers against exact Shapley values, at equal budgets, measured side by side in one run.

For each of ``--inputs`` sentences of the ``--split`` (``val`` to choose settings on, ``test`` to report)
with ``--min-features..--max-features`` words (n <= 12), every one of the 2^n coalitions is masked
with the shared :class:`~pi_lightning.masking.Masker` and run once, which gives two exact references
by brute force:

* ``full``: the Shapley values of the game "model output on the masked input" (the classifying
  position, the last token): what Kernel SHAP, Captum and shap estimate, and what AS/IAS score;
* ``prefix``: the Shapley values of MP-PI's intermediate-prediction game, where a coalition is scored
  at the end of its last active feature (what MP-PI estimates; read from the same passes). Under the
  default removal mask the two games are the same.

Then, at budgets of ``k * n`` model passes (k in ``--budgets``, default 1, 2, 4, 8), each method
explains the true class of each input (one call per input, ``--seeds`` seeds, each text with its own
draws: :func:`~pi_lightning.attributors.base.text_rng`):

* ``mp-pi``: pi_lightning's MP-PI (``budget="<k>n"``); ``mp-pi-ht`` / ``mp-pi-counts`` with
  ``weights="inclusion"`` / ``"counts"``, ``mp-pi@<d>`` with another defensive mixture;
* ``kernel-shap``: pi_lightning's Kernel SHAP;
* ``captum-kernelshap``: Captum's ``KernelShap`` as a user would call it: ``n_samples = k n``, default
  ``perturbations_per_eval=1``, a forward function that masks and runs one coalition per call;
* ``shap-permutation`` / ``shap-partition``: the library's attributors over shap's explainers (one
  forward-and-backward permutation costs 2n passes, so the Permutation explainer cannot run at 1n).

Reported per method and budget: cosine and Spearman to both references, relative squared error,
passes actually run, seconds per input, ms per pass (mean over inputs x seeds, with a 95% half-width),
and **ranking accuracy** (issue 27: what AS/IAS reward): top-1 / top-3 / top-⌈20%⌉ overlap with the
exact order, Spearman, share of signs right, and the activation studies (AS, IAS, their gap) of each
estimate's order scored on the exact game, beside the exact Shapley order's and the best order's;
paired Wilcoxon tests of ``--baseline`` against every other method per budget, over inputs (seeds
averaged per input). ``--cache-outputs`` serves the methods' passes from the outputs of the
reference's 2^n passes (:class:`CachedAdapter`), which makes many inputs and seeds affordable on a
CPU; the passes are still counted as each method asks for them.

Long texts (n = 20-60, issue 14): exact enumeration stops at n = 12. ``--reference permutations``
replaces it by a high-budget Monte Carlo reference, ``--permutations`` antithetic permutations (each
walk and its reverse) of the full-input game, for the removal game only (``--mask remove`` and no
template suffix), where PI's prefix game is the same game, so one reference serves both columns.

Run::

    python -m benchmarks.shapley_accuracy --inputs 8 --max-features 10
    python -m benchmarks.shapley_accuracy --split test --inputs 40 --min-features 6 --max-features 9 \
        --seeds 3 --cache-outputs      # the ranking-accuracy table (issue 27)
    python -m benchmarks.shapley_accuracy --device cuda --inputs 50 --max-features 12
    python -m benchmarks.shapley_accuracy --model testing:gpt2 --adapter none --inputs 2 --max-features 5
    python -m benchmarks.shapley_accuracy --reference permutations --permutations 400 \
        --dataset imdb --lengths 20,40,60 --inputs 3 --budgets 1,2,4,8     # long texts, equal passes

Writes ``shapley_accuracy[_<tag>].{json,csv,md,png}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import (
    add_common_args,
    coalition_game,
    cosine,
    load_model,
    md_table,
    paired_wilcoxon,
    resolve_template,
    run_info,
    write_json,
    write_markdown,
)
from pi_lightning.attributors._shapley import mask_distribution
from pi_lightning.attributors.base import available_methods, get_attributor, method_settings, text_rng
from pi_lightning.attributors.kernelshap import KernelShapAttributor
from pi_lightning.attributors.mppi import MPPI
from pi_lightning.inference import ClassifierAdapter
from pi_lightning.masking import Masker
from pi_lightning.metrics.functional.stats import mean_confidence_interval
from pi_lightning.testing import exact_shapley

__all__ = ["METHODS", "RANKING_KEYS", "exact_references", "main", "ranking_metrics", "ranking_tests"]

METHODS = ("mp-pi", "kernel-shap", "captum-kernelshap", "shap-permutation", "shap-partition")

# Per-record ranking measures against the exact reference (higher is better except ``ias``): top-k
# overlap of the most positive features (k = 1, 3, 20% of n), Spearman, share of signs right, and
# the activation studies of the estimate's order scored on the exact game (what AS/IAS reward).
RANKING_KEYS = ("top1", "top3", "top20", "spearman", "sign", "as", "ias", "gap")


def exact_references(
    adapter: ClassifierAdapter, masker: Masker, features, target: int, output: str = "prob"
) -> dict[str, np.ndarray]:
    """Exact Shapley values of the full-input game and of MP-PI's prefix game, from all 2^n masked inputs."""
    n = features.n
    # (2^n, n) every coalition, in exact_shapley's enumeration order.
    Z = np.array(list(product([False, True], repeat=n)), dtype=bool)
    # (2^n, 2): the prefix game's and the full-input game's values of every coalition.
    vals = coalition_game(adapter, masker, features, target, output, prefix=True)(Z).double().numpy()
    return {
        "prefix": exact_shapley(lambda _z: vals[:, 0], n),
        "full": exact_shapley(lambda _z: vals[:, 1], n),
        # (2^n,) the full-input game's value of every coalition (what AS/IAS score), indexed by
        # coalition_index.
        "values": vals[:, 1].copy(),
        "se": np.zeros(n),
        "f_empty": float(vals[0, 1]),
        "f_full": float(vals[-1, 1]),
    }


def permutation_reference(
    adapter: ClassifierAdapter,
    masker: Masker,
    features,
    target: int,
    permutations: int,
    seed: int = 0,
    output: str = "prob",
    chunk: int = 64,
) -> dict[str, np.ndarray]:
    """Shapley values of the full-input game from ``permutations`` antithetic permutation walks.

    Each walk adds the features in a random order (and its reverse) and credits each feature with the
    change of the output when it joins; distinct coalitions are run once per chunk of walks.
    """
    n = features.n
    rng = np.random.default_rng(seed)
    fn = coalition_game(adapter, masker, features, target, output)
    pairs = []  # per antithetic pair, (n,): the mean of its two walks' gains of each feature
    done = 0
    while done < permutations:
        half = max(1, min(chunk, (permutations - done + 1) // 2))
        perms = np.stack([rng.permutation(n) for _ in range(half)])
        perms = np.concatenate([perms, perms[:, ::-1]])  # antithetic pairs
        rank = np.argsort(perms, axis=1)  # rank[r, i]: step at which feature i joins walk r
        # (P, n + 1, n): walk r after k steps holds the features of rank < k.
        Z = rank[:, None, :] < np.arange(n + 1)[None, :, None]
        uniq, inv = np.unique(Z.reshape(-1, n), axis=0, return_inverse=True)
        v = np.asarray(fn(uniq), dtype=np.float64)[inv.reshape(-1)].reshape(len(perms), n + 1)
        gains = np.diff(v, axis=1)  # (P, n): gain of the feature added at each step
        # (P, n): per walk, the gain of each feature (feature perms[r, k] joined at step k).
        per_feature = np.take_along_axis(gains, rank, axis=1)
        pairs.append((per_feature[:half] + per_feature[half:]) / 2)
        done += len(perms)
    pairs = np.concatenate(pairs)  # (P / 2, n)
    phi = pairs.mean(0)
    # Standard error of each feature's value over the independent antithetic pairs.
    se = pairs.std(0, ddof=1) / np.sqrt(len(pairs)) if len(pairs) > 1 else np.full(n, np.nan)
    rel_se = float(np.linalg.norm(se) / np.linalg.norm(phi)) if np.linalg.norm(phi) > 0 else float("nan")
    return {
        "full": phi,
        "prefix": phi,
        "se": se,
        # ||SE|| / ||phi||, and the cosine to the true values a reference this noisy is expected to
        # reach (1 / sqrt(1 + rel_se^2)): the ceiling against which the methods' cosines are read.
        "rel_se": rel_se,
        "cos_ceiling": float(1 / np.sqrt(1 + rel_se**2)),
        "f_empty": float(v[0, 0]),
        "f_full": float(v[0, -1]),
        "permutations": done,
    }


def _mppi_settings(name: str) -> dict | None:
    """MP-PI's settings of a method name, or None if it names no MP-PI: ``mp-pi`` (the defaults),
    ``mp-pi-ht`` (``weights="inclusion"``), ``mp-pi-counts`` (``weights="counts"``), each with an
    optional ``@<defensive>`` (another defensive mixture, a fraction in [0, 1)), e.g. ``mp-pi@0.05``."""
    base, _, mix = name.partition("@")
    weights = {"mp-pi": None, "mp-pi-ht": "inclusion", "mp-pi-counts": "counts"}
    if base not in weights:
        return None
    out = {"weights": weights[base]} if weights[base] else {}
    if mix:
        try:
            d = float(mix)
        except ValueError:
            return None
        if not 0.0 <= d < 1.0:
            return None
        out["defensive"] = d
    return out


def _is_mppi_variant(name: str) -> bool:
    """``mp-pi@<defensive>``, ``mp-pi-ht[@<d>]``, ``mp-pi-counts[@<d>]``: MP-PI with other settings."""
    return name != "mp-pi" and _mppi_settings(name) is not None


def _load_reuse(path: str) -> dict:
    """An earlier run's JSON, checked to hold what ``--reuse-reference`` needs."""
    with open(path) as fh:
        data = json.load(fh)
    refs = data.get("references") or []
    if not refs or not all({"text", "target", "full", "prefix", "n"} <= set(r) for r in refs):
        raise ValueError(
            f"--reuse-reference {path!r} holds no references with text, target, n, full and prefix: "
            "pass a JSON written by shapley_accuracy.py."
        )
    if any(r.get("input", 0) >= len(refs) for r in data.get("records", [])):
        raise ValueError(f"--reuse-reference {path!r}: its records point past its references.")
    return data


def _reference_curves(full: np.ndarray, values: np.ndarray, n: int) -> dict[str, float]:
    """AS / IAS of the exact Shapley order on the exact game, and the best any order reaches."""
    as_, ias = exact_curves(full, values)
    best_as, best_ias = best_curves(values, n)
    return {"as_exact": as_, "ias_exact": ias, "as_best": best_as, "ias_best": best_ias}


def _reference_se(ref: dict) -> np.ndarray:
    """A stored reference's per-feature standard errors; older files kept only ||SE|| / ||phi||, from
    which a vector of the same norm is rebuilt (all that the noise correction uses is sum se^2)."""
    if "se" in ref:
        return np.asarray(ref["se"], dtype=np.float64)
    full = np.asarray(ref["full"], dtype=np.float64)
    norm = float(ref.get("rel_se", 0.0)) * float(np.linalg.norm(full))
    return np.full(len(full), norm / np.sqrt(len(full)))


def relative_error(phi: np.ndarray, ref: np.ndarray, se: np.ndarray | None = None) -> tuple[float, float]:
    """``(squared error, noise-corrected relative squared error)`` of an estimate against a reference.

    With a Monte Carlo reference ``ref = phi_true + eps`` (``eps`` of per-feature standard error
    ``se``, independent of the method's draws), ``E ||phi - ref||^2 = ||phi - phi_true||^2 + sum se^2``
    and ``E ||ref||^2 = ||phi_true||^2 + sum se^2``. Subtracting ``sum se^2`` from both gives an
    estimate of the method's relative squared error against the *true* Shapley values that the
    reference's own noise does not inflate (it can come out slightly negative for a method that is
    already more precise than the reference can tell). With an exact reference ``se`` is zero. The
    raw squared error is what paired tests compare: the noise term cancels in expectation from a
    difference of two methods' squared errors on the same input and reference.
    """
    sq = float(np.sum((phi - ref) ** 2))
    noise = float(np.sum(se**2)) if se is not None else 0.0
    denom = float(np.sum(ref**2)) - noise
    return sq, (sq - noise) / denom if denom > 0 else float("nan")


def paired_tests(records: list[dict], baseline: str = "mp-pi", pool_lengths: bool = False) -> list[dict]:
    """Paired two-sided Wilcoxon tests of ``baseline``'s squared error against every other method's,
    per text length (or, with ``pool_lengths``, over all lengths: ``n`` is then ``None``) and budget,
    over the same (input, seed) pairs (scipy). Squared errors are compared relative to the
    reference's norm, so that long and short texts weigh alike when pooled."""
    if pool_lengths:
        records = [{**r, "n": None} for r in records]
    key = {
        (r["n"], r["budget_multiple"], r["method"], r["input"], r["seed"]): r
        for r in records
        if "sq_err" in r
    }
    out = []
    for n, k, m in sorted({(n, k, m) for n, k, m, _, _ in key if m != baseline}):
        pairs = [
            (key[(n, k, baseline, i, s)], r)
            for (nn, kk, mm, i, s), r in key.items()
            if (nn, kk, mm) == (n, k, m) and (n, k, baseline, i, s) in key
        ]
        if not pairs:
            continue
        # With one reference for both (the removal game), the noise correction subtracts the same
        # constant from both members of a pair and divides both by the same norm: comparing rel_err
        # pairs is comparing sq_err pairs, whose difference the reference's noise does not bias.
        a = np.array([x["rel_err"] for x, _ in pairs])
        b = np.array([y["rel_err"] for _, y in pairs])
        out.append(
            {
                "n": n,
                "budget_multiple": k,
                "method": m,
                "pairs": len(pairs),
                "rel_err_baseline": float(np.mean(a)),
                "rel_err_method": float(np.mean(b)),
                "baseline_better_share": float(np.mean(a < b)),
                "p": paired_wilcoxon(a, b),
            }
        )
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def coalition_index(coalitions) -> np.ndarray:
    """Row of each coalition in :func:`exact_references`' value table (``itertools.product`` order:
    feature 0 is the most significant bit).

    Example:
        >>> coalition_index(np.array([[0, 0, 1], [1, 0, 0], [1, 1, 1]], bool)).tolist()
        [1, 4, 7]
    """
    z = np.asarray(coalitions, dtype=np.int64)
    n = z.shape[-1]
    return z @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))


def exact_curves(scores, values: np.ndarray) -> tuple[float, float]:
    """``(AS AUC, IAS AUC)`` of the activation studies in the order of ``scores``, scored on the exact
    game ``values`` (the :func:`exact_references` table) with the library's curve functions: what the
    faithfulness tables measure, for this estimate, with no model pass."""
    from pi_lightning.metrics.functional.curves import activation_auc, activation_coalitions

    s = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    v = np.asarray(values, dtype=np.float64)
    out = []
    for inverse in (False, True):
        # (n + 1, n) coalitions of the study -> (n + 1,) the curve.
        curve = v[coalition_index(activation_coalitions(s, inverse).numpy())]
        out.append(float(activation_auc(torch.from_numpy(curve))))
    return out[0], out[1]


def best_curves(values: np.ndarray, n: int) -> tuple[float, float]:
    """``(highest AS AUC, lowest IAS AUC)`` over all n! orders: the ceiling and floor any attribution
    can reach on this game (dynamic programming over the 2^n coalitions: the best chain of growing
    coalitions from the empty to the full one; the trapezoid area is (sum of the curve minus half its
    two fixed ends) / n)."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.arange(2**n)
    size = np.array([bin(i).count("1") for i in range(2**n)])
    res = []
    for sign in (1.0, -1.0):
        best = np.full(2**n, -np.inf)
        best[0] = sign * v[0]
        for k in range(1, n + 1):
            rows = idx[size == k]
            # best chain to each coalition of size k: its value plus the best of its k sub-coalitions.
            prev = np.full(len(rows), -np.inf)
            for b in range(n):
                bit = 1 << b
                has = (rows & bit) > 0
                prev[has] = np.maximum(prev[has], best[rows[has] ^ bit])
            best[rows] = sign * v[rows] + prev
        total = sign * best[-1]
        res.append(float((total - (v[0] + v[-1]) / 2) / n))
    return res[0], res[1]


def ranking_metrics(phi: np.ndarray, ref: np.ndarray, values: np.ndarray | None = None) -> dict[str, float]:
    """How well an estimate ranks the features of an exact reference (:data:`RANKING_KEYS`).

    ``top<k>``: share of the reference's k most positive features among the estimate's k most positive
    (k = 1, 3 and, for ``top20``, 20% of n rounded up: 2 for n = 6..10, where the metrics' own
    ``top_k_count`` rounds down to 1; the order AS activates first);
    ``spearman``: rank correlation; ``sign``: share of features whose sign is right; with the exact game
    ``values``, ``as`` / ``ias`` / ``gap``: the activation studies of the estimate's order on that game.

    Example:
        >>> m = ranking_metrics(np.array([3.0, 1.0, -2.0, 0.5]), np.array([2.0, 1.5, -1.0, -0.1]))
        >>> m["top1"], m["sign"], m["spearman"]
        (1.0, 0.75, 1.0)
    """
    phi, ref = np.asarray(phi, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    n = len(ref)
    order_e = np.argsort(-phi, kind="stable")
    order_r = np.argsort(-ref, kind="stable")
    out = {}
    for key, k in (("top1", 1), ("top3", min(3, n)), ("top20", max(1, math.ceil(0.2 * n - 1e-9)))):
        out[key] = len(set(order_e[:k].tolist()) & set(order_r[:k].tolist())) / k
    out["spearman"] = _spearman(phi, ref)
    out["sign"] = float(np.mean(np.sign(phi) == np.sign(ref)))
    if values is not None:
        out["as"], out["ias"] = exact_curves(phi, values)
        out["gap"] = out["as"] - out["ias"]
    return out


def ranking_tests(
    records: list[dict], baseline: str = "mp-pi", keys=(*RANKING_KEYS, "rel_err")
) -> list[dict]:
    """Paired two-sided Wilcoxon tests of ``baseline`` against every other method on each ranking
    measure (and the relative error of the values), per budget, over inputs: each input's measure is
    first averaged over its seeds (seeds of one input are not independent samples), so ``pairs`` is
    the number of inputs both methods ran."""
    per: dict[tuple, list[float]] = {}
    for r in records:
        for key in keys:
            if key in r and math.isfinite(r[key]):
                per.setdefault((r["budget_multiple"], r["method"], key, r["input"]), []).append(r[key])
    means = {k: float(np.mean(v)) for k, v in per.items()}
    out = []
    combos = sorted({(k, m) for k, m, _, _ in means if m != baseline})
    for k, m in combos:
        for key in keys:
            inputs = sorted(
                i
                for kk, mm, kk2, i in means
                if (kk, mm, kk2) == (k, m, key) and (k, baseline, key, i) in means
            )
            if not inputs:
                continue
            a = np.array([means[(k, baseline, key, i)] for i in inputs])
            b = np.array([means[(k, m, key, i)] for i in inputs])
            better = (a < b) if key in ("ias", "rel_err") else (a > b)
            out.append(
                {
                    "budget_multiple": k,
                    "method": m,
                    "measure": key,
                    "pairs": len(inputs),
                    "baseline": float(a.mean()),
                    "other": float(b.mean()),
                    "baseline_better_share": float(np.mean(better)),
                    "ties_share": float(np.mean(a == b)),
                    "p": paired_wilcoxon(a, b),
                }
            )
    return out


def _text_seed(seed: int, features) -> int:
    """A per-text seed for a library that takes an int (Captum through torch's RNG, shap): drawn from
    :func:`~pi_lightning.attributors.base.text_rng`, so every text gets its own draws."""
    return int(text_rng(seed, features).integers(2**31 - 1))


class CachedAdapter:
    """A :class:`~pi_lightning.inference.ClassifierAdapter` that serves repeated inputs from memory.

    A decoder's output at a position depends only on the tokens up to it (causal attention), so the
    logits at every position of every sequence it runs are kept under that token prefix; a later
    request whose every asked position is kept is answered from memory, any other sequence is run on
    the model (all its positions kept). Every requested sequence counts in ``forward_passes`` as the
    method's pass, whether answered from memory or run: the count is what the method would run.
    Once the exact reference has run all 2^n coalitions, the estimators' passes are served from it,
    which makes many seeds and inputs affordable on a CPU (their timings then say nothing).
    ``hits`` / ``runs`` count the sequences served and the sequences run.
    """

    def __init__(self, adapter: ClassifierAdapter) -> None:
        self.inner = adapter
        self.cache: dict[tuple, torch.Tensor] = {}
        self.forward_passes = 0
        self.hits = 0
        self.runs = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def clear(self) -> None:
        """Forget the kept outputs (one input's prefixes are of no use to the next)."""
        self.cache.clear()

    def forward_positions(self, sequences, positions=None) -> list[torch.Tensor]:
        seqs = [list(map(int, q)) for q in sequences]
        pos = [
            range(len(q)) if positions is None else [int(x) for x in p]
            for q, p in zip(seqs, positions or seqs, strict=True)
        ]
        missing = [
            i
            for i, (q, p) in enumerate(zip(seqs, pos, strict=True))
            if any(tuple(q[: x + 1]) not in self.cache for x in p)
        ]
        if missing:
            out = self.inner.forward_positions([seqs[i] for i in missing])
            for i, logits in zip(missing, out, strict=True):
                q = seqs[i]
                for x in range(len(q)):
                    self.cache[tuple(q[: x + 1])] = logits[x]
        self.forward_passes += len(seqs)
        self.runs += len(missing)
        self.hits += len(seqs) - len(missing)
        return [
            torch.stack([self.cache[tuple(q[: x + 1])] for x in p])
            if len(p)
            else torch.zeros(0, self.inner.num_labels)
            for q, p in zip(seqs, pos, strict=True)
        ]

    def final_logits(self, sequences) -> torch.Tensor:
        logits = self.forward_positions(sequences, [[len(q) - 1] for q in sequences])
        # N x (1, C) -> (N, C)
        return torch.cat(logits) if logits else torch.zeros(0, self.inner.num_labels)


def _attached(att, adapter):
    """The attributor with ``adapter`` as its model runner when that is a :class:`CachedAdapter`."""
    if isinstance(adapter, CachedAdapter):
        att.adapter = adapter
    return att


def run_method(name: str, k: int, seed: int, model, tok, adapter, masker, features, target, common) -> tuple:
    """One method at budget ``k n`` on one input: ``(phi, passes run, seconds)`` (phi None: cannot run)."""
    n = features.n
    budget = k * n
    if _mppi_settings(name) is not None:
        extra = _mppi_settings(name)
        att = _attached(MPPI(model, tok, budget=f"{k}n", seed=seed, **common, **extra), adapter)
        before, t0 = att.adapter.forward_passes, time.perf_counter()
        [a] = att.attribute([features], target=target)
        return a.scores.numpy(), att.adapter.forward_passes - before, time.perf_counter() - t0
    if name == "shap-permutation" and budget < 2 * n:
        return None, 0, 0.0  # one forward-and-backward permutation is 2n passes: not at equal passes
    if name == "kernel-shap" or (name.startswith("shap-") and name in available_methods()):
        # The library's attributors (shap's explainers once registered): per-text seeds inside;
        # shap's Partition explainer draws nothing (no seed).
        extra = {"seed": seed} if "seed" in method_settings(name) else {}
        att = _attached(
            KernelShapAttributor(model, tok, budget=budget, seed=seed, **common)
            if name == "kernel-shap"
            else get_attributor(name, model, tok, budget=f"{k}n", **extra, **common),
            adapter,
        )
        before, t0 = att.adapter.forward_passes, time.perf_counter()
        [a] = att.attribute([features], target=target)
        return a.scores.numpy(), att.adapter.forward_passes - before, time.perf_counter() - t0
    fn = coalition_game(adapter, masker, features, target)
    before, t0 = adapter.forward_passes, time.perf_counter()
    if name == "captum-kernelshap":
        from captum.attr import KernelShap

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_text_seed(seed, features))
            phi = KernelShap(fn).attribute(
                torch.ones(1, n),
                baselines=torch.zeros(1, n),
                feature_mask=torch.arange(n)[None, :],
                n_samples=budget,
            )
        return phi[0].double().numpy(), adapter.forward_passes - before, time.perf_counter() - t0
    if name == "shap-permutation":
        import shap

        if budget < 2 * n + 1:
            return None, 0, 0.0
        explainer = shap.PermutationExplainer(
            lambda z: fn(z).numpy(),
            shap.maskers.Independent(np.zeros((1, n))),
            seed=_text_seed(seed, features),
        )
        ex = explainer(np.ones((1, n)), max_evals=budget, silent=True)
        return (
            np.asarray(ex.values[0], dtype=np.float64),
            adapter.forward_passes - before,
            time.perf_counter() - t0,
        )
    if name == "shap-partition":
        raise ValueError(
            "shap-partition runs through the library's attributor (get_attributor('shap-partition')), "
            "which this installation does not register."
        )
    raise ValueError(f"Unknown method {name!r}: expected one of {', '.join(METHODS)}.")


def _ranking_markdown(
    summary: list[dict], tests: list[dict], refs: list[dict], split: str, baseline: str = "mp-pi"
) -> list[str]:
    """The ranking-accuracy table and its paired tests, as Markdown blocks."""
    lines = [
        f"\n### Ranking accuracy against exact Shapley values ({split} split)\n\n",
        f"{len(refs)} texts. Each estimate's order against the exact Shapley order of the full-input game "
        "(the one AS/IAS score): top-k = share of the k most positive exact features among the estimate's "
        "k most positive (k = 1, 3, 20% of n rounded up); Spearman; sign = share of features with the right "
        "sign; AS / IAS / gap = the activation studies of the estimate's order scored on the exact game "
        "(every coalition's value from the reference's 2^n passes: the faithfulness tables' measure "
        "without sampling noise). Mean over inputs x seeds, 95% half-width.\n",
    ]
    if refs and "as_exact" in refs[0]:

        def mean(key):
            return float(np.mean([r[key] for r in refs]))

        lines.append(
            f"On the same games, the exact Shapley order scores AS {mean('as_exact'):.4f} / IAS "
            f"{mean('ias_exact'):.4f} (gap {mean('as_exact') - mean('ias_exact'):+.4f}); the best order "
            f"over all n! reaches AS {mean('as_best'):.4f} / IAS {mean('ias_best'):.4f}.\n"
        )

    def f(r, key, d=3):
        if not r["runs"] or key not in r:
            return "—"
        ci = r.get(f"{key}_ci", float("nan"))
        return f"{r[key]:.{d}f} ± {ci:.{d}f}" if math.isfinite(ci) else f"{r[key]:.{d}f}"

    lines.append(
        md_table(
            [
                "Method",
                "Budget",
                "passes/input",
                "top-1 ↑",
                "top-3 ↑",
                "top-⌈20%⌉ ↑",
                "Spearman ↑",
                "sign ↑",
                "AS (exact game) ↑",
                "IAS (exact game) ↓",
                "gap ↑",
                "rel. error ↓",
            ],
            [
                [
                    r["method"],
                    f"{r['budget_multiple']}n",
                    f"{r['passes_per_input']:.1f}" if r["runs"] else "cannot run",
                    *(f(r, key) for key in ("top1", "top3", "top20", "spearman", "sign")),
                    *(f(r, key, 4) for key in ("as", "ias", "gap")),
                    f(r, "rel_err"),
                ]
                for r in summary
                if r["n"] is None
            ],
        )
    )
    for b in baseline.split(","):
        mine = [t for t in tests if t.get("baseline_method", baseline) == b]
        if not mine:
            continue
        by = {(t["budget_multiple"], t["method"], t["measure"]): t for t in mine}
        combos = sorted({(t["budget_multiple"], t["method"]) for t in mine})
        lines += [
            f"\nPaired two-sided Wilcoxon tests of {b} against each method at the same budget, "
            f"over inputs (each input's measure averaged over its seeds): {b} minus the method, p "
            "in parentheses.\n",
            md_table(
                ["Budget", "Method", "inputs", *RANKING_KEYS, "rel_err"],
                [
                    [
                        f"{k}n",
                        m,
                        max(t["pairs"] for t in mine if (t["budget_multiple"], t["method"]) == (k, m)),
                        *(
                            f"{by[(k, m, key)]['baseline'] - by[(k, m, key)]['other']:+.3f} "
                            f"({by[(k, m, key)]['p']:.2g})"
                            if (k, m, key) in by
                            else "—"
                            for key in (*RANKING_KEYS, "rel_err")
                        ),
                    ]
                    for k, m in combos
                ],
            ),
        ]
    return lines


def _plot(path: Path, summary: list[dict], methods: list[str], budgets: list[int], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for m in methods:
        rows = [r for r in summary if r["method"] == m and r["runs"] > 0]
        if not rows:
            continue
        x = [r["budget_multiple"] for r in rows]
        axes[0].errorbar(
            x,
            [r["cos_full"] for r in rows],
            yerr=[r["cos_full_ci"] for r in rows],
            marker="o",
            label=m,
            capsize=3,
        )
        axes[1].errorbar(
            x,
            [r["cos_prefix"] for r in rows],
            yerr=[r["cos_prefix_ci"] for r in rows],
            marker="o",
            label=m,
            capsize=3,
        )
        axes[2].plot(x, [r["ms_per_pass"] for r in rows], marker="o", label=m)
    for ax, t in zip(
        axes,
        (
            "cosine to exact Shapley (full input)",
            "cosine to exact Shapley (prefix game)",
            "ms per model pass",
        ),
        strict=False,
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [f"{b}n" for b in budgets])
        ax.set_xlabel("budget (model passes)")
        ax.set_title(t, fontsize=9)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_lengths(path: Path, summary: list[dict], refs: list[dict], methods: list[str], title: str) -> None:
    """One row per text length: cosine to the reference (with the reference's own expected cosine to
    the true values, dashed, as the ceiling) and the noise-corrected relative error (log scale),
    both against the forward passes actually run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["n"] for r in summary if r["n"] is not None and r["runs"]})
    if not groups:
        return
    fig, axes = plt.subplots(2, len(groups), figsize=(4.5 * len(groups), 7.2), squeeze=False)
    for ax, ax2, g in zip(axes[0], axes[1], groups, strict=True):
        for m in methods:
            rows = [r for r in summary if r["n"] == g and r["method"] == m and r["runs"]]
            if rows:
                x = [r["passes_per_input"] for r in rows]
                ax.errorbar(
                    x,
                    [r["cos_full"] for r in rows],
                    yerr=[r["cos_full_ci"] for r in rows],
                    marker="o",
                    label=m,
                    capsize=3,
                )
                ax2.plot(x, [max(r["rel_err"], 1e-4) for r in rows], marker="o", label=m)
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.set_xlabel("forward passes run per input")
        ax2.set_ylabel("relative squared error (noise-corrected)")
        ax2.grid(alpha=0.3)
        ceiling = [r["cos_ceiling"] for r in refs if r["n"] == g]
        ax.axhline(float(np.mean(ceiling)), color="k", ls="--", lw=0.8, label="reference ceiling")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("forward passes run per input")
        ax.set_ylabel("cosine to the reference")
        ax.set_title(f"n = {g} words ({len(ceiling)} texts)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--inputs", type=int, default=8, help="test sentences to explain")
    p.add_argument("--min-features", type=int, default=6)
    p.add_argument(
        "--max-features",
        type=int,
        default=10,
        help="at most 12 with the exact reference (2^n masked inputs each)",
    )
    p.add_argument(
        "--reference",
        default="exact",
        choices=("exact", "permutations"),
        help="exact enumeration (n <= 12) or antithetic permutations (removal game, long texts)",
    )
    p.add_argument("--permutations", type=int, default=20000, help="walks of the permutation reference")
    p.add_argument("--budgets", default="1,2,4,8", help="budget multiples k (budget = k n passes)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method, budget and input")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--dataset",
        default="rotten_tomatoes",
        choices=("rotten_tomatoes", "imdb"),
        help="test texts to explain (IMDB for long texts)",
    )
    p.add_argument(
        "--lengths",
        default=None,
        help="comma-separated word counts, e.g. 20,40,60: --inputs texts per length, each cut after its "
        "n-th word (overrides --min/--max-features)",
    )
    p.add_argument(
        "--reuse-reference",
        default=None,
        help="a JSON written by an earlier run: explain its texts against its references (no new "
        "reference passes) and carry over its records of the methods not run again",
    )
    p.add_argument(
        "--carry-as",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="with --reuse-reference: carry the earlier run's records of method OLD under the name NEW "
        "(e.g. mp-pi=mp-pi@0.05 when that run used the earlier default)",
    )
    p.add_argument("--mask", default="remove", help="'remove' (the library default) or '...' (the paper's)")
    p.add_argument(
        "--baseline",
        default="mp-pi",
        help="the method(s), comma-separated, that the ranking table's paired tests compare every other "
        "method with",
    )
    p.add_argument(
        "--cache-outputs",
        action="store_true",
        help="serve the methods' passes from the model outputs of the exact reference's 2^n passes (a "
        "decoder's output depends only on the tokens up to it): passes are counted as the methods ask "
        "for them, values are the model's, timings are not measured",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="split the texts come from: 'val' to choose settings on, 'test' (default) to report",
    )
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    template = resolve_template(args)
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else None
    if lengths:
        args.min_features, args.max_features = min(lengths), max(lengths)
    if args.reference == "permutations":
        if args.mask != "remove" or template.split("{text}")[-1]:
            raise ValueError(
                "--reference permutations is for the removal game, where PI's prefix game is the "
                "full game: use --mask remove and a template with nothing after {text}."
            )
        if not 2 <= args.min_features <= args.max_features:
            raise ValueError(
                f"Need 2 <= --min-features <= --max-features, got {args.min_features}..{args.max_features}."
            )
    elif not 2 <= args.min_features <= args.max_features <= 12:
        raise ValueError(
            f"Need 2 <= --min-features <= --max-features <= 12 (exact Shapley enumerates 2^n inputs), "
            f"got {args.min_features}..{args.max_features}."
        )
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS and not _is_mppi_variant(m):
            raise ValueError(
                f"Unknown method {m!r}: expected some of {', '.join(METHODS)}, mp-pi@<defensive> "
                "(MP-PI with another defensive mixture, e.g. mp-pi@0.05), mp-pi-ht[@<defensive>] or "
                "mp-pi-counts[@<defensive>] (MP-PI with weights='inclusion' or 'counts')."
            )
    reused = _load_reuse(args.reuse_reference) if args.reuse_reference else None
    carry = dict(x.split("=", 1) for x in args.carry_as)
    if reused is not None:
        lengths = sorted({r["n"] for r in reused["references"]}) if reused.get("permutations") else lengths
    if "shap-permutation" in methods:
        try:
            import shap  # noqa: F401
        except ImportError:
            import warnings

            warnings.warn(
                "shap is not installed (`pip install shap`): the shap-permutation peer is skipped.",
                UserWarning,
                stacklevel=2,
            )
            methods.remove("shap-permutation")
    if "shap-partition" in methods and "shap-partition" not in available_methods():
        import warnings

        warnings.warn(
            "shap-partition is not a registered attributor in this installation: the peer is skipped.",
            UserWarning,
            stacklevel=2,
        )
        methods.remove("shap-partition")

    from benchmarks.faithfulness_table import select_texts  # same data selection as the table
    from pi_lightning.features import Featurizer

    model, tok, dtype = load_model(args)
    info = run_info(args, dtype, "shapley_accuracy.py", raw)
    common = {
        "granularity": "word",
        "template": template,
        "mask": args.mask,
        "max_tokens": args.max_tokens,
    }
    featurizer = Featurizer(tok, "word", template)
    texts, labels = [], []
    if reused is not None:
        texts = [r["text"] for r in reused["references"]]
        labels = [int(r["target"]) for r in reused["references"]]
    for lo, hi in (
        []
        if reused is not None
        else [(n, n) for n in lengths]
        if lengths
        else [(args.min_features, args.max_features)]
    ):
        t, y = select_texts(
            args.dataset, args.split, "word", hi, args.inputs, featurizer, min_features=lo, cut=bool(lengths)
        )
        texts, labels = texts + t, labels + y
    adapter = ClassifierAdapter(model, max_tokens=args.max_tokens)
    if args.cache_outputs:
        adapter = CachedAdapter(adapter)
    masker = Masker(tok, args.mask)
    feats = [featurizer(t) for t in texts]
    for n in sorted({f.n for f in feats}):  # P' once per n, cached (not part of the per-call cost)
        mask_distribution(n)
    print(
        f"{info['model']} + {info['adapter']} on {info['device']}/{dtype}: {len(feats)} inputs, "
        f"n = {[f.n for f in feats]}, budgets {budgets} x n, {args.seeds} seeds",
        flush=True,
    )

    # Warm-up: one pass of every kind so that first-call costs do not land on one method.
    coalition_game(adapter, masker, feats[0], labels[0])(np.ones((2, feats[0].n)))
    records, refs = [], []
    shown = list(methods)  # the methods of the tables: those run, then those carried over
    carried: list[dict] = []
    if reused is not None:
        for r in reused["records"]:
            name = carry.get(r["method"], r["method"])
            if name in methods:
                continue  # run again here
            carried.append({**r, "method": name})
            if name not in shown:
                shown.append(name)

    def write() -> dict:
        """Summaries and result files from the inputs done so far (called after every input)."""
        summary = []
        groups = sorted({r["n"] for r in refs}) if lengths else [None]
        # The records of the inputs done so far: run here, and carried over from --reuse-reference.
        done = records + [c for c in carried if c["input"] < len(refs)]
        for g, m, k in ((g, m, k) for g in groups for m in shown for k in budgets):
            rs = [
                r
                for r in done
                if r["method"] == m and r["budget_multiple"] == k and "cos_full" in r and g in (None, r["n"])
            ]
            row = {"n": g, "method": m, "budget_multiple": k, "runs": len(rs)}
            if rs:
                keys = ("cos_full", "spearman_full", "cos_prefix", "spearman_prefix", "rel_err")
                for key in keys + tuple(x for x in RANKING_KEYS if any(x in r for r in rs)):
                    v = torch.tensor(
                        [r[key] for r in rs if key in r and math.isfinite(r[key])], dtype=torch.float64
                    )
                    row[key], row[f"{key}_ci"] = (
                        mean_confidence_interval(v) if len(v) else (float("nan"),) * 2
                    )
                row["passes_per_input"] = float(np.mean([r["passes"] for r in rs]))
                row["seconds_per_input"] = float(np.mean([r["seconds"] for r in rs]))
                row["ms_per_pass"] = (
                    1e3 * sum(r["seconds"] for r in rs) / max(1, sum(r["passes"] for r in rs))
                )
            summary.append(row)

        goals = {}
        if "mp-pi" in shown and "captum-kernelshap" in shown:
            by = {(r["method"], r["budget_multiple"]): r for r in summary if r["n"] == groups[-1]}
            for k in budgets:
                a, b = by[("mp-pi", k)], by[("captum-kernelshap", k)]
                goals[f"{k}n"] = {
                    "mp-pi_more_accurate_full": a["cos_full"] > b["cos_full"],
                    "mp-pi_more_accurate_prefix": a["cos_prefix"] > b["cos_prefix"],
                    "mp-pi_not_slower_per_pass": a["ms_per_pass"] <= b["ms_per_pass"],
                    "ms_per_pass_ratio": a["ms_per_pass"] / b["ms_per_pass"],
                }

        tests = (
            paired_tests(done) + (paired_tests(done, pool_lengths=True) if lengths else [])
            if "mp-pi" in shown
            else []
        )
        rtests = [
            {**t, "baseline_method": b}
            for b in args.baseline.split(",")
            if b in shown
            for t in ranking_tests(done, b)
        ]
        tag = f"_{args.tag}" if args.tag else ""
        stem = Path(args.out) / f"shapley_accuracy{tag}"
        cos_fp = [r["cos_full_prefix"] for r in refs]
        result = {
            **info,
            "inputs": len(feats),
            "n": [f.n for f in feats],
            "budgets": budgets,
            "seeds": args.seeds,
            "template": template,
            "dataset": args.dataset,
            "reference": args.reference,
            "permutations": args.permutations if args.reference == "permutations" else None,
            "mask": args.mask,
            "split": args.split,
            "cached_outputs": (
                {"served": adapter.hits, "run": adapter.runs} if isinstance(adapter, CachedAdapter) else None
            ),
            "summary": summary,
            "ranking_tests": rtests,
            "paired_tests": tests,
            "goals": goals,
            "references": refs,
            "records": done,
            "reused_reference": args.reuse_reference,
            "carried_as": carry,
            "cos_full_vs_prefix_mean": float(np.mean(cos_fp)),
        }
        write_json(stem.with_suffix(".json"), result)
        with open(stem.with_suffix(".csv"), "w", newline="") as fh:
            keys = [
                "method",
                "budget_multiple",
                "runs",
                "cos_full",
                "cos_full_ci",
                "spearman_full",
                "cos_prefix",
                "cos_prefix_ci",
                "spearman_prefix",
                "rel_err",
                "rel_err_ci",
                "passes_per_input",
                "seconds_per_input",
                "ms_per_pass",
                *RANKING_KEYS,
            ]
            w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(summary)

        def f3(r, key):
            if r["runs"] == 0:
                return "—"
            ci = r.get(f"{key}_ci", float("nan"))
            return f"{r[key]:.3f} ± {ci:.3f}" if math.isfinite(ci) else f"{r[key]:.3f}"

        table = md_table(
            [
                "n",
                "Method",
                "Budget",
                "cos (full) ↑",
                "Spearman (full) ↑",
                "cos (prefix) ↑",
                "Spearman (prefix) ↑",
                "rel. error ↓",
                "passes/input",
                "s/input",
                "ms/pass",
            ],
            [
                [
                    r["n"] or "all",
                    r["method"],
                    f"{r['budget_multiple']}n",
                    f3(r, "cos_full"),
                    f3(r, "spearman_full"),
                    f3(r, "cos_prefix"),
                    f3(r, "spearman_prefix"),
                    f3(r, "rel_err"),
                    f"{r['passes_per_input']:.1f}" if r["runs"] else "needs ≥ 2n+1",
                    f"{r['seconds_per_input']:.3f}" if r["runs"] else "—",
                    f"{r['ms_per_pass']:.2f}" if r["runs"] else "—",
                ]
                for r in summary
            ],
        )
        lines = [
            "### Accuracy per unit cost against "
            + ("exact Shapley values\n" if args.reference == "exact" else "a permutation reference\n"),
            (
                f"{len(refs)} {args.dataset} test texts"
                + (f" cut to n = {', '.join(map(str, lengths))} words" if lengths else "")
                + f" (n = {min(r['n'] for r in refs)}..{max(r['n'] for r in refs)} words), explained class = "
                f"true label, template `{template!r}`, mask `{args.mask}`, {args.seeds} seeds per method x "
                "budget x input. Mean over inputs x seeds, 95% half-width.\n"
            ),
            (
                "`full`: exact Shapley values of the model output on the masked input (2^n passes); "
                "`prefix`: exact Shapley values of MP-PI's intermediate-prediction game. Mean cosine "
                f"between the two exact references: {np.mean(cos_fp):.3f} (min {np.min(cos_fp):.3f}).\n"
                if args.reference == "exact"
                else (
                    f"Reference: {args.permutations} antithetic permutations of the removal game per input "
                    "(the prefix game is the same game, so both columns are equal); its standard error "
                    "per input, as ||SE|| / ||phi|| and the cosine to the true values it is expected to "
                    "reach (a method's cosine cannot be read above it): "
                    + "; ".join(
                        f"n={r['n']}: {r['rel_se']:.3f} / {r['cos_ceiling']:.3f} ({r['passes']} passes)"
                        for r in refs
                    )
                    + ".\n"
                )
            ),
            f"Date {info['date']}; machine: {info['machine']}; {info['device']}/{dtype}.\n",
            f"Command: `{info['command']}`\n",
            "`rel. error`: ||estimate - reference||² / ||reference||², each method against the game it "
            "estimates (MP-PI: prefix; the others: full), with the reference's own noise (its squared "
            "standard errors) subtracted from both, so that it estimates the error against the true "
            "Shapley values (0 for the exact reference; a value near 0 or below means the method is as "
            "precise as the reference can tell).\n",
            table,
        ]
        if tests:
            lines += [
                "\nPaired two-sided Wilcoxon tests of MP-PI's squared error against each method's, on the "
                "same inputs x seeds at the same budget (the reference's noise cancels in expectation "
                "from the paired difference):\n",
                md_table(
                    [
                        "n",
                        "Budget",
                        "Method",
                        "pairs",
                        "rel. error MP-PI",
                        "rel. error method",
                        "MP-PI closer (share)",
                        "p",
                    ],
                    [
                        [
                            t["n"] or "all",
                            f"{t['budget_multiple']}n",
                            t["method"],
                            t["pairs"],
                            f"{t['rel_err_baseline']:.3f}",
                            f"{t['rel_err_method']:.3f}",
                            f"{t['baseline_better_share']:.2f}",
                            f"{t['p']:.2g}",
                        ]
                        for t in tests
                    ],
                ),
            ]
        if any("top1" in r for r in summary):
            lines += _ranking_markdown(summary, rtests, refs, args.split, args.baseline)
        for k, g in goals.items():
            lines.append(
                f"- {k}: MP-PI more accurate than Captum KernelShap (full ref.) "
                f"{g['mp-pi_more_accurate_full']}, "
                f"(prefix ref.) {g['mp-pi_more_accurate_prefix']}; ms/pass ratio MP-PI / Captum "
                f"{g['ms_per_pass_ratio']:.2f} (not slower: {g['mp-pi_not_slower_per_pass']})\n"
            )
        lines.append(f"\n![accuracy per budget]({stem.name}.png)\n")
        write_markdown(stem.with_suffix(".md"), "".join(lines))
        plot_title = f"{args.model} + {args.adapter}; {len(refs)} inputs, mask {args.mask}"
        if lengths:
            _plot_lengths(stem.with_suffix(".png"), summary, refs, shown, plot_title)
        else:
            _plot(
                stem.with_suffix(".png"),
                summary,
                shown,
                budgets,
                plot_title,
            )
        for r in summary:
            if r["runs"]:
                print(
                    f"  {r['method']:<18} {r['budget_multiple']}n  cos full {r['cos_full']:.3f}  cos prefix "
                    f"{r['cos_prefix']:.3f}  {r['passes_per_input']:.0f} passes  {r['ms_per_pass']:.2f} "
                    "ms/pass"
                )
        print(f"wrote {stem}.{{json,csv,md,png}}")
        return result

    for i, (f, y) in enumerate(zip(feats, labels, strict=False)):
        t0 = time.perf_counter()
        if isinstance(adapter, CachedAdapter):
            adapter.clear()
            if reused is not None and args.reference == "exact":
                exact_references(adapter, masker, f, y)  # the 2^n passes the methods are served from
        if reused is not None:
            old_ref = reused["references"][i]
            ref = {
                "full": np.asarray(old_ref["full"]),
                "prefix": np.asarray(old_ref["prefix"]),
                "se": _reference_se(old_ref),
                "values": np.asarray(old_ref["values"]) if "values" in old_ref else None,
                "rel_se": old_ref.get("rel_se", 0.0),
                "cos_ceiling": old_ref.get("cos_ceiling", 1.0),
            }
            ref_passes = old_ref["passes"]
        elif args.reference == "exact":
            ref, ref_passes = exact_references(adapter, masker, f, y), 2**f.n
        else:
            before = adapter.forward_passes
            ref = permutation_reference(adapter, masker, f, y, args.permutations, seed=10_000 + i)
            ref_passes = adapter.forward_passes - before
        # A reused reference keeps the time it took when it was computed.
        ref_s = reused["references"][i]["seconds"] if reused is not None else time.perf_counter() - t0
        refs.append(
            {
                "text": f.text,
                "n": f.n,
                "target": y,
                "seconds": ref_s,
                "passes": ref_passes,
                "reference": args.reference,
                "rel_se": ref.get("rel_se", 0.0),
                "cos_ceiling": ref.get("cos_ceiling", 1.0),
                "full": ref["full"].tolist(),
                "prefix": ref["prefix"].tolist(),
                "se": ref["se"].tolist(),
                **(
                    {"values": ref["values"].tolist(), **_reference_curves(ref["full"], ref["values"], f.n)}
                    if ref.get("values") is not None
                    else {}
                ),
                "cos_full_prefix": cosine(ref["full"], ref["prefix"]),
                "spearman_full_prefix": _spearman(ref["full"], ref["prefix"]),
            }
        )
        for k in budgets:
            for seed in range(args.seeds):
                for m in methods:
                    phi, passes, secs = run_method(m, k, seed, model, tok, adapter, masker, f, y, common)
                    rec = {
                        "input": i,
                        "n": f.n,
                        "method": m,
                        "budget_multiple": k,
                        "seed": seed,
                        "passes": int(passes),
                        "seconds": secs,
                    }
                    if phi is not None:
                        for which in ("full", "prefix"):
                            rec[f"cos_{which}"] = cosine(phi, ref[which])
                            rec[f"spearman_{which}"] = _spearman(phi, ref[which])
                        # Against the reference of the game the method estimates under this mask.
                        rec["sq_err"], rec["rel_err"] = relative_error(
                            phi, ref["prefix" if _mppi_settings(m) is not None else "full"], ref["se"]
                        )
                        # Ranking against the full-input game, the one AS/IAS score, for every method.
                        rec.update(ranking_metrics(phi, ref["full"], ref.get("values")))
                    records.append(rec)
        print(
            f"  input {i + 1}/{len(feats)} (n={f.n}) done; reference {ref_s:.1f} s, "
            f"cos(full, prefix) {refs[-1]['cos_full_prefix']:.3f}",
            flush=True,
        )
        result = write()
    return result


if __name__ == "__main__":
    main()
