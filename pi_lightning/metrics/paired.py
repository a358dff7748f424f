"""PairedChange: the paired change of a per-example figure between two evaluations, as a torchmetrics
Metric that syncs under DDP.

The probe examples are indexed ``0..num_examples - 1`` and sharded across ranks, so each rank
writes the differences of its own examples into a ``(num_examples,)`` state at their indices, and a
``(num_examples,)`` count of the pairs it wrote; both are ``dist_reduce_fx="sum"`` states, so after
the sum every rank holds every example's difference (the Wilcoxon test needs them all, not only
moments). The math is :func:`~pi_lightning.metrics.functional.paired_change` and
:func:`~pi_lightning.metrics.functional.paired_test`, the functional twins.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from pi_lightning.metrics.functional.paired import PairedTest, paired_test

__all__ = ["PairedChange"]


class PairedChange(Metric):
    """Mean paired change ``after - before`` of per-example values, with its 95% interval and the
    Wilcoxon signed-rank p-value (:meth:`test`).

    Args:
        num_examples: size of the indexed example set (the probe set).
        confidence: level of the interval.
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> m = PairedChange(num_examples=4)
        >>> m.update([0.1, 0.2], [0.3, 0.5], index=[0, 2])
        >>> m.update([0.4, None], [0.5, 0.9], index=[1, 3])  # example 3 has no 'before': skipped
        >>> round(float(m.compute()), 4), m.test().n
        (0.2, 3)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_examples: int, confidence: float = 0.95, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"num_examples must be a positive int (the probe size), got {num_examples!r}.")
        if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be a float in (0, 1), e.g. 0.95, got {confidence!r}.")
        self.num_examples = num_examples
        self.confidence = confidence
        zeros = torch.zeros(num_examples, dtype=torch.float64)
        self.add_state("difference", default=zeros.clone(), dist_reduce_fx="sum", persistent=True)
        self.add_state("paired", default=zeros.clone(), dist_reduce_fx="sum", persistent=True)

    def update(self, before, after, index=None) -> None:
        """Add pairs: the values of examples ``index`` (default ``0..len-1``) at two evaluations; a pair
        with a ``None`` or non-finite side is skipped. An example given twice raises."""
        before, after = list(before), list(after)
        index = list(range(len(before))) if index is None else [int(i) for i in index]
        if not len(before) == len(after) == len(index):
            raise ValueError(
                f"PairedChange.update needs one before, one after and one index per example: got "
                f"{len(before)}, {len(after)} and {len(index)}."
            )
        for i, b, a in zip(index, before, after, strict=True):
            if not 0 <= i < self.num_examples:
                raise ValueError(f"example index {i} is outside 0..{self.num_examples - 1} (num_examples).")
            if b is None or a is None:
                continue
            b, a = float(b), float(a)
            if not (torch.isfinite(torch.tensor(b)) and torch.isfinite(torch.tensor(a))):
                continue
            if float(self.paired[i]) > 0:
                raise ValueError(f"example {i} was already added to this PairedChange.")
            self.difference[i] += a - b
            self.paired[i] += 1.0

    def differences(self) -> torch.Tensor:
        """The per-example differences of the pairs seen, in index order (synced across processes)."""
        with self.sync_context(should_sync=self.sync_on_compute):
            mask = self.paired > 0
            return self.difference[mask].detach().cpu().clone()

    def test(self) -> PairedTest:
        """Mean, half-width, Wilcoxon p-value and number of pairs (synced across processes)."""
        return paired_test(self.differences(), self.confidence)

    def compute(self) -> torch.Tensor:
        """Mean change (NaN before any pair), float64 0-d."""
        mask = self.paired > 0
        if not bool(mask.any()):
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.difference.device)
        return self.difference[mask].mean()
