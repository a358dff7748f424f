"""Helper for test_paired_change.test_paired_change_syncs_under_ddp: PairedChange on 1 or 2 gloo
processes, each rank updating the probe examples of its shard (``rank::world``, as AttributionMonitor
shards the probe), and rank zero writing the synced differences and test to a JSON file."""

import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pi_lightning.metrics import PairedChange


def data(n: int = 23) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(7)
    before = rng.normal(0.2, 0.1, n)
    return before.tolist(), (before + rng.normal(0.03, 0.05, n)).tolist()


def worker(rank: int, world: int, out: str, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    before, after = data()
    idx = list(range(rank, len(before), world))
    metric = PairedChange(num_examples=len(before))
    metric.update([before[i] for i in idx], [after[i] for i in idx], index=idx)
    test = metric.test()  # every rank syncs the same number of times
    mean = float(metric.compute())
    differences = metric.differences().tolist()
    if rank == 0:
        with open(out, "w") as fh:
            json.dump(
                {
                    "differences": differences,
                    "mean": test.mean,
                    "computed_mean": mean,
                    "ci": test.ci,
                    "p": test.p,
                    "n": test.n,
                },
                fh,
            )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    world, path, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    mp.spawn(worker, args=(world, path, port), nprocs=world, join=True)
