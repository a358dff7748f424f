"""Training isolation for the pi_lightning callbacks (probe sets are parsed in :mod:`pi_lightning.data`).

A callback must never change what training computes: :func:`isolated` saves and restores the RNG
states (python, numpy, torch CPU and CUDA), every module's train/eval flag, the parameters'
``requires_grad`` and ``.grad``, and runs the work under the trainer's own autocast context.

(The other shared pieces live by concern: the model lookup in :mod:`pi_lightning.callbacks._model`,
collectives in :mod:`pi_lightning.callbacks._distributed`, logging in
:mod:`pi_lightning.reporting.logging`, HTML in :mod:`pi_lightning.reporting.html`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["isolated"]


@contextlib.contextmanager
def isolated(trainer, model: torch.nn.Module) -> Iterator[None]:
    """Run attribution work without side effects on training (see the module docstring)."""
    from lightning.pytorch.utilities.seed import isolate_rng

    # Lightning's isolate_rng saves python/numpy/torch (and, once CUDA is in use, CUDA) RNG states; it
    # restores them only on a clean exit, so it is always exited cleanly here, also when the work raises.
    rng = isolate_rng(include_cuda=torch.cuda.is_available() and torch.cuda.is_initialized())
    rng.__enter__()
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    grad_enabled = torch.is_grad_enabled()
    try:
        ctx = trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()
        with ctx:
            yield
    finally:
        torch.set_grad_enabled(grad_enabled)
        for m, mode in modes:
            m.training = mode
        for p, flag, g in zip(params, flags, grads, strict=False):
            p.requires_grad_(flag)
            p.grad = g
        rng.__exit__(None, None, None)
