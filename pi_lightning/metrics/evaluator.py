"""ProbeEvaluator: attribute a set of texts, score the attributions' faithfulness, aggregate, with no Trainer.

The one evaluation path of the package. :class:`~pi_lightning.callbacks.AttributionMonitor` runs it on
a schedule during training (and adds only the schedule, the sharding across ranks and the logging),
``benchmarks/faithfulness_table.py`` runs it per method over a test set, and ``pi-lightning explain
--metrics`` runs it on the explained texts. Like a ``torchmetrics`` metric, the settings go to the
constructor, :meth:`ProbeEvaluator.update` takes a batch (texts to attribute, or attributions made
elsewhere) and :meth:`ProbeEvaluator.compute` returns the typed record, a
:class:`~pi_lightning.metrics.ProbeEvaluation`:

1. attribute (methods with a ``fit`` step, AT2, are refitted first: from another method's masked passes
   when given, else from their own ablations);
2. score: :func:`~pi_lightning.metrics.evaluate_faithfulness` (activation / inverse activation studies,
   log-odds, comprehensiveness, sufficiency) in chunks, keeping every example's values and its AS/IAS
   curves resampled on a fixed grid;
3. aggregate the examples (across processes: ``compute(gather=...)`` takes a function that returns
   every process's examples): means and 95% half-widths of each metric and of the AS - IAS gap, the
   mean curves, accuracy, forward passes per example, and, against earlier records of the same
   examples (``history``), the paired changes (:class:`~pi_lightning.metrics.PairedChange`) and the
   rank correlation with the previous attributions (drift).

Every figure is computed from the merged per-example values, so one process, several processes and a
resumed benchmark give the same numbers from the same examples.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pi_lightning.metrics.evaluation import METRICS, _check_metrics, evaluate_faithfulness
from pi_lightning.metrics.functional.curves import check_points, interpolate_curve
from pi_lightning.metrics.functional.removal import check_top_k
from pi_lightning.metrics.functional.stats import mean_confidence_interval
from pi_lightning.metrics.paired import PairedChange
from pi_lightning.metrics.record import ProbeEvaluation
from pi_lightning.result import Attribution

__all__ = ["ProbeEvaluator", "ScoredExample"]

#: The per-example figures paired between two evaluations of the same examples.
PAIRED = ("gap", "as_auc", "ias_auc")


@dataclass
class ScoredExample:
    """One scored example, in plain values: what processes exchange (``compute(gather=...)``) and what
    :meth:`ProbeEvaluator.extend` takes back (e.g. the examples of an earlier, resumed run).

    Attributes:
        i: the example's position in the whole set.
        scores: its attribution, one score per feature.
        target, prediction, label: the explained class, the predicted class, the label (or ``None``).
        passes: forward-pass equivalents its attribution cost (``None``: not reported).
        values: per metric (``as_auc``, ..., ``sufficiency``, ``gap``) its value, ``None`` if not computed.
        curves: ``"as"``, ``"ias"``: its curve resampled on the evaluator's grid, ``None`` if not computed.
    """

    i: int
    scores: list[float]
    target: int
    prediction: int
    label: int | None
    passes: float | None
    values: dict[str, float | None]  # METRICS and "gap"
    curves: dict[str, list[float] | None]  # "as", "ias": resampled on the grid


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman rank correlation (:func:`scipy.stats.spearmanr`, average ranks for ties); None when
    undefined (fewer than two features, different lengths, or a constant vector)."""
    if a.numel() < 2 or a.numel() != b.numel():
        return None
    from scipy.stats import ConstantInputWarning, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        r = float(spearmanr(a.double().numpy(), b.double().numpy()).statistic)
    return None if math.isnan(r) else r


