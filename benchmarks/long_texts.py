"""Long texts (n = 20, 40, 60 words): estimator accuracy against a noise-corrected permutation reference
at equal passes, from a resumable per-text cache that any run (this CPU, a later session, a GPU) extends.

Why a cache: one text at n = 60 costs thousands of model passes (a reference of 40 antithetic
permutation walks is ~40 n passes, every method x budget another k n), which is hours per length on a
shared CPU. So every finished unit of work (a text's reference; one method x budget x seed on it) is
written at once into ``<out>/long_texts[_<tag>].json`` with its attribution vector, and the report is
rendered from whatever the cache holds, saying how many texts it rests on per length. A run skips
what is cached, so the same command extends the table (``--texts 30`` after ``--texts 20``; another
``--lengths``; ``--device cuda --dtype fp32`` on a GPU). Several processes may extend the same cache
at once: each write merges under a file lock.

What is measured, per text (IMDB reviews of the ``--split``, the first ones with at least n words, cut
after their n-th word; explained class = the true label; removal game, where MP-PI's prefix game is
the full game, so one reference serves every method):

* the reference: :func:`benchmarks.shapley_accuracy.permutation_reference`, ``--permutations``
  antithetic walks, with its per-feature standard errors;
* each method at budgets ``k n`` (``--budgets``; ``--moonshot`` adds MP-PI at ``8n/3``, a third of the
  top budget), ``--seeds`` seeds, each seed a function of the text's index (no draw shared by texts):
  ``mp-pi`` (the default mixture, 0.7 of P* in P'), ``mp-pi-shapley`` (every input drawn from the
  Shapley distribution P*, ``distribution="shapley"``), ``kernel-shap`` (pi_lightning's), and the
  peers of :func:`benchmarks.shapley_accuracy.run_method` (``captum-kernelshap``,
  ``shap-permutation``) at whole multiples of n.

Reported (``<out>/long_texts[_<tag>].md``): per length and pooled, each method x budget's mean relative
squared error (noise-corrected, :func:`benchmarks.shapley_accuracy.relative_error`) with its 95%
interval and median, cosine and Spearman to the reference, passes run; paired two-sided Wilcoxon tests
on the same texts (per-text squared errors averaged over seeds) of MP-PI against every peer at equal
budget and of P* against the mixture; and the moonshot: MP-PI at 8n/3 against Kernel SHAP at 8n, and
the budget MP-PI needs to reach Kernel SHAP's 8n error (log-log interpolation of its mean error over
budgets, with a bootstrap interval over texts). Run::

    python -m benchmarks.long_texts --lengths 20 --texts 20            # extend n = 20 to 20 texts
    python -m benchmarks.long_texts --lengths 40,60 --texts 20 --time-limit 60
    python -m benchmarks.long_texts --report-only                     # render the table from the cache
    python -m benchmarks.long_texts --device cuda --dtype fp32 --lengths 20,40,60 --texts 50
    python -m benchmarks.long_texts --model testing:gpt2 --adapter none --lengths 6 --texts 2 --out /tmp/lt
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import (
    add_common_args,
    cosine,
    load_average,
    load_model,
    md_table,
    paired_wilcoxon,
    result_stem,
    run_info,
    write_markdown,
)
from benchmarks.shapley_accuracy import (
    _spearman,
    permutation_reference,
    relative_error,
    run_method,
)

__all__ = ["METHODS", "budget_for_error", "main", "render_report"]

METHODS = ("mp-pi", "mp-pi-shapley", "kernel-shap", "captum-kernelshap", "shap-permutation")
_OWN = ("mp-pi", "mp-pi-shapley", "kernel-shap")  # budgets of any size; the others whole multiples of n
_PEER_NAMES = {
    "mp-pi": "MP-PI (mixture 0.7, counts weights)",
    "mp-pi-shapley": "MP-PI, inputs from P* (counts weights)",
    "kernel-shap": "Kernel SHAP (pi_lightning)",
    "captum-kernelshap": "Captum KernelShap",
    "shap-permutation": "shap Permutation",
}
_VERSION = 1


def _fraction(text: str) -> Fraction:
    """A budget multiple: ``8``, ``8n``, ``8/3`` or ``8n/3``."""
    s = text.strip().replace("n", "")
    try:
        k = Fraction(s)
    except (ValueError, ZeroDivisionError):
        k = Fraction(-1)
    if k <= 0:
        raise ValueError(f"A budget multiple must be positive, like 2, 8 or 8/3 (of n passes), got {text!r}.")
    return k


def _label(k: Fraction) -> str:
    return f"{k.numerator}n" if k.denominator == 1 else f"{k.numerator}n/{k.denominator}"


def _run_key(method: str, k: Fraction, seed: int) -> str:
    return f"{method}|{_label(k)}|{seed}"


def _text_key(split: str, n: int, index: int) -> str:
    return f"{split}/{n}/{index}"


def text_seed(n: int, index: int, seed: int) -> int:
    """The seed of a method's draw on text ``index`` of length ``n``: distinct per text and per seed."""
    return 1_000_003 * n + 1009 * index + seed


