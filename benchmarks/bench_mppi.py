"""MP-PI benchmark: P' time per n, overhead over the bare forward passes, coalitions per pass.

Prints, from one run:
  0. P' for n = 512 *cold*: a fresh Python process per repeat that imports
     pi_lightning.attributors._shapley and computes the distribution and its weights (imports and
     first-call costs included; goal <= 2 s), wall and CPU seconds, with the load average (the
     machine may be shared);
  1. the time to compute P' and the weights (Eqn 16, structured) for n = 64, 128, 256, 512
     (cache cleared first, in-process: "warm");
  2. MP-PI's total time at budget 2n divided by the time of the bare batched forward passes it
     issues (the same sequences, the same token budget; goal: <= 1.15);
  3. unique coalitions collected per forward pass for n = 10, 20, 50 (Kernel SHAP gets 1).

Usage: python -m benchmarks.bench_mppi [--texts 8] [--words 50] [--repeats 3]
(writes the figures to ``bench_mppi[_<tag>].json`` under ``--out``; the overhead and coalition
figures use a tiny random GPT-2, by default ``--model testing:gpt2``).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time

import numpy as np

from benchmarks._common import (
    add_common_args,
    load_average,
    load_model,
    result_stem,
    run_info,
    write_json,
)
from pi_lightning.attributors import _shapley as shapley
from pi_lightning.attributors.mppi import MPPI
from pi_lightning.testing import CORPUS, tiny_classifier, tiny_tokenizer


def _texts(count: int, words: int, seed: int = 0) -> list[str]:
    vocab = " ".join(CORPUS).replace(".", " ").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(count)]


_COLD = """
import time
c0, t0 = time.process_time(), time.perf_counter()
from pi_lightning.attributors._shapley import mask_distribution
d = mask_distribution({n})
_ = d.class_weights
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def bench_p_prime_cold(n: int = 512, repeats: int = 3) -> dict:
    """P' for ``n`` in fresh processes (no cache folder): median wall and CPU seconds."""
    env = {k: v for k, v in os.environ.items() if k != "PI_LIGHTNING_CACHE"}
    walls, cpus = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _COLD.format(n=n)], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        walls.append(float(out[0]))
        cpus.append(float(out[1]))
    load = load_average()[0]
    res = {
        "n": n,
        "wall_median_s": float(np.median(walls)),
        "cpu_median_s": float(np.median(cpus)),
        "walls": walls,
        "cpus": cpus,
        "load_1min": load,
        "cores": os.cpu_count(),
    }
    print(
        f"P' cold (fresh process, import + first call), n={n}: wall median {res['wall_median_s']:.2f} s "
        f"(CPU {res['cpu_median_s']:.2f} s) over {repeats}; load average {load:.1f} on {os.cpu_count()} "
        "cores "
        f"(goal <= 2 s wall)"
    )
    return res


def bench_p_prime() -> dict:
    print("P' + weights (Eqn 16, structured O(n^2) map), cache cleared:")
    out = {}
    for n in (64, 128, 256, 512):
        shapley.clear_cache()
        t0 = time.perf_counter()
        d = shapley.mask_distribution(n)
        _ = d.class_weights
        dt = time.perf_counter() - t0
        out[n] = {"seconds": dt, "iterations": d.iterations, "objective": d.objective, "gap": d.gap}
        print(
            f"  n={n:4d}: {dt:6.3f} s  ({d.iterations} iterations, objective {d.objective:.6f}, "
            f"Frank-Wolfe gap {d.gap:.1e})"
        )
    return out


