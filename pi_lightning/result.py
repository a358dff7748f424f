"""The result types: :class:`Attribution`, what every attribution method returns, and
:class:`ExplainRow`, one explained example as the explain job stores it and every reader takes it back
(the loader, shortcut mining, the CLI and the pages)."""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pi_lightning.features import Features

__all__ = ["Attribution", "ExplainRow"]


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
        forward_passes: model forward-pass equivalents spent on this example (cost accounting): the
            budget actually run, whatever the budget setting asked for.
        settings: the settings the result was made with: ``granularity``, ``template``, ``mask``,
            ``output``, ``max_tokens`` and the method's own (``budget``, ``seed``, ...), defaults filled in
            (:attr:`Attributor.settings <pi_lightning.attributors.Attributor.settings>`); with ``method``,
            enough to rebuild the attributor (:func:`pi_lightning.attributors.attributor_from_settings`).
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
    settings: dict[str, Any] = field(default_factory=dict)
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


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _seq(ok):
    return lambda v: isinstance(v, (list, tuple)) and all(ok(x) for x in v)


def _opt(ok):
    return lambda v: v is None or ok(v)


def _span(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_int(x) for x in v)


#: Each field of a row: its check and what it should be (the error says it).
_ROW_CHECKS: dict[str, tuple[Any, str]] = {
    "id": (_opt(lambda v: isinstance(v, str)), "a string"),
    "index": (_opt(_int), "an int (the position in the input data)"),
    "text": (_opt(lambda v: isinstance(v, str)), "a string"),
    "label": (_opt(_int), "a class index or None"),
    "target": (_int, "a class index"),
    "prediction": (_opt(_int), "a class index"),
    "probs": (_seq(_num), "a list of class probabilities"),
    "method": (_opt(lambda v: isinstance(v, str)), "a method name"),
    "output": (lambda v: isinstance(v, str), "'prob', 'logits' or 'log_odds'"),
    "granularity": (_opt(lambda v: isinstance(v, str)), "'token', 'word' or 'sentence'"),
    "features": (_seq(lambda v: isinstance(v, str)), "a list of feature texts"),
    "char_spans": (_opt(_seq(_span)), "a list of [start, end) character ranges"),
    "scores": (_seq(_num), "a list of numbers (one per feature)"),
    "base_value": (_opt(_num), "a number or None"),
    "forward_passes": (_opt(_num), "a number or None"),
    "settings": (_opt(lambda v: isinstance(v, Mapping)), "a dict of the attributor's settings or None"),
}


@dataclass(kw_only=True)
class ExplainRow:
    """One explained example: a line of the explain job's JSONL shards (a row of its Parquet ones).

    The explain job writes every field (:meth:`from_attribution`); rows built in process for shortcut
    mining (the training callbacks) may leave out what they do not know (``None``: no text, spans,
    id...). The types are checked on construction, so a bad row fails where it is made or read, with
    the field named.

    Attributes:
        id: the example's id; ``index``: its position in the input data.
        text: the explained text; ``label``: its label (``None`` when unlabelled).
        target: the explained class; ``prediction``: the predicted class; ``probs``: ``(C,)`` class
            probabilities of the unmasked text.
        method: the attribution method; ``output``: what the scores are differences of (``"prob"``,
            ``"logits"``, ``"log_odds"``); ``granularity``: ``"token"``, ``"word"`` or ``"sentence"``.
        features: the feature texts; ``char_spans``: each feature's ``[start, end)`` in ``text``;
            ``scores``: one attribution per feature.
        base_value: the output with no feature present, when the method defines it.
        forward_passes: the cost in forward-pass equivalents.
        settings: what the attribution was made with (:attr:`Attribution.settings`: template, mask,
            granularity, budget, seed...), as JSON values; ``None`` where unknown.

    Example:
        >>> row = ExplainRow(id="0", index=0, text="good film", label=1, target=1, prediction=1,
        ...                  probs=[0.2, 0.8], method="sp-pi", output="prob", granularity="word",
        ...                  features=["good", "film"], char_spans=[[0, 4], [5, 9]], scores=[0.5, 0.1],
        ...                  base_value=None, forward_passes=1.0, settings=None)
        >>> ExplainRow.from_dict(row.to_dict()) == row
        True
    """

    id: str | None = None
    index: int | None = None
    text: str | None = None
    label: int | None = None
    target: int
    prediction: int | None = None
    probs: list[float]
    method: str | None = None
    output: str = "prob"
    granularity: str | None = None
    features: list[str]
    char_spans: list[list[int]] | None = None
    scores: list[float]
    base_value: float | None = None
    forward_passes: float | None = None
    settings: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name, (ok, kind) in _ROW_CHECKS.items():
            v = getattr(self, name)
            if not ok(v):
                shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
                raise ValueError(
                    f"Explain row {self.id!r}: {name}={shown} ({type(v).__name__}); expected {kind}."
                )
        if len(self.scores) != len(self.features):
            raise ValueError(
                f"Explain row {self.id!r} has {len(self.features)} features but {len(self.scores)} scores "
                "(one score per feature)."
            )
        if self.char_spans is not None and len(self.char_spans) != len(self.features):
            raise ValueError(
                f"Explain row {self.id!r} has {len(self.features)} features but {len(self.char_spans)} "
                "char_spans (one [start, end) range per feature)."
            )

    @classmethod
    def from_attribution(
        cls, attribution: Attribution, *, id: str, index: int, label: int | None
    ) -> ExplainRow:
        """The row of one example (``id``, ``index``, ``label``) explained by ``attribution`` (whose
        ``probs`` are filled)."""
        a, f = attribution, attribution.features
        return cls(
            id=id,
            index=index,
            text=f.text,
            label=label,
            target=int(a.target),
            prediction=a.prediction,
            probs=[float(p) for p in a.probs] if a.probs is not None else [],
            method=a.method,
            output=a.output,
            granularity=f.granularity,
            features=list(f.texts),
            char_spans=[list(s) for s in f.char_spans],
            scores=[float(s) for s in a.scores],
            base_value=a.base_value,
            forward_passes=a.forward_passes,
            settings=json.loads(json.dumps(a.settings, default=repr)) if a.settings is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict (a JSONL line, a Parquet row), every field present."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExplainRow:
        """The row from :meth:`to_dict`'s dict (a saved row holds every field).

        Raises:
            ValueError: a field is missing or unknown (a row of another version or another tool), or
                holds a value of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"An explain row is a dict, got {type(data).__name__}.")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in names if k not in data]
        unknown = sorted(str(k) for k in data if k not in names)
        if missing or unknown:
            raise ValueError(
                f"An explain row holds the keys {names}; "
                + "; ".join(
                    [f"{missing} are missing"] * bool(missing) + [f"{unknown} are unknown"] * bool(unknown)
                )
                + ". Was it written by this version's explain job? Explain the data again (overwrite=True, "
                "--overwrite)."
            )
        return cls(**{k: data[k] for k in names})
