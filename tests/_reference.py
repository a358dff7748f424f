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

from pi_lightning.testing import toy_sentiment

__all__ = [
    "FIT_PROBE",
    "FIT_TRAIN",
    "FIT_VAL",
    "fit_tiny",
    "np_auc",
    "np_ci",
    "read_wandb_records",
    "run_gloo",
    "sp_monitor",
]


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


# --------------------------------------------------------------------------- a short fit with callbacks
FIT_TRAIN = toy_sentiment(48, seed=1)
FIT_VAL = toy_sentiment(16, seed=2)
FIT_PROBE = toy_sentiment(6, seed=3)


def fit_tiny(tok, callbacks, tmp_path, epochs=2, logger=None, ckpt=None, seed=0, shuffle=True, **trainer_kw):
    """Fit the tiny GPT-2 on FIT_TRAIN / FIT_VAL (batches of 8: 6 steps an epoch) with ``callbacks``,
    deterministic, quiet; return ``(trainer, module)``; checkpoints only with a ModelCheckpoint given."""
    import lightning.pytorch as pl

    from pi_lightning.testing import tiny_classifier
    from pi_lightning.training import TextClassifier, TextDataModule

    pl.seed_everything(seed, verbose=False)
    model = tiny_classifier("gpt2", tokenizer=tok, seed=seed)
    module = TextClassifier(model, lr=5e-3)
    dm = TextDataModule(tok, FIT_TRAIN, FIT_VAL, batch_size=8, shuffle=shuffle)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=logger if logger is not None else False,
        enable_checkpointing=any(type(c).__name__ == "ModelCheckpoint" for c in callbacks),
        callbacks=callbacks,
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        deterministic=True,
        **trainer_kw,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return trainer, module


def sp_monitor(tok, **kw):
    """An SP-PI AttributionMonitor on FIT_PROBE with label names ``neg`` / ``pos``."""
    from pi_lightning.callbacks import AttributionMonitor

    return AttributionMonitor(tok, FIT_PROBE, "sp-pi", label_names=["neg", "pos"], **kw)


def read_wandb_records(path):
    """Minimal reader of a .wandb file: a 7-byte header, then 32 KiB blocks of LevelDB-log records
    (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out
