"""Intermediate predictions: the classification head's output at every position, in one pass.

Hugging Face decoder-only ``*ForSequenceClassification`` models (GPT-2, Llama, Mistral, Qwen2,
Gemma3, GPT-NeoX, Phi-3, ...) apply their head ``score`` to every position and only afterwards
keep the last non-pad one. Because attention is causal, the head's output at position ``t`` is the
model's prediction on the prefix ending at ``t`` (the paper's intermediate predictions). A
forward hook on ``score`` captures the ``(B, T, C)`` tensor from the same forward pass, so
nothing is recomputed and nothing in the model is changed.

:class:`ClassifierAdapter` runs many token sequences through the model in batches bounded by a
token budget (``batch size x padded length <= max_tokens``), with explicit position ids so that
left and right padding give the same result, in eval mode under ``no_grad``, restoring the mode
the model was in. It also builds the padded batches every other forward pass of the library uses
(:func:`pad_sequences`, :meth:`ClassifierAdapter.pad`), and :func:`model_mode` is the one context
manager that puts a model into a mode for some work and restores everything afterwards.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import torch

__all__ = [
    "MODES",
    "OUTPUTS",
    "ClassifierAdapter",
    "class_probs",
    "model_mode",
    "pad_sequences",
    "resolve_classifier",
    "transform_outputs",
]

OUTPUTS = ("prob", "logits", "log_odds")
MODES = ("eval", "grad", "keep")


def resolve_classifier(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Return ``(hf_model, head)`` for a (possibly peft-wrapped) decoder-only classifier.

    Raises:
        TypeError: for encoder, encoder-decoder or non-classification models, naming what was found.
    """
    hf = model
    # peft: PeftModel -> LoraModel -> transformers model (LoRA layers are injected in place).
    if hasattr(hf, "get_base_model") and callable(hf.get_base_model):
        hf = hf.get_base_model()
    config = getattr(hf, "config", None)
    name = type(hf).__name__
    if config is None:
        raise TypeError(
            f"Expected a Hugging Face decoder-only *ForSequenceClassification model, got {name} "
            "(no .config). Pass the transformers model itself (or its peft wrapper)."
        )
    if getattr(config, "is_encoder_decoder", False):
        raise TypeError(
            f"Expected a decoder-only *ForSequenceClassification model, got the encoder-decoder {name} "
            f"(model_type={config.model_type!r}). Progressive Inference needs causal attention."
        )
    head = getattr(hf, "score", None)
    if not isinstance(head, torch.nn.Module):
        head, found = _find_per_position_head(model, hf)
        if head is None:
            raise TypeError(
                "Expected a decoder-only *ForSequenceClassification model whose classification head runs "
                "on every position (e.g. GPT2ForSequenceClassification, LlamaForSequenceClassification: a "
                f"module whose output is (batch, positions, num_labels) in the forward), got {name} "
                f"(model_type={config.model_type!r}) with {found}. Load it with "
                "AutoModelForSequenceClassification from a decoder-only checkpoint."
            )
    if getattr(config, "pad_token_id", None) is None:
        raise ValueError(
            f"{name}.config.pad_token_id is None; batched classification needs a pad token. Fix: "
            "`model.config.pad_token_id = tokenizer.pad_token_id` (set `tokenizer.pad_token = "
            "tokenizer.eos_token` first if the tokenizer has none)."
        )
    return hf, head


def virtual_tokens(model) -> int:
    """Positions a peft prompt-learning model (prompt tuning, p-tuning) prepends to every input, so that
    its head returns ``virtual + T`` positions for ``T`` tokens; 0 for every other model (prefix tuning
    adds keys and values, not positions)."""
    cfg = getattr(model, "active_peft_config", None)
    if (
        cfg is not None
        and getattr(cfg, "is_prompt_learning", False)
        and type(cfg).__name__ != "PrefixTuningConfig"
    ):
        return int(getattr(cfg, "num_virtual_tokens", 0) or 0)
    return 0


