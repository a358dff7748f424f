"""Helper for test_explain_job: run the explain job with 1 or 2 CPU processes (strategy="ddp", gloo).

python tests/jobs/explain_script.py DEVICES OUT_DIR METHOD [N_TEXTS]
"""

import sys

import torch

from pi_lightning.jobs import explain_dataset
from pi_lightning.testing import exit_after_distributed_run, tiny_classifier, tiny_tokenizer, toy_sentiment


def main(devices: int, out: str, method: str, n: int = 40) -> None:
    torch.set_num_threads(1)
    tok = tiny_tokenizer("gpt2")
    texts, labels = toy_sentiment(n, seed=5)
    kwargs = {"budget": 16, "seed": 0} if method == "mp-pi" else {}
    explain_dataset(
        tiny_classifier("gpt2", tokenizer=tok),
        tok,
        texts,
        out,
        labels=labels,
        method=method,
        method_kwargs=kwargs,
        shard_size=6,
        max_tokens=256,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        enable_progress_bar=False,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], *map(int, sys.argv[4:]))
    exit_after_distributed_run()  # results written: skip the teardown that can abort (see its docstring)
