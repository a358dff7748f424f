"""Recomputed attention rows equal the eager ``output_attentions=True`` rows, and nothing in the model
changes."""

from __future__ import annotations

import pytest
import torch

from pi_lightning.attributors._attention import AttentionRowRecorder, attention_rows, last_positions
from pi_lightning.inference import pad_sequences
from pi_lightning.testing import tiny_classifier


def _batch(vocab: int, lengths, side: str, pad: int, seed: int = 0):
    """Random token sequences of the given lengths, padded on ``side`` by the library's one padded batch."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(3, vocab, (L,), generator=g).tolist() for L in lengths]
    return pad_sequences(seqs, pad, side)


def _eager_rows(model, ids, mask, qpos):
    """Reference: an eager copy of the model with output_attentions=True."""
    model.set_attn_implementation("eager")
    try:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            att = model(
                input_ids=ids, attention_mask=mask, position_ids=pos, output_attentions=True
            ).attentions
    finally:
        model.set_attn_implementation("sdpa")
    rows = torch.arange(ids.shape[0])
    # L x (B, H, T, T) -> (B, L, H, T) at each sequence's query position.
    return torch.stack([a[rows, :, qpos] for a in att], dim=1)


def _model(arch, tok=None, **kw):
    if arch in ("gpt2", "llama"):
        return tiny_classifier(arch, tokenizer=tok, **kw)
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = {
        "vocab_size": 120,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "pad_token_id": 0,
        "num_labels": 2,
    }
    base.update(kw)
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(arch, **base)
    return AutoModelForSequenceClassification.from_config(cfg, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("side", ["right", "left"])
def test_rows_equal_output_attentions(tiny, side):
    _arch, model, tok = tiny
    ids, mask = _batch(len(tok), [9, 5, 7], side, tok.pad_token_id)
    qpos = last_positions(mask)
    rows = attention_rows(model, ids, mask)
    assert rows.shape == (3, 2, 4, 9)
    torch.testing.assert_close(rows, _eager_rows(model, ids, mask, qpos), atol=1e-5, rtol=0)
    # Rows are distributions over visible, non-pad keys.
    torch.testing.assert_close(rows.sum(-1), torch.ones(3, 2, 4))
    assert float(rows[~mask.bool()[:, None, None, :].expand_as(rows)].abs().max()) == 0.0


def test_rows_at_inner_query_positions(tiny):
    _arch, model, tok = tiny
    ids, mask = _batch(len(tok), [8, 6], "right", tok.pad_token_id, seed=1)
    qpos = torch.tensor([3, 0])
    rows = attention_rows(model, ids, mask, qpos)
    torch.testing.assert_close(rows, _eager_rows(model, ids, mask, qpos), atol=1e-5, rtol=0)
    assert float(rows[0, :, :, 4:].abs().max()) == 0.0  # causal: nothing after the query
    torch.testing.assert_close(rows[1, :, :, 0], torch.ones(2, 4))


@pytest.mark.parametrize(
    "arch,kw",
    [
        ("mistral", {"sliding_window": 3}),
        ("qwen3", {"head_dim": 8}),
    ],
)
def test_other_rope_families(arch, kw):
    model = _model(arch, **kw)
    ids, mask = _batch(120, [7, 4], "left", 0, seed=2)
    qpos = last_positions(mask)
    with AttentionRowRecorder(model, mask) as rec:
        assert rec.fast
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    torch.testing.assert_close(rec.rows, _eager_rows(model, ids, mask, qpos), atol=1e-5, rtol=0)


def test_gqa_and_inverse_layer_scaling(gpt2_tok, llama_tok):
    # Llama with one key/value head shared by all 4 query heads; GPT-2 scaled by 1 / (layer + 1).
    for arch, tok, kw in [
        ("llama", llama_tok, {"num_key_value_heads": 1}),
        ("gpt2", gpt2_tok, {"scale_attn_by_inverse_layer_idx": True}),
    ]:
        model = tiny_classifier(arch, tokenizer=tok, **kw)
        ids, mask = _batch(len(tok), [6, 6], "right", tok.pad_token_id, seed=3)
        torch.testing.assert_close(
            attention_rows(model, ids, mask),
            _eager_rows(model, ids, mask, last_positions(mask)),
            atol=1e-5,
            rtol=0,
        )


def test_model_untouched_and_output_unchanged(llama_model, llama_tok):
    ids, mask = _batch(len(llama_tok), [6, 4], "right", llama_tok.pad_token_id)
    llama_model.train()
    with torch.no_grad():
        before = llama_model.eval()(input_ids=ids, attention_mask=mask).logits
    llama_model.train()
    attention_rows(llama_model, ids, mask)
    assert llama_model.training and llama_model.config._attn_implementation == "sdpa"
    llama_model.eval()
    with AttentionRowRecorder(llama_model, mask) as rec, torch.no_grad():
        during = llama_model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(during, before)
    assert rec.rows.shape == (2, 2, 4, 6)
    assert all(not m._forward_pre_hooks for m in llama_model.modules())


def test_fallback_restores_attention_implementation():
    model = _model("gpt_neox", rotary_pct=0.5, intermediate_size=64)
    ids, mask = _batch(120, [6, 3], "right", 0, seed=4)
    qpos = last_positions(mask)
    with pytest.warns(UserWarning, match="eager attention"):
        rows = attention_rows(model, ids, mask)
    assert model.config._attn_implementation == "sdpa" and not model.config.output_attentions
    torch.testing.assert_close(rows, _eager_rows(model, ids, mask, qpos), atol=1e-5, rtol=0)


def test_peft_lora_is_included(gpt2_tok):
    peft = pytest.importorskip("peft")
    model = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    lora = peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=4, target_modules=["c_attn"], fan_in_fan_out=True, task_type="SEQ_CLS", init_lora_weights=False
        ),
    )
    ids, mask = _batch(len(gpt2_tok), [5], "right", gpt2_tok.pad_token_id)
    rows = attention_rows(lora, ids, mask)
    with lora.disable_adapter():
        plain = attention_rows(lora, ids, mask)
    assert not torch.allclose(rows, plain, atol=1e-4)  # the adapter changes q/k, and is seen
    merged = lora.merge_and_unload()
    torch.testing.assert_close(rows, _eager_rows(merged, ids, mask, last_positions(mask)), atol=1e-5, rtol=0)


def test_bad_inputs(gpt2_model):
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="one position per sequence"):
        attention_rows(gpt2_model, ids, torch.ones_like(ids), torch.tensor([1, 2]))
    with pytest.raises(IndexError, match="out of range"):
        attention_rows(gpt2_model, ids, torch.ones_like(ids), torch.tensor([3]))
    with pytest.raises(ValueError, match="padding token"):
        attention_rows(gpt2_model, ids, torch.tensor([[1, 1, 0]]), torch.tensor([2]))
