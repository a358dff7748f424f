"""Evaluate the faithfulness of attributions: run the masked inputs, return every metric.

:func:`evaluate_faithfulness` is the model-running half of the faithfulness metrics (the math is in
:mod:`pi_lightning.metrics.functional`; the Metric classes average its per-example values). For
every attribution it builds, with the one :class:`~pi_lightning.masking.Masker`:

* the activation study (AS) inputs: fully masked, then the most positive feature added, ... up to
  the full input (``n + 1`` inputs), and the inverse study (IAS) inputs in the opposite order;
  with ``points=P`` only the steps ``k = round(f * n)`` at ``P`` fixed fractions ``f`` (at most
  ``P`` inputs per study whatever the length; see
  :func:`~pi_lightning.metrics.functional.activation_steps`),
  areas by the trapezoid rule over the evaluated points at their true ``x = k / n``;
* the unmasked input (for ``y_hat`` and UDIG's ``p(y_hat | x)``);
* the input with the top-k% features masked (log-odds, comprehensiveness) and the one with only
  the top-k% kept (sufficiency). DIG/UDIG's "replaced by the baseline token" and "removed" both
  use the Masker's mask here, so every metric perturbs the text the same way.

Identical token sequences are run once (AS and IAS share the empty and the full input; "only
top-k kept" is a point of the AS curve), and all the inputs of all examples go through
:meth:`~pi_lightning.inference.ClassifierAdapter.forward_positions` in one call, batched by the
adapter's token budget. Only the last position is read: the model's prediction on that input.
Curves record the softmax probability of each attribution's ``target`` whatever output the
attributor explained; UDIG's metrics use the predicted class of the unmasked input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pi_lightning._renamed import renamed
from pi_lightning.inference import ClassifierAdapter, transform_outputs
from pi_lightning.masking import Masker
from pi_lightning.metrics.functional.curves import (
    activation_auc,
    activation_coalitions,
    activation_steps,
    check_points,
    inverse_activation_auc,
)
from pi_lightning.metrics.functional.removal import (
    check_top_k,
    comprehensiveness,
    log_odds,
    sufficiency,
    top_k_features,
)
from pi_lightning.metrics.functional.stats import mean_confidence_interval
from pi_lightning.result import Attribution

__all__ = ["METRICS", "FaithfulnessResult", "evaluate_faithfulness"]

#: Metric names accepted by :func:`evaluate_faithfulness` and used as :meth:`FaithfulnessResult.summary` keys.
METRICS = ("as_auc", "ias_auc", "log_odds", "comprehensiveness", "sufficiency")


@dataclass
class FaithfulnessResult:
    """Per-example faithfulness of a set of attributions. Metrics not requested are ``None``.

    Attributes:
        targets: ``(E,)`` explained classes (the attributions' targets).
        predictions: ``(E,)`` predicted classes of the unmasked inputs (UDIG's ``y_hat``).
        probs: ``(E, C)`` float64 class probabilities of the unmasked inputs.
        as_curves, ias_curves: per example a float64 ``(m_i,)`` tensor, the probability of the
            target class after ``k`` features were activated, for the evaluated steps ``k`` (all
            ``0..n_i``, ``m_i = n_i + 1``, unless ``points`` was given).
        curve_x: per example the float64 ``(m_i,)`` positions ``k / n_i`` of those points (shared by
            both studies; pass them to the curve metrics' ``update``).
        as_auc, ias_auc: float64 ``(E,)`` areas under those curves (``x = k / n`` in ``[0, 1]``).
        gap: float64 ``(E,)`` paired AS - IAS gap (``as_auc - ias_auc``) when both were computed.
        probs_masked: ``(E, C)`` probabilities with the top-k% features masked.
        probs_kept: ``(E, C)`` probabilities with only the top-k% features kept.
        log_odds, comprehensiveness, sufficiency: float64 ``(E,)`` UDIG metrics.
        top_k: the percentage of features used as top-k.
        forward_passes: number of (distinct) masked inputs run through the model.
    """

    targets: torch.Tensor
    predictions: torch.Tensor
    probs: torch.Tensor
    top_k: float
    forward_passes: int
    as_curves: list[torch.Tensor] | None = None
    ias_curves: list[torch.Tensor] | None = None
    as_auc: torch.Tensor | None = None
    ias_auc: torch.Tensor | None = None
    curve_x: list[torch.Tensor] | None = None
    gap: torch.Tensor | None = None
    probs_masked: torch.Tensor | None = None
    probs_kept: torch.Tensor | None = None
    log_odds: torch.Tensor | None = None
    comprehensiveness: torch.Tensor | None = None
    sufficiency: torch.Tensor | None = None

    def summary(self, confidence: float = 0.95) -> dict[str, float]:
        """Mean of each computed metric and its confidence half-width.

        Keys ``"as_auc"``, ``"as_auc_ci"``, ..., and ``"gap"``, ``"gap_ci"`` when both studies ran.

        The half-width is NaN for fewer than two examples. The figures come from
        :func:`~pi_lightning.metrics.functional.stats.mean_confidence_interval`, the math the Metric
        classes (:data:`~pi_lightning.metrics.METRIC_CLASSES`) and
        :class:`~pi_lightning.metrics.ProbeEvaluator` compute their figures with (this module imports
        neither: the Metric classes read this type).
        """
        out: dict[str, float] = {}
        for name in (*METRICS, "gap"):
            values = getattr(self, name)
            if values is not None:
                out[name], out[f"{name}_ci"] = mean_confidence_interval(values, confidence)
        return out


def _check_metrics(metrics: Iterable[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return METRICS
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = tuple(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ValueError(
            f"metrics must be None (all) or a non-empty selection of {', '.join(METRICS)}; "
            f"got {list(chosen)!r}."
        )
    return chosen


@renamed(fractions="points")
def evaluate_faithfulness(
    attributions: Sequence[Attribution],
    adapter: ClassifierAdapter,
    masker: Masker,
    top_k: float = 20.0,
    metrics: Iterable[str] | None = None,
    points: int | None = None,
) -> FaithfulnessResult:
    """Run the activation studies and UDIG's metrics for a set of attributions.

    Args:
        attributions: one :class:`~pi_lightning.result.Attribution` per example (features and
            target inside each), from any method.
        adapter: runs the model (its ``max_tokens`` bounds every forward batch).
        masker: the masking function (use the attributor's, ``attributor.masker``, to perturb the
            way the method did).
        top_k: percentage of features counted as top-k for UDIG's metrics, in ``(0, 100]``.
        metrics: names from :data:`METRICS` to compute, or ``None`` for all.
        points: ``None`` for the exact curves (every step ``k = 0..n``), or the number of points
            (fixed fractions of the features) at which to evaluate them (``11``: ``x = 0, 0.1, ...,
            1``), so a study costs at most ``points`` passes per example whatever its length. Measured error
            against the exact curve: ``benchmarks/results/RESULTS.md``.

    Returns:
        A :class:`FaithfulnessResult`.

    Example:
        >>> from pi_lightning.attributors import SPPI
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> sppi = SPPI(tiny_classifier("gpt2", tokenizer=tok), tok)
        >>> atts = sppi.attribute(["a good movie", "bad plot"])
        >>> res = evaluate_faithfulness(atts, sppi.adapter, sppi.masker)
        >>> [len(c) for c in res.as_curves], res.forward_passes
        ([4, 3], 9)
    """
    if isinstance(attributions, Attribution):
        attributions = [attributions]
    if not isinstance(attributions, Sequence) or len(attributions) == 0:
        raise ValueError("attributions must be a non-empty list of Attribution results (one per example).")
    for i, a in enumerate(attributions):
        if not isinstance(a, Attribution):
            raise TypeError(
                f"attributions[{i}] is a {type(a).__name__}, expected pi_lightning.result.Attribution."
            )
    if not isinstance(adapter, ClassifierAdapter):
        raise TypeError(
            f"adapter must be a pi_lightning.inference.ClassifierAdapter, got {type(adapter).__name__}. "
            "Wrap the model: ClassifierAdapter(model) (or pass attributor.adapter)."
        )
    if not isinstance(masker, Masker):
        raise TypeError(
            f"masker must be a pi_lightning.masking.Masker, got {type(masker).__name__}. "
            "Pass attributor.masker, or Masker(tokenizer)."
        )
    top_k = check_top_k(top_k)
    points = check_points(points)
    chosen = _check_metrics(metrics)
    C = adapter.num_labels
    for i, a in enumerate(attributions):
        if isinstance(a.target, bool) or not isinstance(a.target, int) or not 0 <= a.target < C:
            raise ValueError(
                f"attributions[{i}].target is {a.target!r}, not a class index of this {C}-class model "
                f"(0..{C - 1})."
            )
    want_as, want_ias = "as_auc" in chosen, "ias_auc" in chosen
    want_masked = "log_odds" in chosen or "comprehensiveness" in chosen
    want_kept = "sufficiency" in chosen

    # Build every masked input once; `slots[i][kind]` are rows of the unique-sequence table.
    unique: dict[tuple[int, ...], int] = {}
    sequences: list[list[int]] = []
    slots: list[dict[str, np.ndarray]] = []
    curve_x = []
    for a in attributions:
        n = a.features.n
        steps = activation_steps(n, points)
        curve_x.append(steps.to(torch.float64) / n)
        blocks: dict[str, torch.Tensor] = {"full": torch.ones(1, n, dtype=torch.bool)}
        if want_as:
            blocks["as"] = activation_coalitions(a.scores, steps=steps)
        if want_ias:
            blocks["ias"] = activation_coalitions(a.scores, inverse=True, steps=steps)
        if want_masked or want_kept:
            top = torch.zeros(n, dtype=torch.bool)
            top[top_k_features(a.scores, top_k)] = True
            if want_masked:
                blocks["masked"] = (~top).unsqueeze(0)
            if want_kept:
                blocks["kept"] = top.unsqueeze(0)
        seqs, _ = masker(a.features, torch.cat(list(blocks.values())))
        rows = []
        for s in seqs:
            key = tuple(s)
            idx = unique.get(key)
            if idx is None:
                idx = unique[key] = len(sequences)
                sequences.append(s)
            rows.append(idx)
        rows_arr = np.asarray(rows)
        example, start = {}, 0
        for kind, block in blocks.items():
            example[kind] = rows_arr[start : start + block.shape[0]]
            start += block.shape[0]
        slots.append(example)

    # (U, C): the prediction on each distinct input.
    probs_all = transform_outputs(adapter.final_logits(sequences), "prob")

    targets = torch.tensor([a.target for a in attributions], dtype=torch.long)
    probs = probs_all[np.concatenate([s["full"] for s in slots])]
    res = FaithfulnessResult(
        targets=targets,
        predictions=probs.argmax(-1),
        probs=probs,
        top_k=top_k,
        forward_passes=len(sequences),
    )
    if want_as or want_ias:
        res.curve_x = curve_x
    if want_as:
        res.as_curves = [probs_all[s["as"], int(t)] for s, t in zip(slots, targets, strict=False)]
        res.as_auc = activation_auc(res.as_curves, curve_x)
    if want_ias:
        res.ias_curves = [probs_all[s["ias"], int(t)] for s, t in zip(slots, targets, strict=False)]
        res.ias_auc = inverse_activation_auc(res.ias_curves, curve_x)
    if want_as and want_ias:
        res.gap = res.as_auc - res.ias_auc
    if want_masked:
        res.probs_masked = probs_all[np.concatenate([s["masked"] for s in slots])]
        if "log_odds" in chosen:
            res.log_odds = log_odds(probs, res.probs_masked)
        if "comprehensiveness" in chosen:
            res.comprehensiveness = comprehensiveness(probs, res.probs_masked)
    if want_kept:
        res.probs_kept = probs_all[np.concatenate([s["kept"] for s in slots])]
        res.sufficiency = sufficiency(probs, res.probs_kept)
    return res
