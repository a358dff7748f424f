"""pi_lightning: Progressive Inference attributions for decoder-only classifiers, during training.

The public names are imported lazily, so ``import pi_lightning`` is fast and has no side effects
(in particular it imports neither wandb nor transformers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Features": "pi_lightning.features",
    "Featurizer": "pi_lightning.features",
    "Masker": "pi_lightning.masking",
    "ClassifierAdapter": "pi_lightning.inference",
    "Attribution": "pi_lightning.result",
    "Attributor": "pi_lightning.attributors",
    "SPPI": "pi_lightning.attributors",
    "MPPI": "pi_lightning.attributors",
    "AttributionMonitor": "pi_lightning.callbacks",
    "ValidationSPPI": "pi_lightning.callbacks",
    "HTMLReport": "pi_lightning.callbacks",
    "evaluate_faithfulness": "pi_lightning.metrics",
    "get_attributor": "pi_lightning.attributors",
    "available_methods": "pi_lightning.attributors",
    "explain_dataset": "pi_lightning.jobs",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from pi_lightning.attributors import MPPI, SPPI, Attributor, available_methods, get_attributor
    from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ValidationSPPI
    from pi_lightning.metrics import evaluate_faithfulness
    from pi_lightning.features import Features, Featurizer
    from pi_lightning.inference import ClassifierAdapter
    from pi_lightning.jobs import explain_dataset
    from pi_lightning.masking import Masker
    from pi_lightning.result import Attribution


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pi_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
