"""SP-PI overhead on a validation loop, measured in one run (issue #5).

Runs ``trainer.validate`` on the same model and data (a) without callbacks, (b) with
:class:`~pi_lightning.callbacks.ValidationSPPI` (free mode: the head's per-position output is
captured from the loop's own forward pass), (c) with an ``AttributionMonitor("sp-pi")`` on a probe
set, attributions only (``metrics=[]``: one forward pass per probe text), and (d) the same with the
faithfulness metrics (AS/IAS and UDIG's: masked passes). Runs are interleaved and repeated; the
median time of each is reported and the ratios to (a) printed, both in wall time and in this
process's CPU time (on a shared CPU, other processes inflate wall time but not CPU time).

    python benchmarks/bench_callbacks.py                       # embedded SmolLM2-135M, 64 val sentences
    python benchmarks/bench_callbacks.py --model testing:gpt2 --n-val 256
    python benchmarks/bench_callbacks.py --device cuda --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch

from pi_lightning.callbacks import AttributionMonitor, ValidationSPPI
from pi_lightning.data import load_classifier, load_movie_reviews
from pi_lightning.modules import TextClassifier, TextDataModule


class TimedValidationSPPI(ValidationSPPI):
    """ValidationSPPI that adds up the time spent inside its own hooks (the direct overhead)."""

    spent = 0.0  # per-batch and per-epoch work
    setup_spent = 0.0  # one-time: the word tables of the tokenizer (cached across runs)

    def _timed(name):  # noqa: N805 - a decorator factory used in the class body
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--n-probe", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--configs", default="none,free,probe,probe+metrics", help="which runs, comma-separated")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = load_classifier(args.model)
    module = TextClassifier(model)
    val = load_movie_reviews("rotten_tomatoes", "val").subset(args.n_val)
    probe = load_movie_reviews("rotten_tomatoes", "test").subset(args.n_probe)
    dm = TextDataModule(tok, val, val, batch_size=args.batch_size)
    configs = {
        "none": lambda: [],
        "free": lambda: [TimedValidationSPPI(tok)],
        "probe": lambda: [AttributionMonitor(tok, probe, "sp-pi", metrics=[], log_examples=0)],
        "probe+metrics": lambda: [AttributionMonitor(tok, probe, "sp-pi", log_examples=0)],
    }
    configs = {k: v for k, v in configs.items() if k in args.configs.split(",")}
    times: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}

    def run(cbs):
        trainer = pl.Trainer(accelerator=args.device, devices=1, precision=args.precision, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=cbs,
                             enable_checkpointing=False)
        t, c = time.perf_counter(), time.process_time()
        trainer.validate(module, datamodule=dm, verbose=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, time.process_time() - c

    run([])  # warm-up
    for _ in range(args.repeats):
        for name, make in configs.items():
            w, c = run(make())
            times[name].append(w)
            cpu[name].append(c)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    out = {
        "model": args.model, "device": args.device, "precision": args.precision, "n_val": args.n_val,
        "n_probe": args.n_probe, "machine": f"{platform.machine()} {torch.get_num_threads()} threads"
        + (f" {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
        "median_seconds": med, "median_cpu_seconds": med_cpu,
        "ratio_wall": {k: v / med["none"] for k, v in med.items()},
        "ratio_cpu": {k: v / med_cpu["none"] for k, v in med_cpu.items()},
    }
    print(f"validation loop of {args.n_val} examples, {args.model}, {args.device}/{args.precision}, "
          f"median of {args.repeats}:")
    for k, v in med.items():
        print(f"  {k:<14} wall {v:8.3f} s (ratio {v / med['none']:.4f})   cpu {med_cpu[k]:8.3f} s "
              f"(ratio {med_cpu[k] / med_cpu['none']:.4f})")
    if "free" in med:
        inside = TimedValidationSPPI.spent / args.repeats
        out["free_in_callback_seconds"] = inside
        out["free_in_callback_ratio"] = inside / med["none"]
        out["free_setup_seconds_total"] = TimedValidationSPPI.setup_spent
        print(f"time inside ValidationSPPI's hooks per validation loop: {inside:.4f} s = "
              f"{100 * inside / med['none']:.2f}% of the loop without callbacks (plus a one-time "
              f"{TimedValidationSPPI.setup_spent:.2f} s for the tokenizer's word tables)")
        print(f"free-mode SP-PI overhead: {100 * (out['ratio_wall']['free'] - 1):+.2f}% wall, "
              f"{100 * (out['ratio_cpu']['free'] - 1):+.2f}% cpu (goal <= 2%)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