def _find_per_position_head(model, hf) -> tuple[torch.nn.Module | None, str]:
    """The head by what it does: the module with ``num_labels`` outputs that, in a two-token forward pass,
    returns ``(1, 2, num_labels)`` (one prediction per position). Returns ``(head or None, what was
    found)``."""
    num_labels = int(getattr(hf.config, "num_labels", 0) or 0)
    candidates = [
        (n, m)
        for n, m in hf.named_modules()
        if isinstance(m, torch.nn.Linear) and m.out_features == num_labels
    ]
    if not candidates:
        return None, "no head"
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name):
        def hook(_module, _inputs, out) -> None:  # returns None: the output is left as it is
            shapes.setdefault(name, tuple((out[0] if isinstance(out, tuple) else out).shape))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in candidates]
    try:
        device = next(hf.parameters()).device
        ids = torch.full((1, 2), int(hf.config.pad_token_id or 0), dtype=torch.long, device=device)
        with model_mode(model):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as e:
        return None, f"a head that could not be probed ({type(e).__name__}: {e})"
    finally:
        for h in handles:
            h.remove()
    per_position = [m for n, m in candidates if len(shapes.get(n, ())) == 3 and shapes[n][1] == 2]
    if len(per_position) == 1:
        return per_position[0], ""
    seen = ", ".join(f"`{n}` -> {shapes.get(n, 'not called')}" for n, _ in candidates)
    kind = "several per-position heads" if per_position else "a classifier head applied to a pooled output"
    return None, f"{kind} ({seen})"


def transform_outputs(logits: torch.Tensor, output: str) -> torch.Tensor:
    """Map logits ``(..., C)`` to the requested output kind, per class, in float64.

    ``prob``: softmax (sigmoid when C = 1); ``logits``: unchanged; ``log_odds``: log p - log(1 - p).
    """
    if output not in OUTPUTS:
        raise ValueError(f"Unknown output {output!r}: expected one of {', '.join(OUTPUTS)}.")
    x = logits.double()
    if output == "logits":
        return x
    if x.shape[-1] == 1:
        return torch.sigmoid(x) if output == "prob" else x
    logp = torch.log_softmax(x, dim=-1)
    if output == "prob":
        return logp.exp()
    # log(1 - p) computed stably from log p.
    log1mp = torch.log(-torch.expm1(logp.clamp(max=-1e-300)))
    return logp - log1mp


