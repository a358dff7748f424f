"""LRP for Transformers: AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al., ICML 2022).

Layer-wise Relevance Propagation redistributes the explained logit backwards through the layers
with rules chosen per operation. Both variants here are implemented, as the ``lxt`` package does,
in the Gradient x Input form: the forward pass is unchanged, but the backward pass of some
operations is modified so that ``embedding * gradient`` at the input equals the LRP relevance.
The rules (exact type checks against transformers classes; never model names):

========================  ==========================================  ===========================
operation                 AttnLRP (``rule="attnlrp"``, default)       CP-LRP (``rule="cp"``)
========================  ==========================================  ===========================
LayerNorm / RMSNorm       identity rule: the normalising scale is a constant (both variants)
MLP activation            identity rule: gradient ``act(x) / x`` (both; gated MLPs: see below)
gated MLP ``act(g) * u``  uniform rule: gradient halved                gate is a constant
attention ``softmax(q k^T) v``  uniform rule on both matmuls: q and k   q and k are constants
                          gradients / 4, v gradient / 2                (attention is linear in v)
========================  ==========================================  ===========================

The softmax itself keeps its gradient (AttnLRP's softmax rule is its Gradient x Input). The paper
compares against "LRP for Transformers" (Ali et al., 2022), which is the CP-LRP rule set; AttnLRP,
its successor, is the default. Relevance starts at the explained class's logit
(``Attribution.output == "logits"``). Token relevance is ``embedding * gradient`` on the input
embeddings; a feature's score is the L2 norm over its tokens and dimensions by default (the paper's
Appendix B.2), or the signed sum (``aggregation="sum"``; under CP-LRP on a bias-free model such as
Llama the sum over all tokens, context included, equals the logit: conservation).

Supported families: GPT-2, Llama, Mistral, Qwen2, Qwen3. ``lxt`` itself is not used: it patches
the transformers classes process-wide (every model of that family, permanently) and, in 2.1,
replaces ``ALL_ATTENTION_FUNCTIONS`` by a plain dict, which transformers 5 no longer accepts.
Here the rules are forward hooks on this model's own modules, removed after each call.
"""

from __future__ import annotations

import sys

import torch

from pi_lightning.attributors._grad import EmbeddingFunction, GradientAttributor
from pi_lightning.attributors.base import register

__all__ = ["LRP", "LRP_RULES"]

LRP_RULES = ("attnlrp", "cp")

_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def _classes(suffix: str) -> tuple[type, ...]:
    """The transformers classes ``<Family><suffix>`` of the families whose module is imported."""
    found = []
    for fam in _FAMILIES:
        mod = sys.modules.get(f"transformers.models.{fam}.modeling_{fam}")
        prefix = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}[fam]
        cls = getattr(mod, prefix + suffix, None) if mod is not None else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _with_grad(value: torch.Tensor, x: torch.Tensor, scale) -> torch.Tensor:
    """A tensor equal to ``value`` whose gradient with respect to ``x`` is ``scale`` (elementwise)."""
    if not x.requires_grad:
        return value
    scale = scale.detach() if isinstance(scale, torch.Tensor) else scale
    return value.detach() + scale * (x - x.detach())


def _layer_norm_hook(m, args, out):
    x = args[0]
    mean = x.mean(dim=-1, keepdim=True)
    std = ((x - mean).pow(2).mean(dim=-1, keepdim=True) + m.eps).sqrt().detach()
    y = (x - mean) / std
    if m.weight is not None:
        y = y * m.weight
    if m.bias is not None:
        y = y + m.bias
    return out.detach() + (y - y.detach())


def _rms_norm_hook(m, args, out):
    x = args[0]
    scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + m.variance_epsilon).detach()
    y = m.weight * (x.float() * scale).to(x.dtype)
    return out.detach() + (y - y.detach())


def _identity_rule_hook(_m, args, out):
    x = args[0]
    # Identity rule: relevance passes the nonlinearity unchanged, i.e. gradient act(x) / x.
    eps = torch.where(x >= 0, 1e-10, -1e-10).to(x.dtype)
    return _with_grad(out, x, out / (x + eps))


def _constant_hook(_m, _args, out):
    return out.detach()


def _halve_input_hook(_m, args):
    return (_with_grad(args[0], args[0], 0.5), *args[1:])


def _scale_output(scale: float):
    def hook(_m, _args, out):
        return _with_grad(out, out, scale)

    return hook


