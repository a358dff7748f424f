"""Gradient machinery of the baselines that differentiate through the input embeddings (Input x Gradient,
Integrated Gradients, LRP, GAE).

The perturbation methods (SP-PI, MP-PI, Kernel SHAP) only run the model on masked token sequences.
The gradient baselines of the paper's Table 2 need gradients with respect to the input embeddings:
this module exposes the model as a function of one example's input embeddings
(:class:`EmbeddingFunction`), builds the masked-embedding baseline of Integrated Gradients
(:func:`mask_baseline`), and runs the methods of :class:`GradientAttributor` inside
:func:`~pi_lightning.inference.model_mode` ``"grad"``, which puts the model back exactly as found
(training mode of every submodule, ``requires_grad`` of every parameter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pi_lightning.attributors.base import AGGREGATIONS, Attributor, aggregate
from pi_lightning.features import Features
from pi_lightning.inference import model_mode, transform_outputs
from pi_lightning.result import Attribution

__all__ = ["EmbeddingFunction", "GradientAttributor", "mask_baseline"]


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
    embeddings of one example; this class resolves targets, runs the model in
    :func:`~pi_lightning.inference.model_mode` ``"grad"``
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

    def explain(self, feats, targets, finals, state) -> list[Attribution]:
        results = []
        with model_mode(self.model, "grad"):
            for f, c, lg in zip(feats, targets, finals, strict=True):
                fn = EmbeddingFunction(self, f, c, output=self.result_output())
                rel, extras = self.token_relevance(fn)
                results.append(
                    self.result(
                        f,
                        c,
                        lg,
                        aggregate(rel, f, self.aggregation),
                        output=self.result_output(),
                        forward_passes=1.0 + self.forward_equivalents(f.n),
                        extras=extras,
                    )
                )
        return results


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
