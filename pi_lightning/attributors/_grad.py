"""Shared machinery of the baseline methods that look inside the model (gradients, attention, LRP).

The perturbation methods (SP-PI, MP-PI, Kernel SHAP) only run the model on masked token
sequences. The baselines of the paper's Table 2 need more: gradients with respect to the input
embeddings (Input x Gradient, Integrated Gradients, LRP) or attention maps (A-Last, GAE). This
module exposes the model as a function of its input embeddings, reads the head's output at the
classifying position, collects attention maps, aggregates token scores to features, and does all
of it inside context managers that put the model back exactly as found: training mode of every
submodule, ``requires_grad`` of every parameter, hooks, and the attention implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from pi_lightning.attributors.base import Attributor
from pi_lightning.features import Features
from pi_lightning.inference import class_probs, transform_outputs
from pi_lightning.result import Attribution

__all__ = [
    "AGGREGATIONS",
    "EmbeddingFunction",
    "GradientAttributor",
    "aggregate",
    "attention_modules",
    "eager_attention",
    "grad_mode",
    "mask_baseline",
    "predict",
]

AGGREGATIONS = ("sum", "l2")


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
        >>> from pi_lightning.features import Featurizer
        >>> from pi_lightning.testing import tiny_tokenizer
        >>> f = Featurizer(tiny_tokenizer("gpt2"))("it was")
        >>> aggregate(torch.tensor([[3.0, 4.0], [1.0, 1.0]]), f, "l2").tolist()
        [5.0, 1.4142135623730951]
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation {how!r}: expected one of {', '.join(AGGREGATIONS)}.")
    if token_scores.shape[0] != len(features.input_ids):
        raise ValueError(
            f"Expected one score per input token ({len(features.input_ids)}), got shape {tuple(token_scores.shape)}."
        )
    x = token_scores.detach().double().cpu()
    # (T, ...) -> (T, D): one row of values per token.
    x = x.reshape(x.shape[0], -1)
    out = []
    for a, b in features.spans:
        block = x[a:b]
        out.append(block.sum() if how == "sum" else torch.linalg.vector_norm(block))
    return torch.stack(out)


@contextlib.contextmanager
def grad_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode, gradients enabled (also inside Lightning's inference mode), parameters frozen; all
    restored exactly afterwards.

    Freezing the parameters means no ``.grad`` is accumulated on them (and no memory is spent on
    it): only the input embeddings are differentiated.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def eager_attention(hf_model) -> Iterator[None]:
    """Switch a transformers model to eager attention (which materialises attention weights).

    SDPA and flash attention never form the attention matrix, so the attention-based baselines
    (A-Last, GAE) switch the model to ``"eager"`` for their forward pass and switch it back to the
    implementation it had (read from ``config._attn_implementation``) on exit, also on error.
    Eager attention uses memory quadratic in the sequence length; the token budget
    (``max_tokens``) bounds it per batch.
    """
    config = hf_model.config
    previous = getattr(config, "_attn_implementation", None)
    if previous in (None, "eager"):
        yield
        return
    hf_model.set_attn_implementation("eager")
    try:
        yield
    finally:
        hf_model.set_attn_implementation(previous)


def attention_modules(hf_model) -> tuple[list[torch.nn.Module], int]:
    """The self-attention modules of a transformers decoder in layer order, and where their
    output tuple holds the attention weights.

    Uses the model's own declaration of where ``output_attentions`` are recorded
    (``_can_record_outputs["attentions"]``), so no architecture is hard-coded.

    Raises:
        TypeError: when the model does not declare its attention modules.
    """
    spec = None
    for m in hf_model.modules():
        spec = (getattr(type(m), "_can_record_outputs", None) or {}).get("attentions")
        if spec is not None:
            break
    if spec is None:
        raise TypeError(
            f"{type(hf_model).__name__} does not declare its attention modules (transformers' "
            "`_can_record_outputs['attentions']`), so its attention weights cannot be read. "
            "Use a transformers >= 5 decoder model, or a perturbation or gradient method."
        )
    cls = spec if isinstance(spec, type) else spec.target_class
    index = 1 if isinstance(spec, type) else int(spec.index)
    layer_name = None if isinstance(spec, type) else spec.layer_name
    mods = [
        m
        for name, m in hf_model.named_modules()
        if isinstance(m, cls) and (layer_name is None or layer_name in name)
    ]
    if not mods:
        raise TypeError(f"No {cls.__name__} modules found in {type(hf_model).__name__}.")
    return mods, index


class EmbeddingFunction:
    """The model as a function of one example's input embeddings.

    ``f(E)`` maps a batch of embedding sequences ``(B, T, D)`` (copies, interpolations or masked
    versions of one example's embeddings) to the attributed output of class ``target`` at the
    classifying (last) position, ``(B,)``. This is the function Captum differentiates.

    Args:
        attributor: supplies the model, the head and the output kind.
        features: the example.
        target: the explained class.
        output: ``"prob"``, ``"logits"`` or ``"log_odds"`` (default: the attributor's).
    """

    def __init__(
        self, attributor: Attributor, features: Features, target: int, output: str | None = None
    ) -> None:
        self.attributor = attributor
        self.adapter = attributor.adapter
        self.features = features
        self.target = target
        self.output = output or attributor.output
        device = self.adapter.device
        self.input_ids = torch.tensor([features.input_ids], dtype=torch.long, device=device)
        self.embedding = self.adapter.hf_model.get_input_embeddings()
        self.calls = 0

    def embed(self, ids: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Input embeddings ``(1, T, D)`` of the example (or of other ids), detached."""
        ids = (
            self.input_ids
            if ids is None
            else torch.as_tensor(ids, device=self.input_ids.device).reshape(1, -1)
        )
        with torch.no_grad():
            return self.embedding(ids).detach()

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        self.calls += embeds.shape[0]
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        logits = self.adapter.per_position_logits(None, mask, inputs_embeds=embeds)
        out = transform_outputs(logits[:, -1], self.output)[..., self.target]
        return out.to(embeds.dtype)


class GradientAttributor(Attributor):
    """Base of the methods that attribute through the input embeddings (Input x Gradient, IG, LRP).

    Subclasses implement :meth:`token_relevance`, returning ``(T, D)`` relevance on the input
    embeddings of one example; this class resolves targets, runs the model in :func:`grad_mode`
    and aggregates to features.

    Args:
        aggregation: ``"sum"`` or ``"l2"`` over a feature's tokens and embedding dimensions
            (see :func:`aggregate`); the default is set per method.
        **kwargs: the :class:`~pi_lightning.attributors.base.Attributor` settings.
    """

    default_aggregation: str = "sum"

    def __init__(self, model, tokenizer, *, aggregation: str | None = None, **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        aggregation = self.default_aggregation if aggregation is None else aggregation
        if aggregation not in AGGREGATIONS:
            raise ValueError(
                f"Unknown aggregation {aggregation!r}: expected one of {', '.join(AGGREGATIONS)}."
            )
        self.aggregation = aggregation

    def token_relevance(self, fn: EmbeddingFunction) -> tuple[torch.Tensor, dict]:
        """``(T, D)`` relevance of each input embedding entry, and method-specific extras."""
        raise NotImplementedError

    def result_output(self) -> str:
        """What the scores are differences of (LRP explains the logit whatever ``output`` says)."""
        return self.output

    def attribute(self, texts, target="predicted") -> list[Attribution]:
        feats = self.featurize(texts)
        finals = predict(self, feats)
        targets = self.resolve_targets(target, len(feats), finals)
        results = []
        with grad_mode(self.model):
            for f, c, lg in zip(feats, targets, finals, strict=False):
                fn = EmbeddingFunction(self, f, c, output=self.result_output())
                rel, extras = self.token_relevance(fn)
                results.append(
                    Attribution(
                        scores=aggregate(rel, f, self.aggregation),
                        features=f,
                        target=c,
                        method=self.name,
                        output=self.result_output(),
                        probs=class_probs(lg),
                        forward_passes=1.0 + self.forward_equivalents(f.n),
                        extras=extras,
                    )
                )
        return results


def predict(attributor: Attributor, feats: Sequence[Features]) -> torch.Tensor:
    """Final logits ``(N, C)`` of the unmasked inputs (one batched, no-grad inference pass)."""
    seqs = [list(f.input_ids) for f in feats]
    logits = attributor.adapter.forward_positions(seqs, [[len(s) - 1] for s in seqs])
    return torch.stack([lg[0] for lg in logits])


def mask_baseline(fn: EmbeddingFunction, mask) -> torch.Tensor:
    """The baseline embeddings ``(1, T, D)``: each attributed token replaced by the mask's embedding.

    The fixed context (template prefix/suffix, BOS) keeps its embedding, so it gets no attribution.
    A mask of several tokens contributes the mean of their embeddings. ``mask="remove"`` has no
    embedding: the paper's ``"..."`` stands in (:meth:`~pi_lightning.masking.Masker.baseline_ids`;
    the zero vector, Captum's default, scored at Random's level under removal).
    """
    emb = fn.embed()
    base = emb.clone()
    f = fn.features
    masker = fn.attributor.masker
    for (a, b), sb in zip(f.spans, f.space_before, strict=False):
        base[0, a:b] = fn.embed(list(masker.baseline_ids(sb)))[0].mean(0)
    return base