def _adapter_digest(adapter: str | None) -> str | None:
    """SHA-256 (first 16 hex) of an adapter's weight files: which fine-tuned model the cache holds."""
    if not adapter:
        return None
    h = hashlib.sha256()
    files = sorted(p for p in Path(adapter).iterdir() if p.suffix in (".safetensors", ".bin"))
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16] if files else None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---------------------------------------------------------------------------------------------- cache


def _empty_cache(setup: dict) -> dict:
    return {"version": _VERSION, "setup": setup, "texts": {}, "runs": []}


def load_cache(path: Path) -> dict | None:
    """The cache at ``path`` (``None`` when there is none)."""
    if not path.is_file():
        return None
    with open(path) as fh:
        data = json.load(fh)
    if data.get("version") != _VERSION or "texts" not in data or "setup" not in data:
        raise ValueError(
            f"{path} is not a long_texts cache (version {_VERSION} with 'setup' and 'texts'): pass "
            "another --out or --tag for a new one."
        )
    return data


def _check_setup(cache: dict, setup: dict, path: Path) -> None:
    """A cache holds one game: the same model, adapter weights, template, mask and precision."""
    old = cache["setup"]
    diff = {k: (old.get(k), v) for k, v in setup.items() if old.get(k) != v}
    if diff:
        what = "; ".join(f"{k}: cached {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{path} was written for another setup ({what}): "
            "its references would not be of this game. Pass the same --model/--adapter/--template/--dtype, "
            "or another --tag for a new cache."
        )


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    # The lock file lives in the temporary folder (one per cache path), not beside the results.
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"long_texts_{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save_entry(path: Path, setup: dict, key: str, entry: dict) -> dict:
    """Merge one text's entry into the cache on disk (under a lock; other writers' texts and runs are
    kept) and return the merged cache. Written to a temporary file and renamed: never half-written."""
    with _locked(path):
        cache = load_cache(path) or _empty_cache(setup)
        _check_setup(cache, setup, path)
        old = cache["texts"].get(key)
        if old is not None and old["text"] != entry["text"]:
            raise ValueError(f"{path}: text {key} changed ({old['text'][:40]!r} -> {entry['text'][:40]!r}).")
        merged = {**(old or {}), **{k: v for k, v in entry.items() if k != "runs"}}
        merged["runs"] = {**(old or {}).get("runs", {}), **entry.get("runs", {})}
        if old is not None and old.get("reference") is not None:
            merged["reference"] = old["reference"]  # the first reference stays: runs were scored on it
        cache["texts"][key] = merged
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump(cache, fh, indent=1, default=float)
        os.replace(tmp, path)
    return cache


def _log_run(path: Path, setup: dict, info: dict) -> None:
    with _locked(path):
        cache = load_cache(path) or _empty_cache(setup)
        _check_setup(cache, setup, path)
        # One entry per run (its id), rewritten as it goes: a run that is stopped keeps its log.
        cache["runs"] = [r for r in cache["runs"] if r.get("run_id") != info.get("run_id")] + [info]
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump(cache, fh, indent=1, default=float)
        os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- methods


def run_one(name: str, k: Fraction, seed: int, model, tok, adapter, masker, features, target, common):
    """``(phi, passes run, seconds)`` of one method at budget ``ceil(k n)`` on one text."""
    from pi_lightning.attributors.kernelshap import KernelShapAttributor
    from pi_lightning.attributors.mppi import MPPI

    budget = math.ceil(k * features.n)
    if name in _OWN:
        if name == "kernel-shap":
            att = KernelShapAttributor(model, tok, budget=budget, seed=seed, **common)
        else:
            extra = {"distribution": "shapley"} if name == "mp-pi-shapley" else {}
            # The cache's MP-PI cells were run with the paper's count weights (MP-PI's default until
            # issue 27 made it "inclusion"): pinned, so that resumed runs extend the same estimator.
            att = MPPI(model, tok, budget=budget, seed=seed, weights="counts", **common, **extra)
        before, t0 = att.adapter.forward_passes, time.perf_counter()
        [a] = att.attribute([features], target=target)
        return a.scores.double().numpy(), att.adapter.forward_passes - before, time.perf_counter() - t0
    if k.denominator != 1:
        raise ValueError(f"{name} runs at whole multiples of n only, got {_label(k)}.")
    return run_method(name, int(k), seed, model, tok, adapter, masker, features, target, common)