def _qkv_hook(q_scale: float, v_scale: float):
    def hook(_m, _args, out):
        # (B, T, 3 * d_model): query, key and value columns, in that order.
        d = out.shape[-1] // 3
        s = torch.cat([torch.full((2 * d,), q_scale), torch.full((d,), v_scale)]).to(out.device, out.dtype)
        return _with_grad(out, out, s)

    return hook


@register
class LRP(GradientAttributor):
    """Layer-wise Relevance Propagation for decoder-only transformers (AttnLRP or CP-LRP rules).

    Args:
        rule: ``"attnlrp"`` (default) or ``"cp"`` (Ali et al., 2022, the paper's "LRP for Trfm.").
        aggregation: ``"l2"`` (default, the paper's choice) or ``"sum"`` (signed, conserving).
        **kwargs: the shared :class:`~pi_lightning.attributors.base.Attributor` settings.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("llama")
        >>> lrp = LRP(tiny_classifier("llama", tokenizer=tok), tok, rule="cp", aggregation="sum")
        >>> [a] = lrp.attribute("a good movie", target=1)
        >>> round(a.extras["total"] - a.extras["logit"], 3)
        0.0
    """

    name = "lrp"
    cost = "1x"
    default_aggregation = "l2"

    def __init__(self, model, tokenizer, *, rule: str = "attnlrp", **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        if rule not in LRP_RULES:
            raise ValueError(f"Unknown LRP rule {rule!r}: expected one of {', '.join(LRP_RULES)}.")
        self.rule = rule
        self._plan = self._hook_plan()

    def result_output(self) -> str:
        return "logits"

    def _hook_plan(self) -> list[tuple[torch.nn.Module, str, object]]:
        """``(module, "forward" | "pre", hook)`` for every operation with an LRP rule."""
        from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Attention

        hf = self.adapter.hf_model
        attn_cp = self.rule == "cp"
        qk = 0.0 if attn_cp else 0.25
        v = 1.0 if attn_cp else 0.5
        rms, mlps, attns = _classes("RMSNorm"), _classes("MLP"), _classes("Attention")
        plan, n_attn = [], 0
        for m in hf.modules():
            if isinstance(m, torch.nn.LayerNorm):
                plan.append((m, "forward", _layer_norm_hook))
            elif rms and isinstance(m, rms):
                plan.append((m, "forward", _rms_norm_hook))
            elif isinstance(m, GPT2MLP):
                plan.append((m.act, "forward", _identity_rule_hook))
            elif mlps and isinstance(m, mlps):
                plan.append((m.act_fn, "forward", _constant_hook if attn_cp else _identity_rule_hook))
                if not attn_cp:
                    plan.append((m.down_proj, "pre", _halve_input_hook))
            elif isinstance(m, GPT2Attention):
                if m.is_cross_attention:
                    raise TypeError("LRP supports decoder-only self-attention, found GPT-2 cross-attention.")
                plan.append((m.c_attn, "forward", _qkv_hook(qk, v)))
                n_attn += 1
            elif attns and isinstance(m, attns):
                plan += [
                    (m.q_proj, "forward", _scale_output(qk)),
                    (m.k_proj, "forward", _scale_output(qk)),
                    (m.v_proj, "forward", _scale_output(v)),
                ]
                n_attn += 1
        expected = getattr(hf.config, "num_hidden_layers", None)
        if n_attn == 0 or (expected is not None and n_attn != expected):
            raise TypeError(
                f"LRP has rules for GPT-2, Llama, Mistral, Qwen2 and Qwen3 models, got {type(hf).__name__} "
                f"(model_type={getattr(hf.config, 'model_type', None)!r}). Use 'inputxgrad' or a "
                "perturbation method for this model."
            )
        return plan

    def token_relevance(self, fn: EmbeddingFunction) -> tuple[torch.Tensor, dict]:
        handles = []
        try:
            for module, kind, hook in self._plan:
                handles.append(
                    module.register_forward_hook(hook)
                    if kind == "forward"
                    else module.register_forward_pre_hook(hook)
                )
            emb = fn.embed().requires_grad_(True)
            y = fn(emb)
            (grad,) = torch.autograd.grad(y.sum(), emb)
        finally:
            for h in handles:
                h.remove()
        rel = (emb * grad).detach()[0]
        return rel, {"logit": float(y.detach()), "total": float(rel.double().sum()), "rule": self.rule}
