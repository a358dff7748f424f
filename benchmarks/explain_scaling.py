"""Scaling of the distributed explain job: examples per second with 1 and 2 processes, as a ratio.

The explain job (:func:`pi_lightning.jobs.explain_dataset`, ``Trainer.predict`` with one shard per
batch) runs SP-PI and MP-PI over a fixed set of Rotten Tomatoes test sentences, first in one process,
then in two (``strategy="ddp"``: gloo on CPU, NCCL on GPUs), each process with ``--threads`` torch
threads. The clock runs inside the predict loop, between barriers at its start and end, so process
start-up and model loading are not counted; the figure is examples / second of the whole job
(all ranks together), and the ratio is 2-process / 1-process throughput (2.0 = perfect scaling).

The load average (``os.getloadavg``, what ``uptime`` prints) is recorded before and after every run:
on a shared machine other jobs take cores too, and a ratio measured under a load above the number of
cores is contaminated (the script says so).

    python -m benchmarks.explain_scaling                           # SmolLM2-135M, CPU, 1 thread per process
    python -m benchmarks.explain_scaling --model testing:gpt2 --examples 16 --mppi-examples 8   # smoke test
    python -m benchmarks.explain_scaling --device cuda             # 1 vs 2 GPUs (NCCL)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import (
    add_common_args,
    load_average,
    load_model,
    md_table,
    run_info,
    write_json,
    write_markdown,
)

METHODS = ("sp-pi", "mp-pi")


def _texts(n: int, max_words: int) -> list[str]:
    from pi_lightning.data import load_movie_reviews

    test = load_movie_reviews("rotten_tomatoes", "test", seed=0)
    texts = [t for t in test.texts if len(t.split()) <= max_words]
    if len(texts) < n:
        raise ValueError(f"Only {len(texts)} test sentences have <= {max_words} words; lower --examples.")
    return texts[:n]


def worker(args: argparse.Namespace) -> None:
    """One explain job with ``args.devices`` processes; rank zero writes its timing to ``args.result``."""
    import lightning.pytorch as pl

    from pi_lightning.jobs import explain_dataset

    class Clock(pl.Callback):
        def on_predict_start(self, trainer, pl_module):
            trainer.strategy.barrier()
            self.t0 = time.perf_counter()

        def on_predict_end(self, trainer, pl_module):
            trainer.strategy.barrier()
            self.seconds = time.perf_counter() - self.t0

    n = args.examples if args.method == "sp-pi" else args.mppi_examples
    texts = _texts(n, args.max_words)
    model, tok, _ = load_model(args)  # --threads applied there
    clock = Clock()
    kwargs = {"seed": 0} if args.method == "mp-pi" else {}
    summary = explain_dataset(
        model,
        tok,
        texts,
        args.job_dir,
        method=args.method,
        method_kwargs=kwargs,
        max_tokens=args.max_tokens,
        shard_size=args.shard_size if args.method == "sp-pi" else args.mppi_shard_size,
        overwrite=True,
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        enable_progress_bar=False,
        callbacks=[clock],
    )
    if summary.is_global_zero:
        Path(args.result).write_text(
            json.dumps({"examples": n, "seconds": clock.seconds, "shards": summary.shards})
        )


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, adapter=None)
    p.add_argument("--examples", type=int, default=64, help="sentences explained with SP-PI")
    p.add_argument("--mppi-examples", type=int, default=16, help="sentences explained with MP-PI (budget 2n)")
    p.add_argument("--max-words", type=int, default=24, help="use sentences of at most this many words")
    p.add_argument("--shard-size", type=int, default=4, help="examples per shard (predict batch) for SP-PI")
    p.add_argument("--mppi-shard-size", type=int, default=1, help="examples per shard for MP-PI")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--job-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.threads = args.threads or 1
    if args.worker:
        worker(args)
        return {}
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
        # the workers run as `python -m benchmarks.explain_scaling`: the repository root on their path
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
        ),
    }
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for devices in (1, 2):
                result = Path(tmp, f"{method}-{devices}.json")
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.explain_scaling",
                    *argv,
                    "--worker",
                    "--method",
                    method,
                    "--devices",
                    str(devices),
                    "--job-dir",
                    str(Path(tmp, f"job-{method}-{devices}")),
                    "--result",
                    str(result),
                ]
                before = load_average()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                r = json.loads(result.read_text())
                runs.append(
                    {
                        "method": method,
                        "processes": devices,
                        **r,
                        "examples_per_second": r["examples"] / r["seconds"],
                        "load_before": before,
                        "load_after": load_average(),
                    }
                )
                print(
                    f"{method:6} {devices} process(es): {r['examples']} examples in {r['seconds']:.1f} s = "
                    f"{r['examples'] / r['seconds']:.2f} examples/s (load average {before} -> "
                    f"{runs[-1]['load_after']})",
                    flush=True,
                )
    cores = os.cpu_count() or 1
    rows, ratios = [], {}
    for method in args.methods:
        one, two = (next(r for r in runs if r["method"] == method and r["processes"] == k) for k in (1, 2))
        ratios[method] = two["examples_per_second"] / one["examples_per_second"]
        peak = max(
            max(one["load_before"][:1] + one["load_after"][:1]),
            max(two["load_before"][:1] + two["load_after"][:1]),
        )
        rows.append(
            [
                method,
                one["examples"],
                f"{one['examples_per_second']:.2f}",
                f"{two['examples_per_second']:.2f}",
                f"**{ratios[method]:.2f}**",
                f"{peak:.1f}",
            ]
        )
    peak_load = max(max(r["load_before"][0], r["load_after"][0]) for r in runs)
    contaminated = peak_load > cores - 0.5
    info = run_info(
        args, "fp32" if args.device == "cpu" else (args.dtype or "bf16"), "explain_scaling.py", argv
    )
    verdict = (
        f"CONTAMINATED: the 1-minute load average reached {peak_load:.1f} on {cores} cores, so other jobs "
        "shared the cores and the ratio is unreliable (too low or too high, depending on which run they "
        "starved)"
        if contaminated
        else f"load average stayed <= {peak_load:.1f} on {cores} cores"
    )
    table = md_table(
        ["method", "examples", "1 process (ex/s)", "2 processes (ex/s)", "ratio 2/1", "peak load"], rows
    )
    text = (
        f"# Explain job scaling: 1 vs 2 processes\n\n{info['date']}, {info['machine']}, model {args.model}, "
        f"{args.threads} thread(s) per process.\n\n{table}\n{verdict}.\n\nCommand: `{info['command']}`\n"
    )
    print(table + verdict)
    tag = f"_{args.tag}" if args.tag else ""
    out = Path(args.out)
    write_json(
        out / f"explain_scaling{tag}.json",
        {
            **info,
            "runs": runs,
            "ratios": ratios,
            "peak_load": peak_load,
            "contaminated": contaminated,
            "cores": cores,
        },
    )
    write_markdown(out / f"explain_scaling{tag}.md", text)
    return {"ratios": ratios, "runs": runs, "contaminated": contaminated}


if __name__ == "__main__":
    main()