def _imported_reference(
    old: dict, walks: int, adapter, masker, features, target: int, info: dict
) -> dict | None:
    """An earlier run's permutation reference of this text, if it is of this model's game: every
    permutation walk's gains sum to f(full) - f(empty), so the reference must too (two passes here);
    otherwise it is left out with a warning (e.g. the adapter was retrained since)."""
    import warnings

    from benchmarks._common import coalition_game

    if int(old["target"]) != target:
        return None
    phi = np.asarray(old["full"], dtype=np.float64)
    # (2, n): the empty and the full coalition.
    ends = coalition_game(adapter, masker, features, target)(np.arange(2)[:, None].repeat(features.n, 1) > 0)
    gap = abs(float(phi.sum()) - float(ends[1] - ends[0]))
    if gap > 1e-4:
        warnings.warn(
            f"--import-reference: the reference of {features.text[:40]!r} (n = {features.n}) sums to "
            f"{phi.sum():.6f}, this model's f(full) - f(empty) is {float(ends[1] - ends[0]):.6f}: another "
            "model; computing a new reference instead.",
            UserWarning,
            stacklevel=2,
        )
        return None
    return {
        "phi": phi.tolist(),
        "se": np.asarray(old["se"], dtype=np.float64).tolist(),
        "walks": walks,
        "passes": int(old["passes"]),
        "seconds": float(old["seconds"]),
        "f_empty": float(ends[0]),
        "f_full": float(ends[1]),
        "device": "cpu",
        "date": info["date"],
        "imported_from": "shapley_accuracy.py --reference permutations (checked: sums to f(full) - f(empty) "
        f"within {gap:.1e})",
    }


# --------------------------------------------------------------------------------------------- report


def _per_text(cache: dict, split: str) -> dict:
    """``{(n, index): {"ref": ..., "runs": {(method, k): [record per seed]}}}`` scored against the
    reference: relative error (noise-corrected), squared error, cosine, Spearman, passes, seconds."""
    out = {}
    for entry in cache["texts"].values():
        ref = entry.get("reference")
        if entry["split"] != split or ref is None:
            continue
        phi_ref, se = np.asarray(ref["phi"]), np.asarray(ref["se"])
        runs: dict = {}
        for key, r in entry.get("runs", {}).items():
            method, label, _seed = key.split("|")
            if r.get("phi") is None:
                continue
            phi = np.asarray(r["phi"])
            sq, rel = relative_error(phi, phi_ref, se)
            runs.setdefault((method, _fraction(label)), []).append(
                {
                    "sq": sq / float(np.sum(phi_ref**2)),
                    "rel": rel,
                    "cos": cosine(phi, phi_ref),
                    "spearman": _spearman(phi, phi_ref),
                    "passes": r["passes"],
                    "seconds": r["seconds"],
                }
            )
        noise = float(np.sum(se**2) / np.sum(phi_ref**2))
        out[(entry["n"], entry["index"])] = {"ref": ref, "noise": noise, "runs": runs}
    return out


def _mean_ci(values) -> tuple[float, float]:
    from pi_lightning.metrics.functional.stats import mean_confidence_interval

    v = [x for x in values if math.isfinite(x)]
    if not v:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return mean_confidence_interval(torch.tensor(v, dtype=torch.float64))


def _text_mean(recs: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in recs]))


def budget_for_error(budgets, errors, target: float) -> float:
    """The budget multiple at which a method's mean error falls to ``target``: linear interpolation of
    log error against log budget between the measured budgets (errors at or below 0, which a
    noise-corrected mean can be, count as 1e-6). ``0.0`` when the smallest budget is already at or
    below ``target``, ``inf`` when even the largest is above it (censored, so that bootstrap
    percentiles still order them). Error that halves per budget doubling gives the exact answer.

    Example:
        >>> round(budget_for_error([2, 8], [2.0, 0.5], 1.0), 6), budget_for_error([2, 8], [2.0, 1.5], 1.0)
        (4.0, inf)
    """
    b = np.log(np.asarray(budgets, dtype=np.float64))
    e = np.maximum(np.asarray(errors, dtype=np.float64), 1e-6)
    if len(b) < 2 or not math.isfinite(target):
        return float("nan")
    order = np.argsort(b)
    b, le = b[order], np.log(e[order])
    t = math.log(max(target, 1e-6))
    if le[0] <= t:
        return 0.0
    for i in range(len(b) - 1):
        lo, hi = le[i], le[i + 1]
        if hi <= t < lo:  # the first crossing, error falling through the target
            return float(math.exp(b[i] + (t - lo) * (b[i + 1] - b[i]) / (hi - lo)))
    return float("inf")


