"""SP-PI overhead on a validation loop, measured in one run (issue #5).

Runs ``trainer.validate`` on the same model and data (a) without callbacks, (b) with
:class:`~pi_lightning.callbacks.ValidationSPPI` (free mode: the head's per-position output is
captured from the loop's own forward pass), (c) with an ``AttributionMonitor("sp-pi")`` on a probe
set, attributions only (``metrics=[]``: one forward pass per probe text), and (d) the same with the
faithfulness metrics (AS/IAS and UDIG's: masked passes). Runs are interleaved and repeated; the
median time of each is reported and the ratios to (a) printed.

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
    args = p.parse_args()
    warnings.filterwarnings("ignore")

    model, tok = load_classifier(args.model)
    module = TextClassifier(model)
    val = load_movie_reviews("rotten_tomatoes", "val").subset(args.n_val)
    probe = load_movie_reviews("rotten_tomatoes", "test").subset(args.n_probe)
    dm = TextDataModule(tok, val, val, batch_size=args.batch_size)
    configs = {
        "none": lambda: [],
        "free": lambda: [ValidationSPPI(tok)],
        "probe": lambda: [AttributionMonitor(tok, probe, "sp-pi", metrics=[], log_examples=0)],
        "probe+metrics": lambda: [AttributionMonitor(tok, probe, "sp-pi", log_examples=0)],
    }
    times: dict[str, list[float]] = {k: [] for k in configs}

    def run(cbs):
        trainer = pl.Trainer(accelerator=args.device, devices=1, precision=args.precision, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=cbs,
                             enable_checkpointing=False)
        t = time.perf_counter()
        trainer.validate(module, datamodule=dm, verbose=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run([])  # warm-up
    for _ in range(args.repeats):
        for name, make in configs.items():
            times[name].append(run(make()))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "model": args.model, "device": args.device, "precision": args.precision, "n_val": args.n_val,
        "n_probe": args.n_probe, "machine": f"{platform.machine()} {torch.get_num_threads()} threads"
        + (f" {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
        "median_seconds": med,
        "ratio_free": med["free"] / med["none"],
        "ratio_probe": med["probe"] / med["none"],
        "ratio_probe_metrics": med["probe+metrics"] / med["none"],
    }
    print(f"validation loop of {args.n_val} examples, {args.model}, {args.device}/{args.precision}, "
          f"median of {args.repeats}:")
    for k, v in med.items():
        print(f"  {k:<14} {v:8.3f} s   ratio {v / med['none']:.4f}")
    print(f"free-mode SP-PI overhead: {100 * (out['ratio_free'] - 1):+.2f}% (goal <= 2%)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
