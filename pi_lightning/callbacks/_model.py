"""The Hugging Face model inside a LightningModule, as every pi_lightning callback finds it in ``setup``."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["resolve_model"]


def resolve_model(pl_module, model: str | Callable | None) -> torch.nn.Module:
    """The Hugging Face model inside a LightningModule, by attribute path (``"model"``,
    ``"backbone.clf"``) or getter; ``None`` tries ``pl_module.model``."""
    if callable(model) and not isinstance(model, str):
        found = model(pl_module)
        where = getattr(model, "__name__", "the getter")
    else:
        path = model or "model"
        found = pl_module
        for part in path.split("."):
            found = getattr(found, part, None)
            if found is None:
                raise AttributeError(
                    f"{type(pl_module).__name__} has no attribute {path!r} holding the Hugging Face model. "
                    "Pass model='<attribute name>' (e.g. 'model' or 'net.backbone') or a getter "
                    "model=lambda module: module.my_model."
                )
        where = repr(path)
    if not isinstance(found, torch.nn.Module):
        raise TypeError(f"{where} gave a {type(found).__name__}, expected the torch.nn.Module classifier.")
    return found
