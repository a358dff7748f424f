"""The shared interface of every attribution method, its common template, and the registry that finds
methods by name.

Captum-style: method settings (model, tokenizer, granularity, template, mask, output kind,
token budget, method options) go to the constructor; per-call data (texts, targets) to one
``attribute(...)`` method that returns one :class:`~pi_lightning.result.Attribution` per text.

:meth:`Attributor.attribute` is the same for every method: featurize the texts, run one batched
prediction pass over the unmasked inputs (:meth:`Attributor.predict`, which a method extends when it
reads more from that pass: intermediate predictions, attention rows, masked passes), resolve the
targets from it, and hand everything to the method's own part (:meth:`Attributor.explain`). The
helpers every method shares live here too: :meth:`Attributor.result` (the result with the common
fields filled in), :func:`aggregate` (token scores to feature scores) and :func:`text_rng` (the one
per-text random generator of the sampling methods).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from pi_lightning._renamed import renamed_error
from pi_lightning.features import Features, Featurizer
from pi_lightning.inference import OUTPUTS, ClassifierAdapter, class_probs, transform_outputs
from pi_lightning.masking import DEFAULT_MASK, Masker
from pi_lightning.result import Attribution

__all__ = [
    "AGGREGATIONS",
    "Attributor",
    "Target",
    "aggregate",
    "attributor_from_settings",
    "available_methods",
    "check_method_kwargs",
    "get_attributor",
    "parse_budget",
    "register",
    "resolve_method_settings",
    "text_rng",
]

Target = "int | Sequence[int] | str"

_REGISTRY: dict[str, type[Attributor]] = {}


AGGREGATIONS = ("sum", "l2")

#: Setting names that were renamed, with the name to use now (an old name gets a clear error).
RENAMED_SETTINGS = {
    "n_samples": "budget",
    "n_steps": "budget",
    "steps": "budget",
    "num_masks": "budget",
    "budget_unit": "budget",
}


def parse_budget(budget, what: str = "passes") -> tuple[float | None, int | None]:
    """A method's ``budget``: a fixed number of passes per text, or a multiple of its feature count n.

    ``"2n"`` -> ``(2.0, None)`` (``"n"`` is ``"1n"``); ``300`` -> ``(None, 300)``. Every method with a
    budget takes it in this form; ``what`` names what one unit runs, for the error message.

    Example:
        >>> parse_budget("2n"), parse_budget(300), parse_budget("0.5n")
        ((2.0, None), (None, 300), (0.5, None))
    """
    if isinstance(budget, bool):
        raise TypeError(
            f"budget must be an int number of {what} or a multiple of n like '2n', got {budget!r}."
        )
    if isinstance(budget, int):
        if budget < 1:
            raise ValueError(f"budget must be at least 1 ({what}), got {budget}.")
        return None, budget
    if isinstance(budget, str):
        s = budget.strip()
        if s.endswith("n"):
            try:
                mult = float(s[:-1]) if s[:-1] else 1.0
            except ValueError:
                mult = float("nan")
            if math.isfinite(mult) and mult > 0:
                return mult, None
    raise ValueError(
        f"budget must be an int number of {what} or a positive multiple of the number of features "
        f"like '2n' (the paper's setting) or '0.5n', got {budget!r}."
    )


def budget_count(parsed: tuple[float | None, int | None], n: int, minimum: int = 1) -> int:
    """The number of passes a parsed budget (:func:`parse_budget`) gives a text of ``n`` features: the
    fixed count, or ``max(minimum, ceil(k n))``."""
    mult, fixed = parsed
    return fixed if fixed is not None else max(minimum, math.ceil(mult * n))


def text_rng(seed: int | None, features: Features) -> np.random.Generator:
    """The random generator of one text: a function of ``seed``, the text's tokens and its feature spans.

    Sampling methods (MP-PI's masks, Kernel SHAP's coalitions, Random's scores) draw each text's samples
    from it, so a text's attribution does not depend on which texts share the call, the chunking, the
    rank or the call order (stable across processes: no Python ``hash``). ``seed=None``: fresh entropy.

    Example:
        >>> from pi_lightning.features import Featurizer
        >>> from pi_lightning.testing import tiny_tokenizer
        >>> f = Featurizer(tiny_tokenizer("gpt2"))("a good movie")
        >>> text_rng(0, f).random() == text_rng(0, f).random() != text_rng(1, f).random()
        True
    """
    if seed is None:
        return np.random.default_rng()
    # (T,) token ids then (n, 2) spans, as int64 bytes -> a 128-bit digest -> 4 seed words.
    key = np.concatenate(
        [
            np.asarray(features.input_ids, dtype=np.int64),
            np.asarray(features.spans, dtype=np.int64).reshape(-1),
        ]
    )
    digest = hashlib.blake2b(key.tobytes(), digest_size=16).digest()
    words = np.frombuffer(digest, dtype=np.uint32).tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def aggregate(token_scores: torch.Tensor, features: Features, how: str) -> torch.Tensor:
    """Aggregate per-token scores to one score per feature.

    Args:
        token_scores: ``(T,)`` or ``(T, D)`` scores for the ``T`` tokens of ``features.input_ids``
            (``D``: embedding dimensions, kept for ``"l2"``).
        features: the features whose token spans are used.
        how: ``"sum"`` (signed sum over the feature's tokens and dimensions) or ``"l2"`` (the L2 norm
            of everything the feature's tokens carry, the paper's choice for Input x Gradient and
            LRP, Appendix B.2; always non-negative).

    Returns:
        ``(n,)`` float64 scores.

    Example:
        >>> from pi_lightning.testing import tiny_tokenizer
        >>> f = Featurizer(tiny_tokenizer("gpt2"))("it was")
        >>> aggregate(torch.tensor([[3.0, 4.0], [1.0, 1.0]]), f, "l2").tolist()
        [5.0, 1.4142135623730951]
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation {how!r}: expected one of {', '.join(AGGREGATIONS)}.")
    if token_scores.shape[0] != len(features.input_ids):
        raise ValueError(
            f"Expected one score per input token ({len(features.input_ids)}), got shape "
            f"{tuple(token_scores.shape)}."
        )
    x = token_scores.detach().double().cpu()
    # (T, ...) -> (T, D): one row of values per token.
    x = x.reshape(x.shape[0], -1)
    out = []
    for a, b in features.spans:
        block = x[a:b]
        out.append(block.sum() if how == "sum" else torch.linalg.vector_norm(block))
    return torch.stack(out)


def register(cls: type[Attributor]) -> type[Attributor]:
    """Class decorator: make an attributor selectable by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(
            f"Two attributors are named {cls.name!r}: {_REGISTRY[cls.name].__name__}, {cls.__name__}."
        )
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    """Names accepted by :func:`get_attributor`, the callbacks and the recipes."""
    import pi_lightning.attributors  # noqa: F401  (registers the built-in methods)

    return sorted(_REGISTRY)


def get_attributor(name: str, model, tokenizer, **kwargs) -> Attributor:
    """Build the attributor registered as ``name`` (see :func:`available_methods`)."""
    check_method_kwargs(name, kwargs)
    return _REGISTRY[name](model, tokenizer, **kwargs)


def _setting_defaults(cls: type) -> dict[str, Any]:
    """Every setting (constructor keyword argument) of an attributor class and its default, walking the
    constructors that pass ``**kwargs`` on to their parent's (the closest constructor's default wins)."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for p in params:
            if p.kind in named and p.name not in ("model", "tokenizer"):
                out.setdefault(p.name, None if p.default is inspect.Parameter.empty else p.default)
        if klass is Attributor or not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return out


