"""Measured cost of the baseline attribution methods: seconds and forward-pass equivalents for 10 examples.

Runs every paper baseline (and SP-PI for reference) on 10 probe texts with the tiny random GPT-2
classifier of ``pi_lightning.testing`` (CPU, one thread), word granularity, paper defaults
(IG: n steps, Kernel SHAP: 2n samples), after one warm-up call, and prints one line per method:
the declared cost, the mean forward-pass equivalents reported per example, and the wall time.

    python benchmarks/baselines_cost.py
"""

from __future__ import annotations

import time

import torch

from pi_lightning.attributors import get_attributor
from pi_lightning.testing import tiny_classifier, tiny_tokenizer, toy_sentiment

METHODS = ("random", "a-last", "sp-pi", "gae", "inputxgrad", "lrp", "ig", "kernel-shap")


def main() -> None:
    torch.set_num_threads(1)
    tok = tiny_tokenizer("gpt2")
    model = tiny_classifier("gpt2", tokenizer=tok)
    texts, labels = toy_sentiment(10, seed=0)
    print(f"{'method':<12} {'cost':>5} {'fwd-eq/ex':>10} {'s/10 ex':>8}   (tiny GPT-2, CPU, 1 thread)")
    for name in METHODS:
        att = get_attributor(name, model, tok)
        att.attribute(texts[:1], target=labels[:1])
        t0 = time.perf_counter()
        out = att.attribute(texts, target=labels)
        dt = time.perf_counter() - t0
        fe = sum(a.forward_passes for a in out) / len(out)
        print(f"{name:<12} {att.cost:>5} {fe:>10.1f} {dt:>8.3f}")
    n = [a.features.n for a in out]
    print(f"features per example: mean {sum(n) / len(n):.1f}, min {min(n)}, max {max(n)}")


if __name__ == "__main__":
    main()
