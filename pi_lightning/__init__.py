"""pi_lightning: Progressive Inference attributions for decoder-only classifiers, during training.

The public names, in pipeline order: text -> :class:`Featurizer` (``Features``) -> :class:`Masker`
-> :class:`ClassifierAdapter` -> attributors (:class:`SPPI`, :class:`MPPI`, any method by name
through :func:`get_attributor`; each returns an :class:`Attribution`) -> :func:`evaluate_faithfulness`
-> the Lightning callbacks (:class:`AttributionMonitor`, :class:`ValidationSPPI`, :class:`HTMLReport`)
and the offline job (:func:`explain_dataset`). Data and models: :mod:`pi_lightning.data`,
:mod:`pi_lightning.models`; training modules: :mod:`pi_lightning.training`.

The names are imported lazily, so ``import pi_lightning`` is fast and has no side effects
(in particular it imports neither wandb nor transformers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Written out (not built from _EXPORTS) so that linters and type checkers see the re-exports.
__all__ = [  # noqa: RUF022 -- pipeline order, not alphabetical, is the point
    "__version__",
    # text -> features -> masked inputs -> model outputs
    "Features",
    "Featurizer",
    "Masker",
    "ClassifierAdapter",
    # attributions
    "Attribution",
    "Attributor",
    "SPPI",
    "MPPI",
    "available_methods",
    "get_attributor",
    # faithfulness metrics
    "evaluate_faithfulness",
    "ProbeEvaluator",
    # during training: callbacks; after training: the dataset job
    "AttributionMonitor",
    "ValidationSPPI",
    "HTMLReport",
    "explain_dataset",
]

#: The module each lazily imported name comes from.
_EXPORTS = {
    "Features": "pi_lightning.features",
    "Featurizer": "pi_lightning.features",
    "Masker": "pi_lightning.masking",
    "ClassifierAdapter": "pi_lightning.inference",
    "Attribution": "pi_lightning.result",
    "Attributor": "pi_lightning.attributors",
    "SPPI": "pi_lightning.attributors",
    "MPPI": "pi_lightning.attributors",
    "available_methods": "pi_lightning.attributors",
    "get_attributor": "pi_lightning.attributors",
    "evaluate_faithfulness": "pi_lightning.metrics",
    "ProbeEvaluator": "pi_lightning.metrics",
    "AttributionMonitor": "pi_lightning.callbacks",
    "ValidationSPPI": "pi_lightning.callbacks",
    "HTMLReport": "pi_lightning.callbacks",
    "explain_dataset": "pi_lightning.jobs",
}

if TYPE_CHECKING:  # pragma: no cover
    from pi_lightning.attributors import MPPI, SPPI, Attributor, available_methods, get_attributor
    from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ValidationSPPI
    from pi_lightning.features import Features, Featurizer
    from pi_lightning.inference import ClassifierAdapter
    from pi_lightning.jobs import explain_dataset
    from pi_lightning.masking import Masker
    from pi_lightning.metrics import ProbeEvaluator, evaluate_faithfulness
    from pi_lightning.result import Attribution


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pi_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