def class_probs(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(..., C)`` in float64: softmax, or sigmoid for a single-logit head (C = 1),
    consistent with the ``"prob"`` output the scores are computed from.

    Example:
        >>> class_probs(torch.tensor([0.0])).tolist(), class_probs(torch.tensor([0.0, 0.0])).tolist()
        ([0.5], [0.5, 0.5])
    """
    return transform_outputs(logits, "prob")


@contextlib.contextmanager
def model_mode(
    model: torch.nn.Module,
    mode: str = "eval",
    *,
    isolate: bool = False,
    context: contextlib.AbstractContextManager | None = None,
) -> Iterator[None]:
    """Put ``model`` in a mode for the work inside; restore every submodule's train/eval flag and every
    parameter's ``requires_grad`` afterwards (also when the work raises).

    Args:
        model: the module (a transformers model, its peft wrapper, a LightningModule).
        mode: ``"eval"``: eval mode under ``no_grad`` (inference passes); ``"grad"``: eval mode with
            gradients enabled (also inside Lightning's inference mode) and the parameters frozen, so that
            only the inputs are differentiated and no ``.grad`` is accumulated on the weights (gradient
            methods); ``"keep"``: modes left as they are (the work inside chooses its own).
        isolate: also save and restore the python/numpy/torch (and CUDA) random states, the parameters'
            ``.grad`` and the grad-enabled flag: work run from a callback then leaves training exactly as
            it found it.
        context: a further context manager entered inside (e.g. the trainer's
            ``precision_plugin.forward_context()``, so that the work runs under training's autocast).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
        >>> with model_mode(net):
        ...     net.training, torch.is_grad_enabled()
        (False, False)
        >>> net.training
        True
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}: expected one of {', '.join(MODES)}.")
    # The random states are read here, before anything else runs (importing a library can draw from them).
    rng = _rng_states() if isolate else None
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params] if isolate else None
    grad_enabled = torch.is_grad_enabled()
    try:
        with contextlib.ExitStack() as stack:
            if context is not None:
                stack.enter_context(context)
            if mode != "keep":
                model.eval()
            if mode == "eval":
                stack.enter_context(torch.no_grad())
            elif mode == "grad":
                for p in params:
                    p.requires_grad_(False)
                stack.enter_context(torch.inference_mode(False))
                stack.enter_context(torch.enable_grad())
            yield
    finally:
        torch.set_grad_enabled(grad_enabled)
        for m, training in modes:
            m.training = training
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        if grads is not None:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        if rng is not None:
            _set_rng_states(rng)


def _rng_states() -> dict:
    """The python, numpy, torch CPU and (once CUDA is in use) CUDA random states."""
    import numpy as np

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    import numpy as np

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_token_id: int, padding_side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """One padded batch: ``(input_ids, attention_mask)``, both ``(B, max length)`` int64 on the CPU.

    The one padded-batch builder of the library (the adapter's passes, the attention methods, the
    training module's collate function, the recipes).

    Args:
        sequences: token id lists (no padding), at least one.
        pad_token_id: the id that fills the padding.
        padding_side: ``"right"`` (tokens first) or ``"left"`` (tokens last).

    Example:
        >>> ids, mask = pad_sequences([[5, 6, 7], [8]], pad_token_id=0, padding_side="left")
        >>> ids.tolist(), mask.tolist()
        ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    if len(sequences) == 0:
        raise ValueError("Got no sequences to pad: give at least one token id list.")
    lengths = [len(s) for s in sequences]
    width = max(lengths)
    ids = torch.full((len(sequences), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, (s, n) in enumerate(zip(sequences, lengths, strict=True)):
        off = 0 if padding_side == "right" else width - n
        ids[r, off : off + n] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, off : off + n] = 1
    return ids, mask


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group sequence indices so that ``len(batch) * max_len(batch) <= max_tokens``.

    Sequences are sorted by length (longest first) to limit padding; a sequence longer than the
    budget forms a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and new_max * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


class ClassifierAdapter:
    """Runs token sequences through a decoder-only classifier and returns per-position logits.

    Args:
        model: a transformers ``*ForSequenceClassification`` decoder model, or its peft wrapper.
        max_tokens: token budget per forward batch (batch size x padded length).
        padding_side: ``"right"`` or ``"left"``; results are the same either way.

    Example:
        >>> from pi_lightning.testing import tiny_classifier
        >>> adapter = ClassifierAdapter(tiny_classifier("gpt2"))
        >>> out = adapter.forward_positions([[5, 6, 7], [8, 9]], positions=[[0, 2], [1]])
        >>> [tuple(o.shape) for o in out]
        [(2, 2), (1, 2)]
    """

    def __init__(self, model: torch.nn.Module, max_tokens: int = 8192, padding_side: str = "right") -> None:
        self.hf_model, self.head = resolve_classifier(model)
        self.model = model
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(
                f"max_tokens must be a positive int (tokens per forward batch), got {max_tokens!r}."
            )
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        self.max_tokens = max_tokens
        self.padding_side = padding_side
        self.pad_token_id = int(self.hf_model.config.pad_token_id)
        self.forward_passes = 0  # sequences run so far (for cost accounting)

    @property
    def num_labels(self) -> int:
        return (
            int(self.head.out_features)
            if hasattr(self.head, "out_features")
            else int(self.hf_model.config.num_labels)
        )

    @property
    def virtual_tokens(self) -> int:
        """Virtual tokens a peft prompt-learning model (prompt tuning, p-tuning) prepends to every input."""
        return virtual_tokens(self.model)

    @property
    def max_length(self) -> int | None:
        cfg = self.hf_model.config
        for key in ("max_position_embeddings", "n_positions"):
            v = getattr(cfg, key, None)
            if isinstance(v, int):
                return v - self.virtual_tokens
        return None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pad(
        self, sequences: Sequence[Sequence[int]], padding_side: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`pad_sequences` with this model's pad token, on the model's device: ``(input_ids,
        attention_mask)``, ``(B, max length)`` int64 (``padding_side`` defaults to the adapter's)."""
        ids, mask = pad_sequences(sequences, self.pad_token_id, padding_side or self.padding_side)
        device = self.device
        return ids.to(device), mask.to(device)

    def per_position_logits(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        *,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One forward pass (token ids, or ``inputs_embeds``); the head's output at every position,
        ``(B, T, C)``.

        Runs in whatever grad mode the caller chose (gradient methods differentiate through it).
        """
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            # Explicit position ids make left padding equivalent to right padding.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            inputs = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
            self.model(**inputs, attention_mask=attention_mask, position_ids=position_ids)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"The head {type(self.head).__name__} was not called during the forward pass.")
        out = captured[-1]
        out = out[0] if isinstance(out, tuple) else out
        if out.dim() != 3:
            raise TypeError(
                f"The classification head returned a tensor of shape {tuple(out.shape)}, expected "
                "(batch, positions, classes): the model is not a decoder-only classifier whose head runs "
                "on every position."
            )
        T = attention_mask.shape[1]
        if out.shape[1] != T:
            virtual = self.virtual_tokens
            if virtual and out.shape[1] == T + virtual:
                # (B, virtual + T, C) -> (B, T, C): peft prompt learning prepends its virtual tokens.
                out = out[:, virtual:]
            else:
                raise RuntimeError(
                    f"The classification head returned {out.shape[1]} positions for inputs of {T} tokens, "
                    "so its outputs cannot be matched to the tokens. Prepended virtual tokens (peft prompt "
                    f"tuning / p-tuning) are handled when peft's config says how many ({virtual} found); "
                    "other models that change the sequence length are not supported."
                )
        # A diverged or overflowing model must not yield silently wrong attributions.
        real = out[attention_mask.bool()] if out.shape[:2] == attention_mask.shape else out
        if not bool(torch.isfinite(real).all()):
            raise FloatingPointError(
                f"The model's classification head returned NaN or infinite values on {tuple(out.shape[:2])} "
                "(batch, positions) inputs: its weights are probably NaN (diverged training) or the "
                "computation overflowed (try float32 instead of float16). Attributions of a non-finite "
                "output are meaningless, so none is computed."
            )
        return out

    def forward_positions(
        self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]] | None = None
    ) -> list[torch.Tensor]:
        """Per-position logits for many sequences, batched by the token budget.

        Args:
            sequences: token id lists (no padding).
            positions: for each sequence, the positions to return (default: all).

        Returns:
            For each sequence a float32 CPU tensor ``(len(positions[i]), C)`` of raw logits.
        """
        if positions is not None and len(positions) != len(sequences):
            raise ValueError(f"Got {len(sequences)} sequences but {len(positions)} position lists.")
        for i, s in enumerate(sequences):
            if len(s) == 0:
                raise ValueError(f"Sequence {i} is empty: there is nothing to run the model on.")
        results: list[torch.Tensor | None] = [None] * len(sequences)
        lengths = [len(s) for s in sequences]
        with model_mode(self.model):
            for batch in token_budget_batches(lengths, self.max_tokens):
                ids, mask = self.pad([sequences[i] for i in batch])
                logits = self.per_position_logits(ids, mask).float().cpu()
                self.forward_passes += len(batch)
                width = ids.shape[1]
                for r, i in enumerate(batch):
                    pos = (
                        torch.arange(lengths[i])
                        if positions is None
                        else torch.as_tensor(positions[i], dtype=torch.long)
                    )
                    if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= lengths[i]):
                        raise IndexError(
                            f"Position out of range for sequence {i} of length {lengths[i]}: {pos.tolist()}."
                        )
                    offset = 0 if self.padding_side == "right" else width - lengths[i]
                    results[i] = logits[r, pos + offset]
        return results  # type: ignore[return-value]

    def final_logits(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """The model's prediction on each sequence: the head's output at its last token, ``(N, C)`` float32
        on the CPU (one batched inference pass; see :meth:`forward_positions`).

        Example:
            >>> from pi_lightning.testing import tiny_classifier
            >>> tuple(ClassifierAdapter(tiny_classifier("gpt2")).final_logits([[5, 6, 7], [8]]).shape)
            (2, 2)
        """
        logits = self.forward_positions(sequences, [[len(s) - 1] for s in sequences])
        # N x (1, C) -> (N, C)
        return torch.cat(logits) if logits else torch.zeros(0, self.num_labels)
