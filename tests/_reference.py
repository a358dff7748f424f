"""Test code shared by several test modules: NumPy/SciPy references and the two-process gloo harness.

Where shared test code lives (one rule):

- here, ``tests/_reference.py``: plain functions that two or more test modules use: the independent
  references the package is checked against (``np_auc``, ``np_ci``) and harnesses (``run_gloo``).
  Import them as ``from _reference import np_auc`` (``tests/`` is on ``sys.path`` through the rootdir
  ``tests/conftest.py``, in every test folder);
- ``tests/conftest.py``: pytest fixtures (tokenizers, tiny models, the quiet ``validate_once`` Trainer,
  the ``train_tiny`` loop);
- ``pi_lightning.testing``: what users and the benchmarks need too (tiny models, toy data, exact
  Shapley values, ``exit_after_distributed_run`` for multi-process scripts).

A reference written once here cannot drift between two copies; a test-local helper used by one module
stays in that module.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from scipy import stats

__all__ = ["np_auc", "np_ci", "run_gloo"]


def np_auc(curve, x=None) -> float:
    """Trapezoidal area under ``curve`` over ``x`` (default: evenly spaced on [0, 1])."""
    c = np.asarray(curve, dtype=float)
    xs = np.linspace(0.0, 1.0, len(c)) if x is None else np.asarray(x, dtype=float)
    return float(np.trapezoid(c, xs))


def np_ci(values, conf: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (SciPy), the reference of every CI."""
    v = np.asarray(values, dtype=float)
    lo, hi = stats.t.interval(conf, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    return float(v.mean()), float((hi - lo) / 2)


def _gloo_entry(rank, world, init_file, out_dir, fn, args):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(fn(rank, *args), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_gloo(fn, *args, world: int = 2) -> list:
    """Run ``fn(rank, *args)`` in ``world`` CPU processes joined in a gloo group; return each rank's result.

    ``fn`` must be a module-level function (the processes are spawned, so it is pickled by name) and
    return something ``torch.save`` can write. The group is set up and torn down around it.
    """
    import torch
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        init_file = os.path.join(d, "init")
        mp.spawn(_gloo_entry, args=(world, init_file, d, fn, args), nprocs=world, join=True)
        return [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(world)]