def bench_overhead(texts: list[str], repeats: int) -> dict:
    tok = tiny_tokenizer("gpt2")
    # Its own model, not --model: large enough that a forward pass costs what it costs in practice
    # relative to the bookkeeping (random weights, GPT-2 layout).
    model = tiny_classifier("gpt2", tokenizer=tok, n_embd=128, n_layer=4, n_head=4)
    mp = MPPI(model, tok, seed=0)
    feats = mp.featurize(texts)
    for f in feats:  # P' is computed once per n and cached; the overhead is the per-call work
        shapley.mask_distribution(f.n)
    recorded = {"inside": 0.0}
    inner = mp.adapter.forward_positions

    def recording(seqs, positions=None):
        recorded["seqs"], recorded["positions"] = seqs, positions
        t = time.perf_counter()
        out = inner(seqs, positions)
        recorded["inside"] += time.perf_counter() - t
        return out

    totals, bares, insides = [], [], []
    for _ in range(repeats):
        mp.adapter.forward_positions = recording
        recorded["inside"] = 0.0
        t0 = time.perf_counter()
        mp.attribute(feats, target=1)
        totals.append(time.perf_counter() - t0)
        insides.append(recorded["inside"])
        mp.adapter.forward_positions = inner
        t0 = time.perf_counter()
        inner(recorded["seqs"], recorded["positions"])
        bares.append(time.perf_counter() - t0)
    n = [f.n for f in feats]
    seqs = len(recorded["seqs"])
    print(
        f"Overhead at budget 2n ({len(texts)} texts, n = {min(n)}..{max(n)} words, {seqs} sequences, "
        f"model n_embd=128 n_layer=4; best of {repeats}):"
    )
    ratio_in = min(t / i for t, i in zip(totals, insides, strict=False))
    print(
        f"  MP-PI total {min(totals):.3f} s; its forward passes inside that run {min(insides):.3f} s: "
        f"ratio {ratio_in:.3f} (goal <= 1.15)"
    )
    print(
        f"  same sequences re-run bare {min(bares):.3f} s: ratio total / re-run "
        f"{min(totals) / min(bares):.3f}"
    )
    return {
        "texts": len(texts),
        "sequences": seqs,
        "total_seconds_best": min(totals),
        "inside_seconds_best": min(insides),
        "bare_seconds_best": min(bares),
        "ratio_total_over_inside": ratio_in,
        "goal": 1.15,
    }


def bench_coalitions(repeats: int, model, tok) -> dict:
    out = {}
    print("Coalitions per forward pass at budget 2n (unique, excl. empty/full; Kernel SHAP: 1):")
    for n in (10, 20, 50):
        texts = _texts(repeats, n, seed=n)
        mp = MPPI(model, tok, seed=0)
        feats = [f for f in mp.featurize(texts)]
        res = mp.attribute(feats, target=1)
        per_pass, per_sample = [], []
        for a in res:
            m = len(a.extras["coalitions"]) - 2
            masked_runs = a.forward_passes - 1 - (a.features.context_end == 0)
            per_pass.append(m / max(masked_runs, 1))
            per_sample.append(m / a.extras["sampled_masks"])
        nn = [f.n for f in feats]
        print(
            f"  n={n:3d} (features {min(nn)}..{max(nn)}): {np.mean(per_pass):5.2f} per masked pass run, "
            f"{np.mean(per_sample):5.2f} per sampled mask (distinct masks are run once)"
        )
        out[n] = {"per_masked_pass": float(np.mean(per_pass)), "per_sampled_mask": float(np.mean(per_sample))}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, adapter=None, model="testing:gpt2")
    ap.add_argument("--texts", type=int, default=8)
    ap.add_argument("--words", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = ap.parse_args(raw)
    model, tok, dtype = load_model(args)
    result = {
        **run_info(args, dtype, "bench_mppi.py", raw),
        "p_prime_cold": bench_p_prime_cold(repeats=args.repeats),
        "p_prime_warm": bench_p_prime(),
        "overhead": bench_overhead(_texts(args.texts, args.words), args.repeats),
        "coalitions_per_pass": bench_coalitions(args.repeats, model, tok),
    }
    write_json(result_stem(args, "bench_mppi").with_suffix(".json"), result)
    return result


if __name__ == "__main__":
    main()
