"""Helper for test_sharded.test_fsdp_cpu_uneven_shards: torch FSDP2 (``fully_shard``) on CPU with gloo, 2
processes (launched by torch.distributed.run). Each rank attributes its uneven shard of a 7-text probe with
SP-PI on the sharded model inside :func:`equal_forward_passes`; rank zero writes every rank's pass counts and
its largest difference from the same attributions on an unsharded copy of the model to the JSON file given.

(Lightning's FSDPStrategy refuses accelerator="cpu", so this runs torch's FSDP directly. Without the padding
the run dies with gloo's "collective mismatch": the rank with fewer passes meets the other's parameter
all-gathers.)
"""

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from pi_lightning.attributors import SPPI
from pi_lightning.callbacks._distributed import equal_forward_passes
from pi_lightning.testing import exit_after_distributed_run, tiny_classifier, tiny_tokenizer, toy_sentiment


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    tok = tiny_tokenizer("gpt2")
    reference = tiny_classifier("gpt2", tokenizer=tok)
    model = tiny_classifier("gpt2", tokenizer=tok)
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    texts, _ = toy_sentiment(7, seed=4, length=(2, 16))
    mine = texts[rank::size]
    with equal_forward_passes(model, tok.pad_token_id) as counts:
        attrs = SPPI(model, tok, max_tokens=48, mask="...").attribute(mine, target=1)
    want = SPPI(reference, tok, max_tokens=48, mask="...").attribute(mine, target=1)
    err = max(float((a.scores - b.scores).abs().max()) for a, b in zip(attrs, want, strict=False))
    gathered = [None] * size
    dist.all_gather_object(gathered, {"rank": rank, "examples": len(mine), **counts, "max_err": err})
    if rank == 0:
        with open(out, "w") as fh:
            json.dump(gathered, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    exit_after_distributed_run()  # results written: skip the teardown that can abort (see its docstring)
