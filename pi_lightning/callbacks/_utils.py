"""Training isolation and probe parsing for the pi_lightning callbacks.

A callback must never change what training computes: :func:`isolated` saves and restores the RNG
states (python, numpy, torch CPU and CUDA), every module's train/eval flag, the parameters'
``requires_grad`` and ``.grad``, and runs the work under the trainer's own autocast context.
:func:`normalize_probe` reads a probe set from the forms the callbacks accept.

(The other shared pieces live by concern: the model lookup in :mod:`pi_lightning.callbacks._model`,
collectives in :mod:`pi_lightning.callbacks._distributed`, logging in
:mod:`pi_lightning.reporting.logging`, HTML in :mod:`pi_lightning.reporting.html`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

__all__ = ["isolated", "normalize_probe"]


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


def normalize_probe(probe, labels: Sequence[int] | None = None) -> tuple[list[str], list[int] | None]:
    """Texts and labels from: a ``(texts, labels)`` pair, a list of texts (+ ``labels``), a list of ``(text, label)`` pairs or of
    ``{"text": ..., "label": ...}`` rows, an object with ``.texts``/``.labels``, or a map-style dataset
    of such rows."""
    if probe is None:
        raise ValueError(
            "probe is None: pass a list of texts (with labels=...), (text, label) pairs, or a dataset."
        )
    if hasattr(probe, "texts"):
        texts, found = list(probe.texts), list(getattr(probe, "labels", None) or []) or None
    elif (
        isinstance(probe, tuple)
        and len(probe) == 2
        and not isinstance(probe[0], str)
        and len(probe[0]) == len(probe[1])
        and all(isinstance(t, str) for t in probe[0])
    ):
        texts, found = list(probe[0]), [int(y) for y in probe[1]]  # (texts, labels)
    else:
        rows = [probe[i] for i in range(len(probe))]
        if rows and isinstance(rows[0], str):
            texts, found = list(rows), None
        elif rows and isinstance(rows[0], dict):
            key = "text" if "text" in rows[0] else "sentence" if "sentence" in rows[0] else None
            if key is None:
                raise ValueError(f"Probe rows need a 'text' (or 'sentence') key, got keys {sorted(rows[0])}.")
            texts = [r[key] for r in rows]
            found = [int(r["label"]) for r in rows] if "label" in rows[0] else None
        elif rows and isinstance(rows[0], (tuple, list)) and len(rows[0]) == 2:
            texts, found = [r[0] for r in rows], [int(r[1]) for r in rows]
        elif not rows:
            texts, found = [], None
        else:
            raise TypeError(
                f"Cannot read a probe set from rows of type {type(rows[0]).__name__}: expected texts, "
                "(text, label) pairs or {'text': ..., 'label': ...} dicts."
            )
    if labels is not None:
        found = [int(y) for y in labels]
    if not texts:
        raise ValueError("The probe set is empty: pass at least one held-out text to explain.")
    if found is not None and len(found) != len(texts):
        raise ValueError(f"The probe set has {len(texts)} texts but {len(found)} labels.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"Probe texts must be non-empty strings; entries {bad[:5]} are not.")
    return texts, found
