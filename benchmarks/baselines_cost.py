"""Measured cost of the baseline attribution methods: seconds and forward-pass equivalents for 10 examples.

Runs every paper baseline (and SP-PI for reference) on 10 probe texts with the tiny random GPT-2
classifier of ``pi_lightning.testing`` (default ``--model testing:gpt2``, CPU, one thread), word
granularity, paper defaults (IG: n steps, Kernel SHAP: 2n samples), after one warm-up call, and
prints one line per method: the declared cost, the mean forward-pass equivalents reported per
example, and the wall time. Writes ``baselines_cost[_<tag>].{json,md}`` under ``--out``.

    python -m benchmarks.baselines_cost
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks._common import (
    add_common_args,
    load_model,
    md_table,
    result_stem,
    run_info,
    write_json,
    write_markdown,
)
from pi_lightning.attributors import get_attributor
from pi_lightning.testing import toy_sentiment

METHODS = ("random", "a-last", "sp-pi", "gae", "inputxgrad", "lrp", "ig", "kernel-shap")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, adapter=None, model="testing:gpt2", threads=1)
    p.add_argument("--examples", type=int, default=10, help="toy probe texts")
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    model, tok, dtype = load_model(args)
    info = run_info(args, dtype, "baselines_cost.py", raw)
    texts, labels = toy_sentiment(args.examples, seed=0)
    print(f"{'method':<12} {'cost':>5} {'fwd-eq/ex':>10} {'s/ex':>8}   ({info['machine']})")
    rows = {}
    for name in METHODS:
        att = get_attributor(name, model, tok)
        att.attribute(texts[:1], target=labels[:1])  # warm-up
        t0 = time.perf_counter()
        out = att.attribute(texts, target=labels)
        dt = time.perf_counter() - t0
        fe = sum(a.forward_passes for a in out) / len(out)
        rows[name] = {
            "cost": att.cost,
            "forward_passes_per_example": fe,
            "seconds_per_example": dt / len(out),
        }
        print(f"{name:<12} {att.cost:>5} {fe:>10.1f} {dt / len(out):>8.4f}")
    n = [a.features.n for a in out]
    print(f"features per example: mean {sum(n) / len(n):.1f}, min {min(n)}, max {max(n)}")
    result = {**info, "examples": len(texts), "features_mean": sum(n) / len(n), "rows": rows}
    stem = result_stem(args, "baselines_cost")
    write_json(stem.with_suffix(".json"), result)
    table = md_table(
        ["method", "cost", "fwd-eq/ex", "s/ex"],
        [
            [k, r["cost"], f"{r['forward_passes_per_example']:.1f}", f"{r['seconds_per_example']:.4f}"]
            for k, r in rows.items()
        ],
    )
    write_markdown(
        stem.with_suffix(".md"),
        f"### Baseline cost ({len(texts)} toy texts)\n\nDate {info['date']}; machine: {info['machine']}; "
        f"{info['model']} on {info['device']}/{dtype}.\n\nCommand: `{info['command']}`\n\n{table}",
    )
    return result


if __name__ == "__main__":
    main()
