"""Collectives a callback needs: gathering objects across ranks, and equal forward passes on every
rank while a callback runs the model (what FSDP and ZeRO-3 need).

:func:`gather_objects` goes through the Trainer's strategy (``trainer.strategy.broadcast``), so it
works under whatever strategy Lightning runs (a no-op on one device).

**Equal forward passes.** Under sharded strategies (FSDP, DeepSpeed ZeRO-3) a forward pass is a
collective: every rank must run the same number of them, or the parameter all-gathers pair up
wrongly and the job hangs. A monitor evaluation shards the probe set across ranks, and the shards
differ in size (7 examples on 2 ranks: 4 and 3), in token lengths (so the token-budget batching
differs) and in features (so the number of masked passes of a method differs): the number of
batched passes a rank issues depends on its data.

:func:`equal_forward_passes` pads the shorter sequences of passes: each real forward pass first
tells every rank that a pass is coming (one all-reduce of one integer, in a pre-hook on the model);
a rank that has finished its own work keeps answering those calls with a one-token dummy pass
through the same model until no rank has work left. So every rank issues exactly the maximum
number of passes over ranks, whatever the probe size, without knowing it in advance. Results are
untouched: dummy outputs are discarded. Only forward passes are padded; gradient-based methods'
backward passes are not (under FSDP use a forward-only method for the monitor). It works at the
level of the model's forward hooks, where no Trainer is at hand (and under torch's own FSDP
without Lightning), so it talks to the default process group (``torch.distributed``) directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["equal_forward_passes", "gather_objects"]


def gather_objects(trainer, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` on one process.

    Each rank's object is sent to all through the strategy's ``broadcast`` (one broadcast per rank:
    the strategy's public API has no object all-gather). Every rank must call it.
    """
    size = int(trainer.world_size)
    if size == 1:
        return [obj]
    return [trainer.strategy.broadcast(obj, src=r) for r in range(size)]


@contextlib.contextmanager
def equal_forward_passes(model: torch.nn.Module, pad_token_id: int) -> Iterator[dict[str, int]]:
    """Inside the block, every rank runs ``model`` forward the same number of times.

    Yields a dict counting this rank's ``real`` and ``padded`` passes. Without a process group (or
    with one process) it does nothing.
    """
    counts = {"real": 0, "padded": 0}
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield counts
        return
    param = next(model.parameters())
    flag_device = param.device if dist.get_backend() == "nccl" else torch.device("cpu")
    padding = [False]

    def announce(_module, _args, _kwargs) -> None:
        if not padding[0]:
            flag = torch.ones(1, dtype=torch.long, device=flag_device)
            dist.all_reduce(flag)  # pairs with the other ranks' announcements or their drain loop
            counts["real"] += 1

    handle = model.register_forward_pre_hook(announce, with_kwargs=True)
    try:
        yield counts
    finally:
        try:
            while True:  # drain: pad with dummy passes while any rank still runs real ones
                flag = torch.zeros(1, dtype=torch.long, device=flag_device)
                dist.all_reduce(flag)
                if int(flag.item()) == 0:
                    break
                padding[0] = True
                try:
                    # (1, 1): one pad token, the cheapest input the model accepts.
                    ids = torch.full((1, 1), int(pad_token_id), dtype=torch.long, device=param.device)
                    with torch.no_grad():
                        model(input_ids=ids, attention_mask=torch.ones_like(ids))
                finally:
                    padding[0] = False
                counts["padded"] += 1
        finally:
            handle.remove()
