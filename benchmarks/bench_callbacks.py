"""SP-PI overhead on a validation loop, measured in one run (issue #5).

Runs ``trainer.validate`` on the same model and data (a) without callbacks, (b) with
:class:`~pi_lightning.callbacks.ValidationSPPI` (free mode: the head's per-position output is
captured from the loop's own forward pass), (c) with an ``AttributionMonitor("sp-pi")`` on a probe
set, attributions only (``metrics=[]``: one forward pass per probe text), and (d) the same with the
faithfulness metrics (AS/IAS and UDIG's: masked passes). Runs are interleaved in shuffled
blocks, each with a second run without callbacks as a null control; the paired per-block ratios to
(a) are printed with their 95% interval and a Wilcoxon p-value, in wall time and in this process's
CPU time (on a shared CPU, other processes inflate wall time but not CPU time).

    python -m benchmarks.bench_callbacks                       # embedded SmolLM2-135M, 64 val sentences
    python -m benchmarks.bench_callbacks --model testing:gpt2 --n-val 256
    python -m benchmarks.bench_callbacks --device cuda --dtype bf16     # Lightning precision bf16-mixed

The base model (no adapter, by default) is loaded in float32; ``--dtype bf16`` / ``fp16`` sets the
Trainer's mixed precision. Writes ``bench_callbacks[_<tag>].json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings

import lightning.pytorch as pl
import numpy as np
import scipy.stats
import torch

from benchmarks._common import add_common_args, load_model, result_stem, run_info, write_json
from pi_lightning.callbacks import AttributionMonitor, ValidationSPPI
from pi_lightning.data import load_movie_reviews
from pi_lightning.training import TextClassifier, TextDataModule


class TimedValidationSPPI(ValidationSPPI):
    """ValidationSPPI that adds up the time spent inside its own hooks (the direct overhead)."""

    spent = 0.0  # per-batch and per-epoch work
    setup_spent = 0.0  # one-time: the word tables of the tokenizer (cached across runs)

    def _timed(name):
        def method(self, *args, **kwargs):
            t = time.perf_counter()
            try:
                return getattr(ValidationSPPI, name)(self, *args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                if name == "setup":
                    TimedValidationSPPI.setup_spent += dt
                else:
                    TimedValidationSPPI.spent += dt

        return method

    setup = _timed("setup")
    on_validation_epoch_start = _timed("on_validation_epoch_start")
    on_validation_batch_start = _timed("on_validation_batch_start")
    on_validation_batch_end = _timed("on_validation_batch_end")
    on_validation_epoch_end = _timed("on_validation_epoch_end")
    _hook = _timed("_hook")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, adapter=None)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--n-probe", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10, help="interleaved blocks")
    p.add_argument("--configs", default="none,free,probe,probe+metrics", help="which runs, comma-separated")
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    warnings.filterwarnings("ignore")
    # Mixed precision keeps float32 weights: --dtype picks the Trainer's precision, not the weights'.
    mixed = {None: "32", "fp32": "32", "float32": "32", "bf16": "bf16-mixed", "bfloat16": "bf16-mixed"}
    precision = mixed.get(args.dtype, "16-mixed")
    args.dtype = "fp32"
    model, tok, _ = load_model(args)
    info = run_info(args, "fp32", "bench_callbacks.py", raw)
    module = TextClassifier(model)
    val = load_movie_reviews("rotten_tomatoes", "val").subset(args.n_val)
    probe = load_movie_reviews("rotten_tomatoes", "test").subset(args.n_probe)
    dm = TextDataModule(tok, val, val, batch_size=args.batch_size)
    configs = {
        "none": list,
        "free": lambda: [TimedValidationSPPI(tok)],
        "probe": lambda: [AttributionMonitor(tok, probe, "sp-pi", metrics=[], log_examples=0)],
        "probe+metrics": lambda: [AttributionMonitor(tok, probe, "sp-pi", log_examples=0)],
    }
    configs = {k: v for k, v in configs.items() if k in args.configs.split(",")}
    times: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}

    def run(cbs):
        trainer = pl.Trainer(
            accelerator=args.device,
            devices=1,
            precision=precision,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=cbs,
            enable_checkpointing=False,
        )
        t, c = time.perf_counter(), time.process_time()
        trainer.validate(module, datamodule=dm, verbose=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, time.process_time() - c

    run([])  # warm-up
    # Interleaved blocks in a shuffled order (seeded): each block runs every config once plus a second
    # "none" (the null control: two identical loops in the same block, whose ratio shows the noise
    # floor). Ratios are taken within a block (paired), so slow drifts of a shared machine cancel.
    times.setdefault("none", [])
    cpu.setdefault("none", [])
    order = ["none", "none (control)", *[k for k in configs if k != "none"]]
    rng = random.Random(0)
    block_ratio: dict[str, list[float]] = {k: [] for k in order[1:]}
    block_ratio_cpu: dict[str, list[float]] = {k: [] for k in order[1:]}
    for _ in range(args.repeats):
        block = list(order)
        rng.shuffle(block)
        wall_b, cpu_b = {}, {}
        for name in block:
            w, c = run(configs[name]() if name in configs else [])  # "none" and its control: no callbacks
            wall_b[name], cpu_b[name] = w, c
            if name in times:
                times[name].append(w)
                cpu[name].append(c)
        for k in order[1:]:
            block_ratio[k].append(wall_b[k] / wall_b["none"])
            block_ratio_cpu[k].append(cpu_b[k] / cpu_b["none"])
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}

    def paired(ratios: list[float]) -> dict[str, float]:
        """Median paired ratio, mean with its 95% t-interval, and the Wilcoxon p-value against 1."""
        r = np.asarray(ratios)
        half = (
            float(scipy.stats.t.ppf(0.975, len(r) - 1) * r.std(ddof=1) / np.sqrt(len(r)))
            if len(r) > 1
            else float("nan")
        )
        p = float(scipy.stats.wilcoxon(r - 1).pvalue) if len(r) > 5 and np.any(r != 1) else float("nan")
        return {"median": float(np.median(r)), "mean": float(r.mean()), "ci95": half, "wilcoxon_p": p}

    out = {
        **info,
        "precision": precision,
        "n_val": args.n_val,
        "n_probe": args.n_probe,
        "repeats": args.repeats,
        "median_seconds": med,
        "median_cpu_seconds": med_cpu,
        "ratio_wall": {k: v / med["none"] for k, v in med.items()},
        "ratio_cpu": {k: v / med_cpu["none"] for k, v in med_cpu.items()},
        "paired_ratio_wall": {k: paired(v) for k, v in block_ratio.items()},
        "paired_ratio_cpu": {k: paired(v) for k, v in block_ratio_cpu.items()},
    }
    print(
        f"validation loop of {args.n_val} examples, {args.model}, {args.device}/{precision}, "
        f"{args.repeats} shuffled interleaved blocks, load average at start "
        f"{out['load_average_at_start'][0]:.2f}:"
    )
    for k in order[1:]:
        pw, pc = out["paired_ratio_wall"][k], out["paired_ratio_cpu"][k]
        print(
            f"  {k:<16} paired ratio to none: wall {pw['mean']:.4f} ± {pw['ci95']:.4f} (median "
            f"{pw['median']:.4f}, "
            f"p {pw['wilcoxon_p']:.3g})   cpu {pc['mean']:.4f} ± {pc['ci95']:.4f} (p {pc['wilcoxon_p']:.3g})"
        )
    if "free" in med:
        inside = TimedValidationSPPI.spent / args.repeats
        out["free_in_callback_seconds"] = inside
        out["free_in_callback_ratio"] = inside / med["none"]
        out["free_setup_seconds_total"] = TimedValidationSPPI.setup_spent
        print(
            f"time inside ValidationSPPI's hooks per validation loop: {inside:.4f} s = "
            f"{100 * inside / med['none']:.2f}% of the loop without callbacks (plus a one-time "
            f"{TimedValidationSPPI.setup_spent:.2f} s for the tokenizer's word tables)"
        )
        pw, pc = out["paired_ratio_wall"]["free"], out["paired_ratio_cpu"]["free"]
        print(
            f"free-mode SP-PI overhead: {100 * (pw['mean'] - 1):+.2f}% ± {100 * pw['ci95']:.2f}% wall, "
            f"{100 * (pc['mean'] - 1):+.2f}% ± {100 * pc['ci95']:.2f}% cpu (goal <= 2%; the control's "
            f"{100 * (out['paired_ratio_wall']['none (control)']['mean'] - 1):+.2f}% is the noise floor)"
        )
    write_json(result_stem(args, "bench_callbacks").with_suffix(".json"), out)
    return out


if __name__ == "__main__":
    main()
