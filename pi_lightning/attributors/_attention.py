"""Attention rows of chosen query positions, recomputed without eager attention.

AT2 (and attention baselines such as A-Last) need, for one query position per sequence (the
classifying position: the last non-pad token), each head's attention weights over all keys, for
every layer. ``output_attentions=True`` would give them, but it forces eager attention, which
materialises every layer's full ``T x T`` matrix; the model is normally run with SDPA or
FlashAttention, which never form it.

So, as AT2's public code does for generation, the one needed row per layer is recomputed from
what the layer itself saw: a forward pre-hook on each self-attention module captures its input
hidden states (and, for rotary models, the ``(cos, sin)`` the model's rotary embedding module
computed for this pass); inside the hook the layer's own q/k projections produce the query at the
requested position and the keys at every position, the model's own rotary function is applied,
and ``softmax(q k^T * scaling)`` is taken over the keys the model lets the query see (causal,
not padding, inside a sliding window where the layer has one). The ordinary forward pass runs
unchanged (SDPA stays SDPA); the extra work per layer is one key projection.

Families with this fast path (exact type checks against the transformers classes, never model
names): GPT-2 (``GPT2Attention``; scaling includes ``scale_attn_by_inverse_layer_idx``), Llama,
Mistral, Qwen2 and Qwen3 (``q_proj``/``k_proj``, RoPE, grouped-query attention, Qwen3's
``q_norm``/``k_norm``, sliding windows). LoRA-wrapped projections (peft) are called as they are,
so adapters are included. For any other family the recorder falls back to eager attention with
``output_attentions=True`` for the pass and restores the model's attention implementation and
``output_attentions`` setting afterwards (warned once per model class: this costs quadratic
memory).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

import torch

__all__ = [
    "AttentionRowRecorder",
    "attention_modules",
    "attention_rows",
    "eager_attention",
    "last_positions",
]

# (transformers module, attention class) pairs with the fast path, by kind of projection.
_GPT2_STYLE = (("transformers.models.gpt2.modeling_gpt2", "GPT2Attention"),)
_ROPE_STYLE = (
    ("transformers.models.llama.modeling_llama", "LlamaAttention"),
    ("transformers.models.mistral.modeling_mistral", "MistralAttention"),
    ("transformers.models.qwen2.modeling_qwen2", "Qwen2Attention"),
    ("transformers.models.qwen3.modeling_qwen3", "Qwen3Attention"),
)
_WARNED_FALLBACK: set[str] = set()


def _loaded_classes(pairs) -> tuple[type, ...]:
    """The attention classes whose modeling module is already imported (a model of that family exists)."""
    found = []
    for module_name, cls_name in pairs:
        mod = sys.modules.get(module_name)
        cls = getattr(mod, cls_name, None) if mod is not None else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (LoRA layers are injected in place)."""
    if hasattr(model, "get_base_model") and callable(model.get_base_model):
        return model.get_base_model()
    return model


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row of a ``(B, T)`` attention mask (left or right padding).

    Example:
        >>> last_positions(torch.tensor([[1, 1, 0], [0, 1, 1]])).tolist()
        [1, 2]
    """
    T = attention_mask.shape[-1]
    idx = torch.arange(T, device=attention_mask.device)
    return torch.where(attention_mask.bool(), idx, -1).amax(-1)


def _check_inputs(attention_mask: torch.Tensor, query_positions: torch.Tensor) -> None:
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (batch, tokens), got {tuple(attention_mask.shape)}."
        )
    B, T = attention_mask.shape
    if query_positions.dim() != 1 or query_positions.shape[0] != B:
        raise ValueError(
            f"query_positions must hold one position per sequence, shape ({B},), got "
            f"{tuple(query_positions.shape)}."
        )
    if len(query_positions) and (int(query_positions.min()) < 0 or int(query_positions.max()) >= T):
        raise IndexError(f"query_positions {query_positions.tolist()} out of range for {T} tokens.")
    rows = torch.arange(B, device=attention_mask.device)
    if not bool(attention_mask[rows, query_positions.to(attention_mask.device)].bool().all()):
        raise ValueError(
            "A query position points at a padding token (attention_mask 0 there); query the last non-pad "
            "token (the default) or another real token."
        )


class AttentionRowRecorder:
    """Context manager: records, during the next forward pass, each layer's attention row of one query
    per sequence.

    Use it around any ordinary forward call of ``model`` on a batch shaped like ``attention_mask``;
    afterwards :attr:`rows` is a float32 tensor ``(B, L, H, T)``: for sequence ``b``, layer ``l``
    and head ``h``, the attention weights of position ``query_positions[b]`` over all ``T``
    positions (zero on padding and on keys the query cannot see).

    Args:
        model: a transformers decoder-only model (any head) or its peft wrapper.
        attention_mask: ``(B, T)`` mask of the batch that will be run (1 = token, 0 = padding).
        query_positions: ``(B,)`` query position per sequence; default the last non-pad token.

    The pass must use the same padding layout as ``attention_mask`` and, in the fallback mode,
    return the model's output object (``return_dict`` not disabled).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        attention_mask: torch.Tensor,
        query_positions: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.hf_model = _unwrap(model)
        self.attention_mask = attention_mask
        if query_positions is None:
            query_positions = last_positions(attention_mask)
        self.query_positions = torch.as_tensor(query_positions, dtype=torch.long)
        _check_inputs(attention_mask, self.query_positions)
        self._layers = self._find_layers()
        self.fast = self._layers is not None
        self._rows: dict[int, torch.Tensor] = {}
        self._handles: list = []
        self._saved: tuple | None = None

    def _find_layers(self) -> list[tuple[torch.nn.Module, str]] | None:
        gpt2 = _loaded_classes(_GPT2_STYLE)
        rope = _loaded_classes(_ROPE_STYLE)
        layers = []
        for m in self.hf_model.modules():
            if gpt2 and isinstance(m, gpt2) and not m.is_cross_attention:
                layers.append((m, "gpt2"))
            elif rope and isinstance(m, rope):
                layers.append((m, "rope"))
        expected = getattr(self.hf_model.config, "num_hidden_layers", None)
        if not layers or (expected is not None and len(layers) != expected):
            return None
        return layers

    @property
    def rows(self) -> torch.Tensor:
        """``(B, L, H, T)`` float32 attention rows of the last recorded pass."""
        if not self._rows:
            raise RuntimeError(
                "No attention rows were recorded: run the model's forward pass inside the `with` block."
            )
        return torch.stack([self._rows[i] for i in sorted(self._rows)], dim=1)

    # -- fast path ---------------------------------------------------------------------------
    def _key_mask(self, T: int, window: int | None, device) -> torch.Tensor:
        """``(B, T)`` bool: keys each query may attend to (causal, not padding, inside the window)."""
        q = self.query_positions.to(device)[:, None]
        k = torch.arange(T, device=device)[None, :]
        ok = (k <= q) & self.attention_mask.to(device).bool()
        if window is not None:
            ok &= k > q - window
        return ok

    def _hook(self, index: int, kind: str):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            with torch.no_grad():
                if kind == "gpt2":
                    self._rows[index] = self._gpt2_row(module, hidden)
                else:
                    pe = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)
                    self._rows[index] = self._rope_row(module, hidden, pe)

        return hook

    def _softmax_row(
        self, q: torch.Tensor, k: torch.Tensor, scaling: float, window: int | None
    ) -> torch.Tensor:
        """``q`` ``(B, H, D)``, ``k`` ``(B, H, T, D)`` -> ``(B, H, T)`` attention weights in float32."""
        scores = torch.einsum("bhd,bhtd->bht", q.float(), k.float()) * scaling
        ok = self._key_mask(k.shape[2], window, k.device)
        scores = scores.masked_fill(~ok[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1)

    def _gpt2_row(self, module, hidden: torch.Tensor) -> torch.Tensor:
        B, T, _ = hidden.shape
        rows = torch.arange(B, device=hidden.device)
        qpos = self.query_positions.to(hidden.device)
        qkv = module.c_attn(hidden)
        q, k, _v = qkv.split(module.split_size, dim=2)
        # (B, T, H*D) -> (B, H, T, D)
        k = k.view(B, T, module.num_heads, module.head_dim).transpose(1, 2)
        # (B, H*D) -> (B, H, D)
        q = q[rows, qpos].view(B, module.num_heads, module.head_dim)
        return self._softmax_row(q, k, module.scaling, None)

    def _rope_row(self, module, hidden: torch.Tensor, position_embeddings) -> torch.Tensor:
        if position_embeddings is None:
            raise RuntimeError(
                f"{type(module).__name__} was called without position_embeddings; cannot recompute its "
                "attention row."
            )
        B, T, _ = hidden.shape
        D = module.head_dim
        rows = torch.arange(B, device=hidden.device)
        qpos = self.query_positions.to(hidden.device)
        # (1 or B, T, D) -> (B, T, D): without explicit position ids the model builds one row for all.
        cos, sin = (x.expand(B, -1, -1) for x in position_embeddings)
        apply_rope = sys.modules[type(module).__module__].apply_rotary_pos_emb
        # (B, 1, d_model) -> (B, 1, H, D): the query at the one position that is needed.
        q = module.q_proj(hidden[rows, qpos][:, None, :]).view(B, 1, -1, D)
        # (B, T, KV*D) -> (B, T, KV, D)
        k = module.k_proj(hidden).view(B, T, -1, D)
        if getattr(module, "q_norm", None) is not None:
            q = module.q_norm(q)
        if getattr(module, "k_norm", None) is not None:
            k = module.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        cq, sq = cos[rows, qpos][:, None, :], sin[rows, qpos][:, None, :]
        q, _ = apply_rope(q, q, cq, sq)
        k, _ = apply_rope(k, k, cos, sin)
        # Grouped-query attention: query head h reads key head h // (H / KV), as repeat_kv does.
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        window = (
            module.sliding_window
            if hasattr(module, "sliding_window")
            else getattr(module.config, "sliding_window", None)
        )
        return self._softmax_row(q[:, :, 0], k, module.scaling, window)

    # -- fallback ----------------------------------------------------------------------------
    def _fallback_hook(self, _module, _args, output):
        attentions = getattr(output, "attentions", None)
        if not attentions:
            raise RuntimeError(
                f"{type(self.hf_model).__name__} returned no attentions with output_attentions=True; its "
                "attention rows cannot be recorded."
            )
        B = self.attention_mask.shape[0]
        rows = torch.arange(B)
        for i, a in enumerate(attentions):
            self._rows[i] = a[rows.to(a.device), :, self.query_positions.to(a.device)].detach().float()

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> AttentionRowRecorder:
        self._rows = {}
        if self.fast:
            for i, (m, kind) in enumerate(self._layers):
                self._handles.append(m.register_forward_pre_hook(self._hook(i, kind), with_kwargs=True))
            return self
        cls = type(self.hf_model).__name__
        if cls not in _WARNED_FALLBACK:
            _WARNED_FALLBACK.add(cls)
            warnings.warn(
                f"No recomputed-attention path for {cls}: its attention rows are read with eager attention "
                "and output_attentions=True (quadratic memory in the sequence length); the attention "
                "implementation is restored afterwards. Fast paths exist for GPT-2, Llama, Mistral, Qwen2 "
                "and Qwen3.",
                UserWarning,
                stacklevel=2,
            )
        cfg = self.hf_model.config
        self._saved = (cfg._attn_implementation, getattr(cfg, "output_attentions", False))
        if self._saved[0] != "eager":
            self.hf_model.set_attn_implementation("eager")
        cfg.output_attentions = True
        self._handles.append(self.hf_model.register_forward_hook(self._fallback_hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._saved is not None:
            impl, out_att = self._saved
            cfg = self.hf_model.config
            cfg.output_attentions = out_att
            if impl != cfg._attn_implementation:
                self.hf_model.set_attn_implementation(impl)
            self._saved = None


def attention_rows(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    query_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each layer's and head's attention row of one query position per sequence, from one forward pass.

    Args:
        model: a transformers decoder-only model or its peft wrapper.
        input_ids: ``(B, T)`` token ids (left or right padded).
        attention_mask: ``(B, T)``, 1 for tokens and 0 for padding (default: all ones).
        query_positions: ``(B,)`` query position per sequence (default: the last non-pad token, the
            position a ``*ForSequenceClassification`` model classifies from).

    Returns:
        ``(B, L, H, T)`` float32 attention weights, equal to
        ``model(..., output_attentions=True).attentions[l][b, h, query_positions[b]]``.

    The pass runs in eval mode without gradients, with position ids counted over non-pad tokens
    (so that left and right padding agree), and restores the model's training mode.

    Example:
        >>> from pi_lightning.testing import tiny_classifier
        >>> rows = attention_rows(tiny_classifier("llama"), torch.tensor([[5, 6, 7, 8]]))
        >>> tuple(rows.shape), round(float(rows[0, 0, 0].sum()), 4)
        ((1, 2, 4, 4), 1.0)
    """
    from pi_lightning.inference import model_mode

    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with model_mode(model), AttentionRowRecorder(model, attention_mask, query_positions) as rec:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    return rec.rows


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
