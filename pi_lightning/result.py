"""The one result type every attribution method returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pi_lightning.features import Features

__all__ = ["Attribution"]


@dataclass
class Attribution:
    """Attributions of one example's prediction to its features.

    Attributes:
        scores: ``(n,)`` float64 CPU tensor, one score per feature (positive = supports ``target``).
        features: the features the scores refer to (texts, token spans, model input).
        target: the explained class index.
        method: the method's registered name (``"sp-pi"``, ``"mp-pi"``, ...).
        output: what the scores are differences of: ``"prob"``, ``"logits"`` or ``"log_odds"``.
        base_value: the output with no feature present (phi_0), when the method defines it.
        probs: ``(C,)`` class probabilities of the unmasked input, when the method ran it.
        forward_passes: model forward-pass equivalents spent on this example (cost accounting).
        extras: method-specific details (e.g. the intermediate predictions).
    """

    scores: torch.Tensor
    features: Features
    target: int
    method: str
    output: str = "prob"
    base_value: float | None = None
    probs: torch.Tensor | None = None
    forward_passes: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scores.dim() != 1 or self.scores.numel() != self.features.n:
            raise ValueError(
                f"{self.method}: expected {self.features.n} scores (one per feature), got shape "
                f"{tuple(self.scores.shape)}."
            )

    @property
    def prediction(self) -> int | None:
        """The predicted class of the unmasked input, when known."""
        return None if self.probs is None else int(self.probs.argmax())

    def _repr_html_(self) -> str:
        """Jupyter shows the text highlighted (lists: :func:`pi_lightning.reporting.show`)."""
        from pi_lightning.reporting.html import attribution_html

        return attribution_html(self)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` features with the largest scores, as ``(text, score)`` pairs."""
        order = torch.argsort(self.scores, descending=True, stable=True)[:k]
        texts = self.features.texts
        return [(texts[i], float(self.scores[i])) for i in order.tolist()]
