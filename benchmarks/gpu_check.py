"""GPU check: every attribution method through the callbacks on CUDA, under bf16-mixed and 32.

Fits tiny GPT-2 and Llama classifiers for a few steps on the GPU with an ``AttributionMonitor`` per
registered method and ``ValidationSPPI``, and checks that every figure is finite; then compares
SP-PI and MP-PI attributions computed on the GPU (fp32) with the same computed on the CPU.

    python -m benchmarks.gpu_check            # needs a CUDA device

The figures go to ``gpu_check[_<tag>].json`` under ``--out`` with the machine line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import lightning.pytorch as pl
import torch

from benchmarks._common import add_output_args, result_stem, run_info, write_json
from pi_lightning.attributors import available_methods, get_attributor
from pi_lightning.callbacks import AttributionMonitor, ValidationSPPI
from pi_lightning.testing import tiny_classifier, tiny_tokenizer, toy_sentiment
from pi_lightning.training import TextClassifier, TextDataModule

FAST = {
    "mp-pi": {"budget": 8, "seed": 0},
    "kernel-shap": {"budget": 8},
    "ig": {"budget": 4},
    "udig": {"budget": 4},
    "at2": {"budget": 8, "num_iterations": 50},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_args(p)
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    args.device = "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    results, failures = {}, []
    train, val, probe = toy_sentiment(48, 1), toy_sentiment(16, 2), toy_sentiment(6, 3)
    for arch in ("gpt2", "llama"):
        tok = tiny_tokenizer(arch)
        for precision in ("bf16-mixed", "32"):
            mons = [
                AttributionMonitor(tok, probe, m, method_kwargs=FAST.get(m, {})) for m in available_methods()
            ]
            free = ValidationSPPI(tok)
            pl.seed_everything(0, verbose=False)
            t = time.perf_counter()
            trainer = pl.Trainer(
                max_epochs=2,
                accelerator="gpu",
                devices=1,
                precision=precision,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[*mons, free],
            )
            trainer.fit(
                TextClassifier(tiny_classifier(arch, tokenizer=tok), lr=5e-3),
                datamodule=TextDataModule(tok, train, val, batch_size=8),
            )
            for mon in mons:
                m = mon.evals[-1].metrics if mon.evals else {}
                ok = bool(m) and all(math.isfinite(v) for k, v in m.items() if not k.endswith("_ci"))
                ok = ok and all(math.isfinite(s) for row in mon.evals[-1].scores for s in row)
                results[f"{arch}/{precision}/{mon.method}"] = {
                    "ok": ok,
                    "as_auc": m.get("as_auc"),
                    "ias_auc": m.get("ias_auc"),
                }
                if not ok:
                    failures.append(f"{arch}/{precision}/{mon.method}")
            results[f"{arch}/{precision}/val-sp-pi"] = free.evals[-1].metrics
            print(f"{arch} {precision}: {len(mons)} methods + free SP-PI in {time.perf_counter() - t:.1f}s")
        # GPU fp32 vs CPU fp32 attributions
        model = tiny_classifier(arch, tokenizer=tok)
        for method in ("sp-pi", "mp-pi"):
            kw = FAST.get(method, {})
            cpu = get_attributor(method, model.cpu(), tok, **kw).attribute(probe[0], target=probe[1])
            gpu = get_attributor(method, model.cuda(), tok, **kw).attribute(probe[0], target=probe[1])
            diff = max(float((a.scores - b.scores).abs().max()) for a, b in zip(cpu, gpu, strict=False))
            results[f"{arch}/cpu-vs-gpu/{method}"] = diff
            print(f"{arch} {method}: max |cpu - gpu| = {diff:.2e}")
            if diff > 1e-3:
                failures.append(f"{arch}/cpu-vs-gpu/{method}")
    print(json.dumps(results, indent=1))
    print("FAILURES:", failures if failures else "none")
    write_json(
        result_stem(args, "gpu_check").with_suffix(".json"),
        {**run_info(args, None, "gpu_check.py", raw), "results": results, "failures": failures},
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