class ProbeEvaluator:
    """Attribute texts with one method, score their faithfulness and aggregate into a
    :class:`~pi_lightning.metrics.ProbeEvaluation`.

    Args:
        attributor: the method, built (:func:`pi_lightning.attributors.get_attributor`); its masker
            perturbs the texts for the metrics too. :meth:`from_method` builds it from a name.
        target: which class each text is explained for: ``"label"`` (the labels given to
            :meth:`update`), ``"predicted"`` or a class index.
        metrics: which of ``as_auc``, ``ias_auc``, ``log_odds``, ``comprehensiveness``,
            ``sufficiency`` (default: all); an empty list attributes only (no masked passes).
        top_k: percentage of features for the removal metrics.
        curve_points: grid size of the mean AS/IAS curves.
        points: ``None`` for the exact curves (every step), or the number of fixed fractions of the
            features at which to evaluate them (see :func:`~pi_lightning.metrics.evaluate_faithfulness`).
        chunk: examples per scoring call (and per progress update; the values do not depend on it).
        refit: methods with a ``fit`` step (AT2) are refitted at every :meth:`update` (their weights follow
            a model that trains); ``False``: used as fitted (e.g. fitted once on training texts).
        progress: ``progress(description, total)`` returning a bar with ``update(n)`` and ``close()``, or
            ``None`` (no bar); called once per attribution and once per scoring of an update.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> ev = ProbeEvaluator.from_method("sp-pi", tiny_classifier("gpt2", tokenizer=tok), tok)
        >>> _ = ev.update(["a good movie", "bad plot"], labels=[1, 0])
        >>> record = ev.compute()
        >>> len(record.scores), sorted(record.curves), "gap_ci" in record.metrics
        (2, ['as', 'ias'], True)
    """

    def __init__(
        self,
        attributor,
        *,
        target: str | int = "label",
        metrics: Sequence[str] | None = None,
        top_k: float = 20.0,
        curve_points: int = 21,
        points: int | None = None,
        chunk: int = 8,
        refit: bool = True,
        progress: Callable[[str, int], Any] | None = None,
    ) -> None:
        from pi_lightning.attributors.base import Attributor

        if not isinstance(attributor, Attributor):
            raise TypeError(
                f"attributor must be a pi_lightning attributor, got {type(attributor).__name__}: build one "
                "with pi_lightning.attributors.get_attributor(name, model, tokenizer), or use "
                "ProbeEvaluator.from_method(name, model, tokenizer)."
            )
        checked = self.check_settings(
            target=target,
            metrics=metrics,
            top_k=top_k,
            curve_points=curve_points,
            points=points,
            chunk=chunk,
        )
        self.attributor = attributor
        self.target = checked["target"]
        self.metrics = checked["metrics"]
        self.top_k = checked["top_k"]
        self.curve_points = checked["curve_points"]
        self.points = checked["points"]
        self.chunk = checked["chunk"]
        if not isinstance(refit, bool):
            raise ValueError(f"refit must be True or False, got {refit!r}.")
        self.refit = refit
        self.progress = progress
        self.attribution_seconds = 0.0
        self._examples: list[ScoredExample] = []

    @staticmethod
    def check_settings(
        *,
        target: str | int = "label",
        metrics: Sequence[str] | None = None,
        top_k: float = 20.0,
        curve_points: int = 21,
        points: int | None = None,
        chunk: int = 8,
    ) -> dict[str, Any]:
        """The constructor's settings checked and normalised (what a callback checks at construction,
        before it has the model to build the evaluator with)."""
        if not (
            target in ("label", "predicted") or (isinstance(target, int) and not isinstance(target, bool))
        ):
            raise ValueError(f"target must be 'label', 'predicted' or a class index, got {target!r}.")
        if metrics is not None and not isinstance(metrics, str) and len(metrics) == 0:
            chosen: tuple[str, ...] = ()
        else:
            chosen = _check_metrics(metrics)
        top_k = check_top_k(top_k)
        for name, v, low in (("curve_points", curve_points, 2), ("chunk", chunk, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}.")
        return {
            "target": target,
            "metrics": chosen,
            "top_k": top_k,
            "curve_points": curve_points,
            "points": check_points(points),
            "chunk": chunk,
        }

    @classmethod
    def from_method(
        cls, method: str, model, tokenizer, method_kwargs: Mapping[str, Any] | None = None, **settings
    ) -> ProbeEvaluator:
        """An evaluator of the method registered as ``method`` (settings ``method_kwargs``) on ``model``;
        ``settings`` are the evaluator's (``target``, ``metrics``, ...)."""
        from pi_lightning.attributors.base import get_attributor

        return cls(get_attributor(method, model, tokenizer, **dict(method_kwargs or {})), **settings)

    @property
    def method(self) -> str:
        return self.attributor.name

    # ------------------------------------------------------------------ probe checks
    def out_of_range(self, labels: Sequence[int] | None) -> list[tuple[int, int]]:
        """``(position, label)`` of the labels that are not class indices of the model."""
        C = self.attributor.adapter.num_labels
        return [(i, y) for i, y in enumerate(labels or ()) if not 0 <= y < C]

    # ------------------------------------------------------------------ update
    def reset(self) -> None:
        """Forget the examples seen (the settings and the attributor stay)."""
        self._examples = []
        self.attribution_seconds = 0.0

    def update(
        self,
        texts: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        *,
        attributions: Sequence[Attribution] | None = None,
        index: Sequence[int] | None = None,
        refit_from: Sequence[Attribution] | None = None,
    ) -> list[Attribution]:
        """Attribute ``texts`` (or take ``attributions`` made elsewhere) and score them.

        Args:
            texts: the texts to explain.
            labels: their labels (needed with ``target="label"``; with any target they give the
                accuracy).
            attributions: already made attributions of these examples (instead of ``texts``).
            index: the examples' positions in the whole set (default: after those seen), so that the
                examples of several processes merge in order and pair with earlier records.
            refit_from: for methods with a ``fit`` step (AT2): another method's attributions of the
                same texts, whose masked passes it refits from (else it refits from its own ablations).

        Returns:
            The attributions.

        Raises:
            FloatingPointError: non-finite scores or AS/IAS areas (a diverged model).
        """
        if (texts is None) == (attributions is None):
            raise ValueError("ProbeEvaluator.update takes texts to attribute, or attributions (one of them).")
        count = len(texts) if texts is not None else len(attributions)
        if labels is not None and len(labels) != count:
            raise ValueError(f"Got {len(labels)} labels for {count} examples: give one per example.")
        start = max((e.i for e in self._examples), default=-1) + 1
        idx = list(range(start, start + count)) if index is None else [int(i) for i in index]
        if len(idx) != count:
            raise ValueError(f"Got {len(idx)} indices for {count} examples: give one per example.")
        if count == 0:
            return []
        if attributions is None:
            attributions = self._attribute(list(texts), self._targets(labels, count), refit_from)
        attributions = list(attributions)
        bad = [i for i, a in zip(idx, attributions, strict=True) if not bool(torch.isfinite(a.scores).all())]
        if bad:
            raise FloatingPointError(
                f"{self.method} returned NaN or infinite scores for examples {bad[:10]}; the model's outputs "
                "are probably not finite (diverged weights or an overflow)"
            )
        self._score(attributions, idx, labels)
        return attributions

    def _targets(self, labels, count: int):
        if self.target == "label":
            if labels is None:
                raise ValueError(
                    "target='label' needs labels: pass update(texts, labels=[...]), or use "
                    "target='predicted'."
                )
            return [int(y) for y in labels]
        return self.target if isinstance(self.target, str) else [self.target] * count

    def _bar(self, desc: str, total: int):
        return None if self.progress is None else self.progress(desc, total)

    def _attribute(self, texts: list[str], targets, refit_from) -> list[Attribution]:
        att = self.attributor
        t0 = time.perf_counter()
        if self.refit and hasattr(att, "fit_and_attribute"):
            if refit_from and [a.features.text for a in refit_from] == texts:
                out = att.fit_and_attribute(list(refit_from))
                self._timed(t0)
                return out
            att.fit(texts, target=targets)
        costly = att.cost not in ("0", "")
        bar = self._bar(f"pi_lightning {self.method}", len(texts)) if costly else None
        step = self.chunk if bar is not None else len(texts)
        out: list[Attribution] = []
        try:
            for a in range(0, len(texts), step):
                t = targets if isinstance(targets, str) else targets[a : a + step]
                out.extend(att.attribute(texts[a : a + step], target=t))
                if bar is not None:
                    bar.update(min(step, len(texts) - a))
        finally:
            if bar is not None:
                bar.close()
        self._timed(t0)
        return out

    def _timed(self, t0: float) -> None:
        device = self.attributor.adapter.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.attribution_seconds += time.perf_counter() - t0

    def _score(self, attrs: list[Attribution], idx: list[int], labels) -> None:
        """Masked passes, ``chunk`` examples at a time; one :class:`ScoredExample` per attribution."""
        n = len(attrs)
        values: dict[str, list] = {m: [None] * n for m in (*METRICS, "gap")}
        curves: dict[str, list] = {"as": [None] * n, "ias": [None] * n}
        if not self.metrics:
            preds = [int(a.probs.argmax()) for a in self.attributor.fill_probs(attrs)]
        else:
            preds = []
            bar = self._bar(f"pi_lightning {self.method} metrics", n)
            try:
                for a in range(0, n, self.chunk):
                    part = attrs[a : a + self.chunk]
                    res = evaluate_faithfulness(
                        part,
                        self.attributor.adapter,
                        self.attributor.masker,
                        top_k=self.top_k,
                        metrics=self.metrics,
                        points=self.points,
                    )
                    preds += res.predictions.tolist()
                    for m in values:
                        v = getattr(res, m)
                        if v is not None:
                            values[m][a : a + len(part)] = [float(x) for x in v]
                    for kind in curves:
                        c = getattr(res, f"{kind}_curves")
                        if c is not None:
                            # (E, G): each example's curve on the common grid
                            grid = interpolate_curve(c, self.curve_points, res.curve_x).reshape(
                                len(part), self.curve_points
                            )
                            curves[kind][a : a + len(part)] = grid.tolist()
                    if bar is not None:
                        bar.update(len(part))
            finally:
                if bar is not None:
                    bar.close()
        for name in ("as_auc", "ias_auc"):
            if any(v is not None and not math.isfinite(v) for v in values[name]):
                raise FloatingPointError(f"the {name} of some examples is NaN or infinite")
        for j, (i, a) in enumerate(zip(idx, attrs, strict=True)):
            self._examples.append(
                ScoredExample(
                    i=i,
                    scores=[float(s) for s in a.scores],
                    target=int(a.target),
                    prediction=int(preds[j]),
                    label=None if labels is None else int(labels[j]),
                    passes=a.forward_passes,
                    values={m: values[m][j] for m in values},
                    curves={k: curves[k][j] for k in curves},
                )
            )

    # ------------------------------------------------------------------ compute
    @property
    def examples(self) -> list[ScoredExample]:
        """This process's scored examples, in the order seen."""
        return list(self._examples)

    def extend(self, examples: Sequence[ScoredExample]) -> None:
        """Add examples scored before (by another evaluator with the same settings, or read back from an
        earlier run), as if :meth:`update` had scored them."""
        for e in examples:
            if not isinstance(e, ScoredExample):
                raise TypeError(f"extend takes ScoredExample objects, got {type(e).__name__}.")
        self._examples.extend(examples)

    def values(self, name: str) -> list[float | None]:
        """This process's per-example values of a metric (``as_auc``, ..., ``gap``), in index order."""
        if name not in (*METRICS, "gap"):
            raise ValueError(f"Unknown metric {name!r}: expected one of {', '.join((*METRICS, 'gap'))}.")
        return [e.values[name] for e in sorted(self._examples, key=lambda e: e.i)]

    def compute(
        self,
        *,
        history: Sequence[ProbeEvaluation] = (),
        gather: Callable[[list], list[list]] | None = None,
        step: int = 0,
        log_step: int | None = None,
        epoch: int = 0,
    ) -> ProbeEvaluation:
        """The record of the examples seen (by every process).

        Args:
            history: earlier records of the same examples (same order), oldest first: the paired
                changes against the first (``*_change``) and the last (``*_change_prev``) that hold a
                figure, and the attributions' rank correlation with the last (``drift_rank_corr``).
            gather: ``gather(local_examples)`` returning every process's examples (a list per process;
                every process must call it); ``None``: this process only.
            step, log_step, epoch: the record's place in training (``log_step`` defaults to ``step``).

        Returns:
            A :class:`~pi_lightning.metrics.ProbeEvaluation`; figures that are undefined (a confidence
            interval from one example) are left out, never stored as NaN.
        """
        parts = [self._examples] if gather is None else gather(list(self._examples))
        merged = sorted((e for part in parts for e in part), key=lambda e: e.i)
        figures: dict[str, float] = {}
        names = [m for m in METRICS if m in self.metrics]
        if {"as_auc", "ias_auc"} <= set(names):
            names.append("gap")
        for m in names:
            v = torch.tensor([e.values[m] for e in merged], dtype=torch.float64)
            figures[m], figures[f"{m}_ci"] = mean_confidence_interval(v)
        curves = {}
        for kind in ("as", "ias"):
            if f"{kind}_auc" in names and merged:
                y = torch.tensor([e.curves[kind] for e in merged], dtype=torch.float64).mean(0)
                x = torch.linspace(0.0, 1.0, self.curve_points, dtype=torch.float64)
                curves[kind] = (x.tolist(), y.tolist())
        figures.update(self._paired(merged, history))
        labelled = [e for e in merged if e.label is not None]
        if labelled:
            figures["accuracy"] = sum(e.prediction == e.label for e in labelled) / len(labelled)
        if history:
            prev = history[-1].scores
            corr = [
                rank_correlation(torch.tensor(e.scores), torch.tensor(prev[j]))
                for j, e in enumerate(merged)
                if j < len(prev)
            ]
            corr = [c for c in corr if c is not None]
            if corr:
                figures["drift_rank_corr"] = sum(corr) / len(corr)
        passes = [e.passes for e in merged if e.passes is not None]
        if passes:
            figures["forward_passes_per_example"] = sum(passes) / len(passes)
        figures = {k: float(v) for k, v in figures.items() if math.isfinite(v)}
        return ProbeEvaluation(
            step=int(step),
            log_step=int(step if log_step is None else log_step),
            epoch=int(epoch),
            metrics=figures,
            scores=[e.scores for e in merged],
            targets=[e.target for e in merged],
            predictions=[e.prediction for e in merged],
            as_auc=[e.values["as_auc"] for e in merged],
            ias_auc=[e.values["ias_auc"] for e in merged],
            gap=[e.values["gap"] for e in merged],
            curves=curves,
        )

    def _paired(self, merged: list[ScoredExample], history: Sequence[ProbeEvaluation]) -> dict[str, float]:
        """Per figure (gap, AS, IAS AUC) and reference (the first record holding it, and the last), the
        paired change of every example: mean, half-width, Wilcoxon p and pairs."""
        out: dict[str, float] = {}
        size = len(merged)
        if not size:
            return out
        for field in PAIRED:
            if (field == "gap" and not {"as_auc", "ias_auc"} <= set(self.metrics)) or (
                field != "gap" and field not in self.metrics
            ):
                continue
            usable = [
                e
                for e in history
                if len(getattr(e, field)) == size and any(v is not None for v in getattr(e, field))
            ]
            if not usable:
                continue
            for suffix, ref in (("", usable[0]), ("_prev", usable[-1])):
                metric = PairedChange(num_examples=size, sync_on_compute=False)
                before = getattr(ref, field)
                metric.update(before, [e.values[field] for e in merged])
                test = metric.test()
                name = f"{field}_change{suffix}"
                out.update(
                    {name: test.mean, f"{name}_ci": test.ci, f"{name}_p": test.p, f"{name}_n": float(test.n)}
                )
        return out
