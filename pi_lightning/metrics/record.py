"""The typed evaluation record: what a monitor stores per evaluation, and how it is saved and read back.

The monitors (:class:`~pi_lightning.callbacks.AttributionMonitor`,
:class:`~pi_lightning.callbacks.ValidationSPPI`) append one record per evaluation; every reader
(the HTML report, :class:`~pi_lightning.callbacks.ShortcutMonitor`, the CLI summary, the recipes)
reads these dataclasses, never a callback's raw dict layout:

* :class:`ProbeEvaluation`: one evaluation of a probe set by one method (figures, per-example
  attributions, AUCs and mean curves);
* :class:`ValidationEvaluation`: one validation of the free word-level SP-PI (figures and the
  words with the largest mean attribution);
* :class:`ProbeHistory`: a probe monitor's whole history (its probe texts, labels, feature spans
  and every :class:`ProbeEvaluation`), which the report reads.

**Checkpoints.** Records are saved as plain dicts of numbers, strings and lists
(:meth:`ProbeHistory.state_dict`, :meth:`Evaluation.to_dict`), so a checkpoint stays loadable with
``torch.load(..., weights_only=True)``; the layout is the one this module defines and reads back
(:meth:`ProbeHistory.from_state_dict`, :func:`histories_from_checkpoint`), also from checkpoints
written before these types existed (the dict layout is unchanged).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Evaluation",
    "ProbeEvaluation",
    "ProbeHistory",
    "ValidationEvaluation",
    "histories_from_checkpoint",
]


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _list_of(ok, optional: bool = False):
    return lambda v: isinstance(v, (list, tuple)) and all((optional and x is None) or ok(x) for x in v)


def _check_fields(owner: str, values: Mapping[str, Any], checks: Mapping[str, tuple[Any, str]]) -> None:
    """Raise a ``ValueError`` naming the first field whose value is not of its type: a saved record is
    untrusted input (a checkpoint), and its values reach HTML and logs."""
    for name, (ok, kind) in checks.items():
        if name in values and not ok(values[name]):
            v = values[name]
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise ValueError(
                f"A saved {owner} has {name}={shown} ({type(v).__name__}); expected {kind}. Was it written "
                "by a pi_lightning callback?"
            )


_EVAL_CHECKS = {
    "step": (_is_int, "an int"),
    "log_step": (_is_int, "an int"),
    "epoch": (_is_int, "an int"),
    "metrics": (
        lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and _is_num(x) for k, x in v.items()),
        "a dict of numbers by name",
    ),
    "scores": (_list_of(_list_of(_is_num)), "a list of lists of numbers"),
    "targets": (_list_of(_is_int), "a list of ints"),
    "predictions": (_list_of(_is_int), "a list of ints"),
    "as_auc": (_list_of(_is_num, optional=True), "a list of numbers (or None)"),
    "ias_auc": (_list_of(_is_num, optional=True), "a list of numbers (or None)"),
    "gap": (_list_of(_is_num, optional=True), "a list of numbers (or None)"),
    "curves": (
        lambda v: (
            isinstance(v, Mapping)
            and all(
                isinstance(k, str)
                and isinstance(c, (list, tuple))
                and len(c) == 2
                and all(map(_list_of(_is_num), c))
                for k, c in v.items()
            )
        ),
        "a dict of (x, y) number lists",
    ),
    "top_words": (
        _list_of(
            lambda w: (
                isinstance(w, Mapping)
                and isinstance(w.get("word"), str)
                and _is_num(w.get("mean_phi"))
                and _is_int(w.get("count"))
            )
        ),
        "a list of {'word': str, 'mean_phi': number, 'count': int}",
    ),
}


@dataclass
class Evaluation:
    """What every evaluation record holds.

    Attributes:
        step: optimizer steps done when the evaluation ran (the report's x axis).
        log_step: the logger step its figures were logged at (aligned with the ``val/*`` of the
            same validation; see :func:`pi_lightning.reporting.logging.logger_step`).
        epoch: the training epoch.
        metrics: the logged figures, by name without the ``pi/<method>/`` prefix (undefined
            figures are left out, never stored as NaN).
    """

    step: int
    log_step: int
    epoch: int
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (what checkpoints hold)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """The record from :meth:`to_dict`'s dict (``log_step`` defaults to ``step`` when absent)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"A saved {cls.__name__} is a dict, got {type(data).__name__}.")
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        required = {
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data) - {"log_step"})
        if missing:
            raise ValueError(
                f"A saved {cls.__name__} needs the keys {sorted(required)}; {missing} are missing. Was it "
                "written by another pi_lightning callback?"
            )
        values = {k: data[k] for k in names if k in data}
        values.setdefault("log_step", data["step"])
        _check_fields(cls.__name__, values, {k: v for k, v in _EVAL_CHECKS.items() if k in names})
        values["metrics"] = dict(values["metrics"])
        return cls(**values)


@dataclass
class ProbeEvaluation(Evaluation):
    """One evaluation of a probe set by one method (:class:`~pi_lightning.callbacks.AttributionMonitor`).

    Per-example lists follow the probe order.

    Attributes:
        scores: per example, one attribution per feature.
        targets: the explained classes.
        predictions: the predicted classes of the unmasked inputs.
        as_auc, ias_auc, gap: per-example activation / inverse activation AUC and their difference
            (``None`` entries when the metric was not computed).
        curves: ``{"as": (x, y), "ias": (x, y)}``, the mean curves on a fixed grid (the studies
            computed).

    Example:
        >>> e = ProbeEvaluation(step=4, log_step=3, epoch=0, metrics={"gap": 0.2}, scores=[[0.5, -0.1]],
        ...                     targets=[1], predictions=[1], as_auc=[0.8], ias_auc=[0.6], gap=[0.2])
        >>> ProbeEvaluation.from_dict(e.to_dict()) == e
        True
    """

    scores: list[list[float]] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
    as_auc: list[float | None] = field(default_factory=list)
    ias_auc: list[float | None] = field(default_factory=list)
    gap: list[float | None] = field(default_factory=list)
    curves: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeEvaluation:
        record = super().from_dict(data)
        record.curves = {k: (list(x), list(y)) for k, (x, y) in dict(record.curves).items()}
        return record


@dataclass
class ValidationEvaluation(Evaluation):
    """One validation of the free word-level SP-PI (:class:`~pi_lightning.callbacks.ValidationSPPI`).

    Attributes:
        top_words: the label-free detector's ranking over the validation set, best first
            (significant words against the within-text permutation null first, most significant
            first): ``{"word", "mean_phi", "count"}`` each, and ``cls``, ``excess``, ``z``,
            ``q``, ``significant`` (records written before these existed hold the words with the
            largest mean attribution, without them).
        significant_words: every significant word of this evaluation (``q < alpha``), same keys.

    Example:
        >>> e = ValidationEvaluation(step=4, log_step=3, epoch=0, metrics={"n_examples": 8.0},
        ...                          top_words=[{"word": "zxq", "mean_phi": 0.4, "count": 3}])
        >>> ValidationEvaluation.from_dict(e.to_dict()).top_words[0]["word"]
        'zxq'
    """

    top_words: list[dict[str, Any]] = field(default_factory=list)
    significant_words: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ProbeHistory:
    """A probe monitor's history: the probe set and every evaluation of it by one method.

    Attributes:
        method: the attribution method.
        texts: the probe texts.
        labels: their labels (``None`` for an unlabelled probe).
        label_names: class names (``None``: class indices are shown).
        char_spans: per text, the ``[start, end)`` character span of each feature.
        evals: the evaluations, oldest first.

    Example:
        >>> h = ProbeHistory("sp-pi", ["good"], [1], None, [[[0, 4]]], [])
        >>> ProbeHistory.from_state_dict(h.state_dict()) == h
        True
    """

    method: str
    texts: list[str]
    labels: list[int] | None
    label_names: list[str] | None
    char_spans: list[list[list[int]]] | None
    evals: list[ProbeEvaluation] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        """Flat plain-type state (``evals`` as dicts): what the monitor saves in checkpoints."""
        return {
            "method": self.method,
            "texts": self.texts,
            "labels": self.labels,
            "label_names": self.label_names,
            "char_spans": self.char_spans,
            "evals": [e.to_dict() for e in self.evals],
        }

    @staticmethod
    def is_state(state: Any) -> bool:
        """Whether ``state`` is a :meth:`state_dict` (a probe monitor's saved state)."""
        return isinstance(state, Mapping) and all(k in state for k in ("method", "texts", "evals"))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ProbeHistory:
        """The history from :meth:`state_dict`'s dict (extra keys, such as the monitor's counters, are
        ignored)."""
        if not cls.is_state(state):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                f"Expected a probe monitor's saved state with 'method', 'texts' and 'evals', got {got}."
            )
        _check_fields(
            "probe monitor state",
            state,
            {
                "method": (lambda v: isinstance(v, str), "a str"),
                "texts": (_list_of(lambda t: isinstance(t, str)), "a list of str"),
                "labels": (lambda v: v is None or _list_of(_is_int)(v), "a list of ints or None"),
                "label_names": (
                    lambda v: v is None or _list_of(lambda t: isinstance(t, str))(v),
                    "str names",
                ),
                "char_spans": (
                    lambda v: (
                        v is None or _list_of(_list_of(lambda sp: _list_of(_is_int)(sp) and len(sp) == 2))(v)
                    ),
                    "per text a list of [start, end] int pairs",
                ),
                "evals": (lambda v: isinstance(v, (list, tuple)), "a list of saved evaluations"),
            },
        )
        return cls(
            method=str(state["method"]),
            texts=list(state["texts"] or []),
            labels=None if state.get("labels") is None else list(state["labels"]),
            label_names=None if state.get("label_names") is None else list(state["label_names"]),
            char_spans=state.get("char_spans"),
            evals=[ProbeEvaluation.from_dict(e) for e in state["evals"]],
        )


def histories_from_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, ProbeHistory]:
    """The probe histories in a loaded Lightning checkpoint dict, by method.

    Every callback state in ``checkpoint["callbacks"]`` that is a :meth:`ProbeHistory.state_dict`
    (the monitors save theirs under their ``state_key``) is read back.

    Example:
        >>> h = ProbeHistory("sp-pi", ["good"], [1], None, [[[0, 4]]], [])
        >>> ckpt = {"callbacks": {"any key": {**h.state_dict(), "val_count": 1}, "other": {"x": 1}}}
        >>> list(histories_from_checkpoint(ckpt)) == ["sp-pi"]
        True
    """
    states = checkpoint.get("callbacks", {}) if isinstance(checkpoint, Mapping) else {}
    return {
        h.method: h
        for h in (ProbeHistory.from_state_dict(s) for s in states.values() if ProbeHistory.is_state(s))
    }