def _share_text(k: float, moon: dict) -> str:
    """A budget multiple as a share of Kernel SHAP's passes (censored ends as bounds)."""
    top = float(_fraction(moon["kernel_shap_budget"]))
    if k == 0.0:
        return f"≤ {float(_fraction(moon['mp_pi_budgets'][0])) / top:.2f}"
    if math.isinf(k):
        return f"> {float(_fraction(moon['mp_pi_budgets'][-1])) / top:.2f}"
    return f"{k / top:.2f}" if math.isfinite(k) else "—"


def _budget_text(k: float, budgets: list[str]) -> str:
    if k == 0.0:
        return f"≤ {budgets[0]}"
    if math.isinf(k):
        return f"> {budgets[-1]}"
    return f"{k:.2f}n" if math.isfinite(k) else "—"


def render_report(
    cache: dict, split: str, moonshot: Fraction | None = Fraction(8, 3), boot: int = 2000
) -> dict:
    """Summary rows, paired tests and the moonshot from the cached texts of ``split``; the Markdown."""
    texts = _per_text(cache, split)
    # Only texts that hold every method x budget cell run at their length (a text still in progress,
    # or stopped, is counted aside), so that every row of a length rests on the same texts.
    in_progress = {}
    for n in sorted({n for n, _ in texts}):
        wanted = set().union(*(t["runs"] for (nn, _), t in texts.items() if nn == n))
        for key in [key for key in texts if key[0] == n and set(texts[key]["runs"]) != wanted]:
            in_progress[n] = in_progress.get(n, 0) + 1
            del texts[key]
    lengths = sorted({n for n, _ in texts})
    groups = [*lengths, "all"] if len(lengths) > 1 else lengths
    cells = sorted(
        {mk for t in texts.values() for mk in t["runs"]},
        key=lambda mk: (METHODS.index(mk[0]) if mk[0] in METHODS else 99, mk[1]),
    )

    def members(g):
        return [t for (n, _), t in sorted(texts.items()) if g in ("all", n)]

    summary, tests, moon = [], [], []
    for g in groups:
        ts = members(g)
        for m, k in cells:
            have = [t["runs"][(m, k)] for t in ts if (m, k) in t["runs"]]
            if not have:
                continue
            rel = [_text_mean(r, "rel") for r in have]
            row = {"n": g, "method": m, "budget": _label(k), "k": float(k), "texts": len(have)}
            row["rel_err"], row["rel_err_ci"] = _mean_ci(rel)
            row["rel_err_median"] = float(np.median(rel))
            for key in ("cos", "spearman"):
                row[key], row[f"{key}_ci"] = _mean_ci([_text_mean(r, key) for r in have])
            row["passes"] = float(np.mean([_text_mean(r, "passes") for r in have]))
            secs = sum(x["seconds"] for r in have for x in r)
            row["ms_per_pass"] = 1e3 * secs / max(1, sum(x["passes"] for r in have for x in r))
            summary.append(row)

        def paired(a_cell, b_cell, what, ts=ts, g=g):
            pairs = [
                (t["runs"][a_cell], t["runs"][b_cell])
                for t in ts
                if a_cell in t["runs"] and b_cell in t["runs"]
            ]
            if not pairs:
                return None
            # Squared error relative to the reference's norm, averaged over seeds: the reference's noise
            # is the same constant in both members of a pair, so it cancels from their difference.
            a = np.array([_text_mean(x, "sq") for x, _ in pairs])
            b = np.array([_text_mean(y, "sq") for _, y in pairs])
            ra = np.array([_text_mean(x, "rel") for x, _ in pairs])
            rb = np.array([_text_mean(y, "rel") for _, y in pairs])
            return {
                "n": g,
                "comparison": what,
                "a": f"{a_cell[0]} {_label(a_cell[1])}",
                "b": f"{b_cell[0]} {_label(b_cell[1])}",
                "texts": len(pairs),
                "rel_err_a": float(np.mean(ra)),
                "rel_err_b": float(np.mean(rb)),
                "a_closer_share": float(np.mean(a < b)),
                "p": paired_wilcoxon(a, b),
            }

        budgets_seen = sorted({k for m, k in cells})
        for k in budgets_seen:
            for m in [m for m, kk in cells if kk == k and m != "mp-pi"]:
                # P* is read as the challenger (does drawing every input from P* beat the mixture?).
                t = (
                    paired((m, k), ("mp-pi", k), "P* vs mixture 0.7")
                    if m == "mp-pi-shapley"
                    else paired(("mp-pi", k), (m, k), "MP-PI vs peer, equal budget")
                )
                if t is not None:
                    tests.append(t)
        top = max(budgets_seen) if budgets_seen else None
        if moonshot is not None and top is not None:
            t = paired(
                ("mp-pi", moonshot),
                ("kernel-shap", top),
                f"moonshot: MP-PI {_label(moonshot)} vs Kernel SHAP {_label(top)}",
            )
            if t is not None:
                tests.append(t)
            # Budget MP-PI needs to reach Kernel SHAP's top-budget error, with a bootstrap over texts.
            mk = sorted(k for m, k in cells if m == "mp-pi")
            both = [
                t
                for t in ts
                if ("kernel-shap", top) in t["runs"] and all(("mp-pi", k) in t["runs"] for k in mk)
            ]
            if len(mk) >= 2 and both:
                E = np.array([[_text_mean(t["runs"][("mp-pi", k)], "rel") for k in mk] for t in both])
                K = np.array([_text_mean(t["runs"][("kernel-shap", top)], "rel") for t in both])
                need = budget_for_error([float(k) for k in mk], E.mean(0), float(K.mean()))
                rng = np.random.default_rng(0)
                draws = []
                for _ in range(boot if len(both) > 2 else 0):
                    i = rng.integers(0, len(both), len(both))
                    draws.append(budget_for_error([float(k) for k in mk], E[i].mean(0), float(K[i].mean())))
                draws = np.array(draws)
                lo, hi = (
                    (  # order statistics: no arithmetic on the censored (0, inf) draws
                        float(np.percentile(draws, 2.5, method="lower")),
                        float(np.percentile(draws, 97.5, method="higher")),
                    )
                    if len(draws)
                    else (float("nan"), float("nan"))
                )
                moon.append(
                    {
                        "n": g,
                        "texts": len(both),
                        "kernel_shap_budget": _label(top),
                        "kernel_shap_rel_err": float(K.mean()),
                        "mp_pi_budgets": [_label(k) for k in mk],
                        "mp_pi_rel_err": E.mean(0).tolist(),
                        "mp_pi_budget_needed": need,
                        "share_of_kernel_shap_passes": need / float(top),
                        "ci95_budget": [lo, hi],
                    }
                )
    noise = {n: [t["noise"] for (nn, _), t in texts.items() if nn == n] for n in lengths}
    walks = {n: sorted({t["ref"]["walks"] for (nn, _), t in texts.items() if nn == n}) for n in lengths}
    return {
        "split": split,
        "texts_per_length": {n: len(noise[n]) for n in lengths},
        "texts_incomplete": in_progress,
        "reference_noise": {n: float(np.mean(noise[n])) for n in lengths},
        "reference_walks": walks,
        "summary": summary,
        "tests": tests,
        "moonshot": moon,
    }