def _recording_settings(init):
    """``init`` that first records the settings the attributor is made with (the outermost constructor's
    keyword arguments over every default): what each result carries as ``settings``."""

    @functools.wraps(init)
    def recording(self, *args, **kwargs):
        if not hasattr(self, "_settings"):
            self._settings = {**_setting_defaults(type(self)), **kwargs}
        init(self, *args, **kwargs)

    recording._records_settings = True
    return recording


def method_settings(name: str) -> list[str]:
    """The settings (constructor keyword arguments) the method registered as ``name`` takes.

    Example:
        >>> "budget" in method_settings("mp-pi") and "granularity" in method_settings("mp-pi")
        True
    """
    methods = available_methods()
    if name not in _REGISTRY:
        raise ValueError(f"Unknown attribution method {name!r}: expected one of {', '.join(methods)}.")
    return sorted(_setting_defaults(_REGISTRY[name]))


def resolve_method_settings(name: str, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting of the method registered as ``name``, ``kwargs`` over its defaults: what an attributor
    built with ``kwargs`` records as :attr:`Attributor.settings` (without building it).

    Example:
        >>> resolve_method_settings("sp-pi", {"template": "Review: {text}"})["template"]
        'Review: {text}'
    """
    check_method_kwargs(name, dict(kwargs or {}))
    return {**_setting_defaults(_REGISTRY[name]), **dict(kwargs or {})}


def attributor_from_settings(method: str, settings: Mapping[str, Any], model, tokenizer) -> Attributor:
    """Rebuild the attributor a result was made with, from its method's name and recorded settings
    (:attr:`Attribution.method` and :attr:`Attribution.settings <pi_lightning.result.Attribution.settings>`,
    :attr:`Attributor.settings`, or the ``method`` and ``settings`` an explain job saves in ``job.json``).

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> model = tiny_classifier("gpt2", tokenizer=tok)
        >>> mp = get_attributor("mp-pi", model, tok, budget=16, seed=3, template="Review: {text}")
        >>> result = mp.attribute("a good movie")[0]
        >>> again = attributor_from_settings(result.method, result.settings, model, tok)
        >>> again.settings == mp.settings and again.settings["budget"] == 16
        True
    """
    if not isinstance(settings, Mapping):
        raise ValueError(
            f"settings must be a dict of the method's constructor settings (what Attribution.settings "
            f"holds), got {type(settings).__name__}."
        )
    return get_attributor(method, model, tokenizer, **dict(settings))


def _check_setting_names(label: str, allowed: list[str], kwargs) -> None:
    """A clear error for the first setting not in ``allowed``: a renamed one names its new name, a
    misspelled one the closest valid name."""
    import difflib

    for key in kwargs:
        if key in allowed:
            continue
        if RENAMED_SETTINGS.get(key) in allowed:
            raise renamed_error(f"method {label!r}", key, RENAMED_SETTINGS[key])
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"Unknown setting {key!r} for method {label!r}{hint}; its settings are {', '.join(allowed)}."
        )


def check_method_kwargs(name: str, kwargs) -> None:
    """Check a method's settings without a model: unknown names (a misspelled ``budjet``, an old name
    such as ``n_samples``) and the shared settings' values, so that callbacks and jobs that build the
    attributor later fail at construction.

    Raises:
        ValueError: an unknown method, an unknown setting (with the closest valid name, or the new
            name of a renamed one), or a bad ``granularity`` / ``template`` / ``output``.

    Example:
        >>> check_method_kwargs("mp-pi", {"budjet": 64})
        Traceback (most recent call last):
        ...
        ValueError: Unknown setting 'budjet' for method 'mp-pi' (did you mean 'budget'?); its settings are ...
        >>> check_method_kwargs("kernel-shap", {"n_samples": 64})
        Traceback (most recent call last):
        ...
        ValueError: Argument 'n_samples' of method 'kernel-shap' is now called 'budget': ...
    """
    from pi_lightning.features import GRANULARITIES, check_template

    _check_setting_names(name, method_settings(name), kwargs)
    if "granularity" in kwargs and kwargs["granularity"] not in GRANULARITIES:
        raise ValueError(
            f"Unknown granularity {kwargs['granularity']!r}: expected one of {', '.join(GRANULARITIES)}."
        )
    if "template" in kwargs:
        check_template(kwargs["template"])
    if "output" in kwargs and kwargs["output"] not in OUTPUTS:
        raise ValueError(f"Unknown output {kwargs['output']!r}: expected one of {', '.join(OUTPUTS)}.")


# The shared settings' help, with ``{name}`` standing for each one's real default (filled in from the
# signature of Attributor.__init__ below, so the help cannot drift from the code).
_SHARED_HELP = """
        model: a transformers decoder-only ``*ForSequenceClassification`` (or its peft wrapper).
        tokenizer: its fast tokenizer.
        granularity: ``"token"``, ``"word"`` or ``"sentence"`` (default ``{granularity}``): the
            features that get one score each.
        template: fixed context around the attributed text, with one ``{{text}}`` placeholder
            (default ``{template}``: no context), e.g. ``"Review: {{text}}\\nSentiment:"``; the
            context is never attributed.
        mask: what replaces an inactive feature (default ``{mask}``): ``"remove"`` (drop its tokens),
            ``"..."`` (the paper's mask), a token id, ``"pad"`` or ``"unk"`` (see
            :class:`~pi_lightning.masking.Masker`).
        output: ``"prob"``, ``"logits"`` or ``"log_odds"`` (default ``{output}``): the model output
            that is attributed.
        max_tokens: token budget per forward batch (default ``{max_tokens}``)."""


class Attributor:
    """Base class: explains a decoder-only classifier's predictions on texts.

    Subclasses take the settings below as keyword arguments (their docstrings repeat them).
    """

    def __init_subclass__(cls, **kwargs) -> None:
        # Every method takes the shared settings as keyword arguments: say so in its own docstring,
        # so that help(pi_lightning.SPPI) explains its constructor without looking up the base class.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_records_settings", False):
            cls.__init__ = _recording_settings(init)
        if cls.__doc__ and "max_tokens:" not in cls.__doc__:
            cls.__doc__ = (
                cls.__doc__.rstrip() + "\n\n    Settings shared by every attributor (keyword "
                "arguments of the constructor):" + _SHARED_ARGS + "\n    "
            )

    @property
    def settings(self) -> dict[str, Any]:
        """Every constructor setting (defaults filled in): with :attr:`name`, enough to rebuild this
        attributor (:func:`attributor_from_settings`); each result carries a copy."""
        return dict(self._settings)

    name: ClassVar[str] = ""
    #: Cost in forward-pass equivalents, as the paper's Cost column writes it ("0", "1x", "2n", ...).
    cost: ClassVar[str] = ""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        granularity: str = "word",
        template: str = "{text}",
        mask: str | int | None = DEFAULT_MASK,
        output: str = "prob",
        max_tokens: int = 8192,
        **unknown,
    ) -> None:
        if unknown:  # a misspelled or renamed setting: the same clear error as get_attributor's
            _check_setting_names(
                self.name or type(self).__name__, sorted(_setting_defaults(type(self))), unknown
            )
        if output not in OUTPUTS:
            raise ValueError(f"Unknown output {output!r}: expected one of {', '.join(OUTPUTS)}.")
        if not hasattr(self, "_settings"):  # a method without a constructor of its own
            shared = {"granularity": granularity, "template": template, "mask": mask, "output": output}
            self._settings = {**_setting_defaults(type(self)), **shared, "max_tokens": max_tokens}
        self.adapter = ClassifierAdapter(model, max_tokens=max_tokens)
        self.model = model
        self.tokenizer = tokenizer
        self.output = output
        self.masker = Masker(tokenizer, mask)
        mask_tokens = max(len(self.masker.mask_ids(True)), len(self.masker.mask_ids(False)))
        self.featurizer = Featurizer(
            tokenizer, granularity, template, max_length=self.adapter.max_length, mask_tokens=mask_tokens
        )

    def forward_equivalents(self, n: int) -> float:
        """Cost for a text of ``n`` features in forward-pass equivalents (backward = 1 forward)."""
        c = self.cost.strip()
        if c.endswith("n"):
            return float(c[:-1] or 1) * n
        if c.endswith("x"):
            return float(c[:-1])
        return float(c or 0)

    def featurize(self, texts: str | Features | Sequence[str | Features]) -> list[Features]:
        """Featurize texts (already featurized ones pass through)."""
        if isinstance(texts, (str, Features)):
            texts = [texts]
        return [t if isinstance(t, Features) else self.featurizer(t) for t in texts]

    def resolve_targets(self, target, count: int, final_logits: torch.Tensor | None = None) -> list[int]:
        """Targets per example from ``"predicted"``, one class index, or one index per example."""
        C = self.adapter.num_labels
        if isinstance(target, str):
            if target != "predicted":
                raise ValueError(
                    f"target must be 'predicted', a class index or one index per text, got {target!r}."
                )
            if final_logits is None:
                raise ValueError("target='predicted' needs the unmasked predictions.")
            return [int(i) for i in final_logits.argmax(-1).tolist()]
        if isinstance(target, torch.Tensor):
            target = target.tolist()
        targets = [target] * count if isinstance(target, int) else list(target)
        if len(targets) != count:
            raise ValueError(
                f"Got {len(targets)} targets for {count} texts: give one per text, or a single int."
            )
        for t in targets:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < C:
                raise ValueError(f"Target class {t!r} is not a class index in 0..{C - 1}.")
        return [int(t) for t in targets]

    def fill_probs(self, attributions: Sequence[Attribution]) -> list[Attribution]:
        """Give every result its class probabilities on the unmasked input: methods that never run that
        input leave ``probs`` empty, and one batched pass fills them. Returns the same results."""
        missing = [a for a in attributions if a.probs is None]
        if missing:
            finals = self.adapter.final_logits([a.features.input_ids for a in missing])
            for a, lg in zip(missing, finals, strict=True):
                a.probs = class_probs(lg)
        return list(attributions)

    def outputs(self, logits: torch.Tensor, target: int) -> torch.Tensor:
        """The attributed output of class ``target`` from logits ``(..., C)``."""
        return transform_outputs(logits, self.output)[..., target]

    def result(
        self, features: Features, target: int, final_logits: torch.Tensor, scores: torch.Tensor, **fields
    ) -> Attribution:
        """An :class:`~pi_lightning.result.Attribution` of this method: ``method``, ``output`` (unless given)
        and the class probabilities of ``final_logits`` filled in; ``fields`` gives the rest."""
        fields.setdefault("output", self.output)
        fields.setdefault("settings", self.settings)
        return Attribution(
            scores=scores,
            features=features,
            target=target,
            method=self.name,
            probs=class_probs(final_logits),
            **fields,
        )

    def attribute(self, texts, target="predicted") -> list[Attribution]:
        """Explain the model's output for ``target`` on each text.

        The template of every method: featurize, one batched prediction pass (:meth:`predict`), the
        targets, then the method's own part (:meth:`explain`).

        Args:
            texts: a text, a list of texts, or already built :class:`~pi_lightning.features.Features`.
            target: ``"predicted"`` (the model's predicted class), a class index, or one per text
                (e.g. the true labels).

        Returns:
            One :class:`~pi_lightning.result.Attribution` per text, in order.
        """
        feats = self.featurize(texts)
        finals, state = self.predict(feats)
        targets = self.resolve_targets(target, len(feats), finals)
        return self.explain(feats, targets, finals, state)

    def predict(self, feats: Sequence[Features]) -> tuple[torch.Tensor, Any]:
        """The one batched prediction pass over the unmasked inputs.

        Returns:
            ``(final_logits, state)``: ``(N, C)`` logits at each input's last token, and whatever else a
            method reads from the same pass (the default reads nothing: ``None``).
        """
        return self.adapter.final_logits([f.input_ids for f in feats]), None

    def explain(
        self, feats: list[Features], targets: list[int], finals: torch.Tensor, state: Any
    ) -> list[Attribution]:
        """The method's own part: one :class:`~pi_lightning.result.Attribution` per example, from the
        features, the resolved targets, the final logits ``(N, C)`` and the state of :meth:`predict`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement explain().")


_SHARED_ARGS = _SHARED_HELP.format(
    **{
        k: f'"{p.default}"' if isinstance(p.default, str) else repr(p.default)
        for k, p in inspect.signature(Attributor.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
)
Attributor.__doc__ = Attributor.__doc__.rstrip() + "\n\n    Args:" + _SHARED_ARGS + "\n    "