def _f(x: float, d: int = 3) -> str:
    return f"{x:.{d}f}" if math.isfinite(x) else "—"


def _markdown(cache: dict, rep: dict, stem: Path) -> str:
    setup, runs = cache["setup"], cache.get("runs", [])
    counts = ", ".join(f"n = {n}: {c}" for n, c in rep["texts_per_length"].items()) or "none yet"
    if rep.get("texts_incomplete"):
        counts += (
            " (left out, not every cell run yet: "
            + ", ".join(f"n = {n}: {c}" for n, c in rep["texts_incomplete"].items())
            + ")"
        )
    lines = [
        "### Long texts at equal passes: accuracy against a noise-corrected permutation reference\n",
        f"IMDB **{rep['split']}** reviews, the first with at least n words, cut after the n-th; texts per "
        f"length: **{counts}**. Model `{setup['model']}` + adapter `{setup['adapter']}` (weights "
        f"{setup['adapter_sha256']}), template `{setup['template']!r}`, mask `remove` (the prefix game "
        f"is the full game), {setup['dtype']}; explained class = the true label. Per-text seeds.\n",
        "Reference per text: antithetic permutation walks of the removal game ("
        + "; ".join(f"n = {n}: {w} walks" for n, w in rep["reference_walks"].items())
        + "), its noise ||SE||²/||phi||² on average "
        + "; ".join(f"n = {n}: {_f(v)}" for n, v in rep["reference_noise"].items())
        + ". `rel. error` = (||phi - ref||² - Σ SE²) / (||ref||² - Σ SE²): the squared error against the "
        "true Shapley values, relative, with the reference's own noise taken out (unbiased; the noise "
        "still widens the intervals). Mean over texts (seeds averaged per text), 95% t half-width; median.\n",
        "Cache: `" + stem.name + ".json` (every text's reference and attribution vectors; "
        "`python -m benchmarks.long_texts` extends it). Runs that wrote it:\n",
    ]
    for r in runs:
        lines.append(
            f"- {r['date']}, {r['machine']}, {r['device']}/{r['dtype']}, load "
            f"{r['load_average_at_start']} at start, commit {r.get('commit')}: `{r['command']}` "
            f"({r.get('units_done', 0)} units in "
            f"{r.get('minutes', 0):.0f} min)\n"
        )
    lines.append("\n")
    lines.append(
        md_table(
            [
                "n",
                "method",
                "budget",
                "texts",
                "rel. error ↓",
                "median",
                "cosine ↑",
                "Spearman ↑",
                "passes/text",
                "ms/pass",
            ],
            [
                [
                    r["n"],
                    _PEER_NAMES.get(r["method"], r["method"]),
                    r["budget"],
                    r["texts"],
                    f"{_f(r['rel_err'])} ± {_f(r['rel_err_ci'])}",
                    _f(r["rel_err_median"]),
                    f"{_f(r['cos'])} ± {_f(r['cos_ci'])}",
                    f"{_f(r['spearman'])} ± {_f(r['spearman_ci'])}",
                    f"{r['passes']:.1f}",
                    f"{r['ms_per_pass']:.1f}",
                ]
                for r in rep["summary"]
            ],
        )
    )
    if rep["tests"]:
        lines += [
            "\nPaired two-sided Wilcoxon tests on the same texts (per-text squared error relative to "
            "||ref||², seeds averaged; the reference's noise cancels from each difference). `a closer` = "
            "share of texts where a's error is the smaller; `all` pools the lengths (the same reviews "
            "cut at each length, so pooled texts are not independent across lengths):\n\n",
            md_table(
                ["n", "a", "b", "texts", "rel. error a", "rel. error b", "a closer", "p"],
                [
                    [
                        t["n"],
                        t["a"],
                        t["b"],
                        t["texts"],
                        _f(t["rel_err_a"]),
                        _f(t["rel_err_b"]),
                        f"{t['a_closer_share']:.2f}",
                        f"{t['p']:.2g}",
                    ]
                    for t in rep["tests"]
                ],
            ),
        ]
    if rep["moonshot"]:
        lines += [
            "\nMoonshot (MP-PI at Kernel SHAP's top-budget accuracy with ≤ ⅓ of its passes): the budget at "
            "which MP-PI's mean error reaches Kernel SHAP's, by log-log interpolation between MP-PI's "
            "budgets, as a share of Kernel SHAP's passes, with a 95% bootstrap interval over texts (— where "
            "the crossing lies outside the measured budgets):\n\n",
            md_table(
                [
                    "n",
                    "texts",
                    "Kernel SHAP",
                    "its rel. error",
                    "MP-PI rel. error per budget",
                    "MP-PI needs",
                    "share of passes",
                    "95% interval",
                ],
                [
                    [
                        m["n"],
                        m["texts"],
                        m["kernel_shap_budget"],
                        _f(m["kernel_shap_rel_err"]),
                        ", ".join(
                            f"{b}: {_f(e)}"
                            for b, e in zip(m["mp_pi_budgets"], m["mp_pi_rel_err"], strict=True)
                        ),
                        _budget_text(m["mp_pi_budget_needed"], m["mp_pi_budgets"]),
                        _share_text(m["mp_pi_budget_needed"], m),
                        f"{_share_text(m['ci95_budget'][0], m)} to {_share_text(m['ci95_budget'][1], m)}",
                    ]
                    for m in rep["moonshot"]
                ],
            ),
        ]
    return "".join(lines)


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, threads=1)
    p.add_argument("--lengths", default="20,40,60", help="word counts, done in this order")
    p.add_argument("--texts", type=int, default=20, help="texts per length (the first ones of the split)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="IMDB split")
    p.add_argument("--permutations", type=int, default=40, help="antithetic walks of each new reference")
    p.add_argument(
        "--methods", default="mp-pi,mp-pi-shapley,kernel-shap", help=f"some of {', '.join(METHODS)}"
    )
    p.add_argument("--budgets", default="2,8", help="budget multiples k of n passes, for every method")
    p.add_argument(
        "--moonshot", default="8/3", help="an extra MP-PI budget (default 8/3: a third of 8n); 'none' to skip"
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds per method x budget x text")
    p.add_argument("--time-limit", type=float, default=None, help="minutes: start no new text after them")
    p.add_argument(
        "--shard",
        default="0/1",
        help="i/k: only the texts whose index is i mod k (k processes extend one cache side by side)",
    )
    p.add_argument(
        "--import-reference",
        default=None,
        help="a shapley_accuracy.py JSON (--reference permutations): take its references of the texts "
        "selected here, each checked against this model (its values must sum to f(full) - f(empty))",
    )
    p.add_argument(
        "--import-walks",
        type=int,
        default=None,
        help="walks of the imported references, if the file lacks it",
    )
    p.add_argument("--report-only", action="store_true", help="run nothing: render the report from the cache")
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    if args.template is None:
        args.template = "Review: {text}"
    if args.template.split("{text}")[-1]:
        raise ValueError(
            f"--template {args.template!r} puts text after {{text}}: the removal game needs nothing after "
            "the text (then MP-PI's prefix game is the full game and one reference serves every method)."
        )
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(
            f"--methods: unknown {unknown or '(none given)'}; expected some of {', '.join(METHODS)}."
        )
    budgets = [_fraction(b) for b in args.budgets.split(",") if b.strip()]
    moonshot = None if args.moonshot.lower() == "none" else _fraction(args.moonshot)
    if min(lengths, default=0) < 2 or args.texts < 1 or args.seeds < 1 or args.permutations < 4:
        raise ValueError(
            f"Need lengths >= 2, --texts >= 1, --seeds >= 1, --permutations >= 4; got {lengths}, "
            f"{args.texts}, {args.seeds}, {args.permutations}."
        )
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
    except ValueError:
        shard, shards = -1, 0
    if not 0 <= shard < shards:
        raise ValueError(f"--shard must be i/k with 0 <= i < k, like 0/2 and 1/2, got {args.shard!r}.")
    stem = result_stem(args, "long_texts")
    path = stem.with_suffix(".json")

    if args.report_only:
        cache = load_cache(path)
        if cache is None:
            raise FileNotFoundError(f"No cache at {path}: run without --report-only first.")
        return _write_report(cache, args.split, moonshot, stem)

    from benchmarks.faithfulness_table import select_texts
    from pi_lightning.attributors._shapley import mask_distribution
    from pi_lightning.features import Featurizer
    from pi_lightning.inference import ClassifierAdapter
    from pi_lightning.masking import Masker

    model, tok, dtype = load_model(args)
    info = run_info(args, dtype, "long_texts.py", raw)
    setup = {
        "model": args.model,
        "adapter": info["adapter"],
        "adapter_sha256": _adapter_digest(info["adapter"]),
        "template": args.template,
        "mask": "remove",
        "dtype": dtype,
        "dataset": "imdb",
    }
    cache = load_cache(path)
    if cache is not None:
        _check_setup(cache, setup, path)
    common = {
        "granularity": "word",
        "template": args.template,
        "mask": "remove",
        "max_tokens": args.max_tokens,
    }
    featurizer = Featurizer(tok, "word", args.template)
    adapter, masker = ClassifierAdapter(model, max_tokens=args.max_tokens), Masker(tok, "remove")
    plan = [(m, k) for k in budgets for m in methods]
    if moonshot is not None and "mp-pi" in methods and moonshot not in budgets:
        plan.append(("mp-pi", moonshot))
    for m, k in plan:
        if m not in _OWN and k.denominator != 1:
            raise ValueError(f"{m} runs at whole multiples of n only; drop {_label(k)} from --budgets.")
    imported = {}
    if args.import_reference:
        with open(args.import_reference) as fh:
            old = json.load(fh)
        imported = {
            (int(r["n"]), r["text"]): r
            for r in old.get("references", [])
            if r.get("reference") == "permutations" or any(x > 0 for x in r.get("se", []))
        }
        import_walks = old.get("permutations") or args.import_walks
        if not import_walks:
            raise ValueError(
                f"--import-reference {args.import_reference!r} does not say how many walks its references "
                "ran (a file written with --reuse-reference): give them with --import-walks."
            )
        if not imported:
            raise ValueError(
                f"--import-reference {args.import_reference!r} holds no permutation references: pass a JSON "
                "written by `shapley_accuracy.py --reference permutations`."
            )
    t_start, units = time.monotonic(), 0
    info.update({"run_id": uuid.uuid4().hex[:12], "commit": _git_commit()})

    def log() -> None:
        info.update(
            {
                "units_done": units,
                "minutes": (time.monotonic() - t_start) / 60,
                "load_average_at_end": load_average(),
            }
        )
        _log_run(path, setup, info)

    print(
        f"{args.model} on {args.device}/{dtype}: lengths {lengths}, {args.texts} {args.split} texts each, "
        f"{len(plan)} method x budget cells x {args.seeds} seeds; cache {path}",
        flush=True,
    )
    try:
        for n in lengths:
            texts, labels = select_texts(
                "imdb", args.split, "word", n, args.texts, featurizer, min_features=n, cut=True
            )
            mask_distribution(n)  # P' once per n (cached; not part of any method's cost)
            mask_distribution(n, kind="shapley")
            for i, (text, y) in enumerate(zip(texts, labels, strict=True)):
                if i % shards != shard:
                    continue
                if args.time_limit is not None and time.monotonic() - t_start > 60 * args.time_limit:
                    print(
                        f"time limit of {args.time_limit} min reached: stopping before n = {n} text {i}",
                        flush=True,
                    )
                    raise StopIteration
                key = _text_key(args.split, n, i)
                cached = (load_cache(path) or _empty_cache(setup))["texts"].get(key, {})
                if cached and cached["text"] != text:
                    raise ValueError(
                        f"{path}: text {key} is not the text selected now; the data selection changed."
                    )
                f = featurizer(text)
                base = {"split": args.split, "n": f.n, "index": i, "text": text, "target": int(y)}
                ref = cached.get("reference")
                if ref is None and imported.get((n, text)) is not None:
                    ref = _imported_reference(
                        imported[(n, text)], import_walks, adapter, masker, f, int(y), info
                    )
                    if ref is not None:
                        save_entry(path, setup, key, {**base, "reference": ref})
                        print(f"  n={n} text {i}: reference imported ({ref['walks']} walks)", flush=True)
                if ref is None:
                    t0, before = time.perf_counter(), adapter.forward_passes
                    r = permutation_reference(adapter, masker, f, int(y), args.permutations, seed=10_000 + i)
                    ref = {
                        "phi": r["full"].tolist(),
                        "se": r["se"].tolist(),
                        "walks": int(r["permutations"]),
                        "passes": int(adapter.forward_passes - before),
                        "seconds": time.perf_counter() - t0,
                        "f_empty": r["f_empty"],
                        "f_full": r["f_full"],
                        "device": args.device,
                        "date": info["date"],
                    }
                    save_entry(path, setup, key, {**base, "reference": ref})
                    units += 1
                    print(
                        f"  n={n} text {i}: reference {ref['passes']} passes, {ref['seconds']:.0f} s",
                        flush=True,
                    )
                done = cached.get("runs", {})
                for m, k in plan:
                    for s in range(args.seeds):
                        rk = _run_key(m, k, s)
                        if rk in done:
                            continue
                        phi, passes, secs = run_one(
                            m, k, text_seed(n, i, s), model, tok, adapter, masker, f, int(y), common
                        )
                        run = {
                            "phi": None if phi is None else np.asarray(phi, dtype=np.float64).tolist(),
                            "passes": int(passes),
                            "seconds": secs,
                            "seed": text_seed(n, i, s),
                            "device": args.device,
                            "commit": _git_commit(),
                        }
                        save_entry(path, setup, key, {**base, "runs": {rk: run}})
                        units += 1
                rel = {
                    mk: relative_error(np.asarray(r["phi"]), np.asarray(ref["phi"]), np.asarray(ref["se"]))[1]
                    for mk, r in (load_cache(path)["texts"][key]["runs"]).items()
                    if r.get("phi") is not None and mk.endswith("|0")
                }
                if units:
                    log()
                print(
                    f"  n={n} text {i} done ({(time.monotonic() - t_start) / 60:.1f} min): "
                    + ", ".join(f"{mk[:-2]} {v:.2f}" for mk, v in sorted(rel.items())),
                    flush=True,
                )
    except StopIteration:
        pass
    if units:
        log()
    return _write_report(load_cache(path) or _empty_cache(setup), args.split, moonshot, stem)


def _write_report(cache: dict, split: str, moonshot, stem: Path) -> dict:
    rep = render_report(cache, split, moonshot)
    write_markdown(stem.with_suffix(".md"), _markdown(cache, rep, stem))
    for r in rep["summary"]:
        print(
            f"  n={r['n']} {r['method']:<16} {r['budget']:>6} texts {r['texts']:>3}  rel. error "
            f"{r['rel_err']:.3f} ± {r['rel_err_ci']:.3f}  cos {r['cos']:.3f}"
        )
    for t in rep["tests"]:
        print(
            f"  n={t['n']} {t['a']} vs {t['b']}: {t['rel_err_a']:.3f} vs {t['rel_err_b']:.3f}, "
            f"p = {t['p']:.2g}"
        )
    print(f"wrote {stem}.md from {stem}.json")
    return rep


if __name__ == "__main__":
    main()
