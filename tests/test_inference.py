"""Per-position (intermediate) predictions from one hooked forward pass."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from pi_lightning.features import Featurizer
from pi_lightning.inference import (
    ClassifierAdapter,
    model_mode,
    pad_sequences,
    token_budget_batches,
    transform_outputs,
)
from pi_lightning.masking import Masker
from pi_lightning.testing import tiny_classifier

SEQS = [[5, 17, 23, 42, 8, 99, 3], [12, 7], [30, 31, 32, 33], [44]]


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_sequences_layout_dtype_and_mask(side):
    ids, mask = pad_sequences(SEQS, pad_token_id=1, padding_side=side)
    assert ids.shape == mask.shape == (4, 7) and ids.dtype == mask.dtype == torch.long
    for r, s in enumerate(SEQS):
        real = ids[r][mask[r].bool()].tolist()
        assert real == s and int(mask[r].sum()) == len(s)
        assert set(ids[r][~mask[r].bool()].tolist()) <= {1}
        # right: the tokens come first; left: they end at the last column
        cols = mask[r].nonzero().flatten().tolist()
        assert cols == (list(range(len(s))) if side == "right" else list(range(7 - len(s), 7)))


def test_pad_sequences_rejects_bad_input():
    with pytest.raises(ValueError, match="padding_side"):
        pad_sequences(SEQS, 0, "middle")
    with pytest.raises(ValueError, match="no sequences"):
        pad_sequences([], 0)


def test_adapter_pad_uses_its_pad_token_and_side(gpt2_model):
    adapter = ClassifierAdapter(gpt2_model, padding_side="left")
    ids, mask = adapter.pad([[5, 6, 7], [8]])
    pad = gpt2_model.config.pad_token_id
    assert ids.tolist() == [[5, 6, 7], [pad, pad, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.device == adapter.device
    ids, mask = adapter.pad([[5, 6, 7], [8]], padding_side="right")
    assert ids.tolist() == [[5, 6, 7], [8, pad, pad]]


@pytest.mark.parametrize("side", ["right", "left"])
def test_final_logits_equal_the_last_position(gpt2_model, side):
    adapter = ClassifierAdapter(gpt2_model, padding_side=side, max_tokens=9)
    finals = adapter.final_logits(SEQS)
    assert finals.shape == (len(SEQS), 2) and finals.dtype == torch.float32
    for s, row in zip(SEQS, finals, strict=True):
        with torch.no_grad():
            ref = gpt2_model.eval()(input_ids=torch.tensor([s])).logits[0]
        torch.testing.assert_close(row, ref.float(), atol=1e-5, rtol=1e-5)
    assert adapter.final_logits([]).shape == (0, 2)


def test_model_mode_grad_freezes_weights_and_restores(gpt2_model):
    gpt2_model.train()
    flags = [p.requires_grad for p in gpt2_model.parameters()]
    with torch.inference_mode(), model_mode(gpt2_model, "grad"):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert not gpt2_model.training and not any(p.requires_grad for p in gpt2_model.parameters())
    assert gpt2_model.training and [p.requires_grad for p in gpt2_model.parameters()] == flags
    with model_mode(gpt2_model, "keep"):
        assert gpt2_model.training and torch.is_grad_enabled()
    with pytest.raises(ValueError, match="mode"), model_mode(gpt2_model, "train"):
        pass


def test_hooked_positions_equal_prefix_runs(tiny):
    _, model, _ = tiny
    adapter = ClassifierAdapter(model)
    outs = adapter.forward_positions(SEQS)
    for seq, out in zip(SEQS, outs, strict=False):
        assert out.shape == (len(seq), 2)
        for t in range(len(seq)):
            with torch.no_grad():
                ref = model(input_ids=torch.tensor([seq[: t + 1]])).logits[0]
            torch.testing.assert_close(out[t], ref.float(), atol=1e-5, rtol=1e-5)


def test_left_and_right_padding_agree(tiny):
    _, model, _ = tiny
    right = ClassifierAdapter(model, padding_side="right").forward_positions(SEQS)
    left = ClassifierAdapter(model, padding_side="left").forward_positions(SEQS)
    for a, b in zip(right, left, strict=False):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_token_budget_does_not_change_results(gpt2_model):
    big = ClassifierAdapter(gpt2_model, max_tokens=10_000).forward_positions(SEQS, [[0, 6], [1], [2], [0]])
    small = ClassifierAdapter(gpt2_model, max_tokens=7).forward_positions(SEQS, [[0, 6], [1], [2], [0]])
    for a, b in zip(big, small, strict=False):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_token_budget_batches():
    lengths = [5, 1, 9, 3, 3, 20]
    batches = token_budget_batches(lengths, max_tokens=10)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 10


def test_mode_restored_and_no_grad(gpt2_model):
    gpt2_model.train()
    gpt2_model.transformer.h[0].eval()
    ClassifierAdapter(gpt2_model).forward_positions(SEQS)
    assert gpt2_model.training and not gpt2_model.transformer.h[0].training
    assert gpt2_model.transformer.h[1].training
    with model_mode(gpt2_model):
        assert not torch.is_grad_enabled() and not gpt2_model.training


def test_peft_wrapped_equals_merged(gpt2_tok):
    peft = pytest.importorskip("peft")
    model = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    cfg = peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False
    )
    wrapped = peft.get_peft_model(model, cfg)
    outs = ClassifierAdapter(wrapped).forward_positions(SEQS)
    merged = wrapped.merge_and_unload()
    ref = ClassifierAdapter(merged).forward_positions(SEQS)
    for a, b in zip(outs, ref, strict=False):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and the LoRA weights really changed the output
    plain = ClassifierAdapter(tiny_classifier("gpt2", tokenizer=gpt2_tok)).forward_positions(SEQS)
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(outs, plain, strict=False))


def test_output_kinds():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    p = transform_outputs(logits, "prob")
    torch.testing.assert_close(p.sum(-1), torch.ones(1, dtype=torch.float64))
    lo = transform_outputs(logits, "log_odds")
    torch.testing.assert_close(lo, torch.log(p / (1 - p)))
    torch.testing.assert_close(transform_outputs(logits, "logits"), logits.double())


def test_masker_default_and_remove(gpt2_tok, llama_tok):
    for tok in (gpt2_tok, llama_tok):
        f = Featurizer(tok, template="Review: {text}")("a good movie very much")
        assert f.texts == ("a", "good", "movie", "very", "much")
        seqs, ends = Masker(tok, "...")(f, [[True, False, True, False, True], [True] * 5])
        assert tok.decode(seqs[0], skip_special_tokens=True).endswith("a ... movie ... much")
        assert seqs[1] == list(f.input_ids)
        assert ends[1].tolist() == list(f.ends)
        seqs, ends = Masker(tok, "remove")(f, [[True, False, True, True, True]])
        assert tok.decode(seqs[0], skip_special_tokens=True).endswith("a movie very much")
        assert ends[0, 1] == ends[0, 0]  # a removed feature ends where the previous one did
        for s, e in zip(seqs, ends, strict=False):
            assert all(0 <= x < len(s) for x in e)


def test_bad_models_have_clear_errors(gpt2_tok):
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Expected a decoder-only *ForSequenceClassification model whose classification head runs on "
            "every position (e.g. GPT2ForSequenceClassification, LlamaForSequenceClassification: a module "
            "whose output is (batch, positions, num_labels) in the forward), got "
            "BertForSequenceClassification (model_type='bert') with a classifier head applied to a pooled "
            "output (`classifier` -> (1, 2))."
        ),
    ):
        ClassifierAdapter(bert)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(TypeError, match=re.escape("got GPT2LMHeadModel (model_type='gpt2') with no head.")):
        ClassifierAdapter(lm)
    nopad = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    nopad.config.pad_token_id = None
    with pytest.raises(
        ValueError,
        match=re.escape(
            "GPT2ForSequenceClassification.config.pad_token_id is None; batched classification needs a pad "
            "token. Fix: `model.config.pad_token_id = tokenizer.pad_token_id`"
        ),
    ):
        ClassifierAdapter(nopad)


def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


@pytest.mark.parametrize("fail", [False, True])
def test_model_mode_isolate_restores_rng_modes_and_grads(fail):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)).train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = _draw()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with pytest.raises(RuntimeError) if fail else torch.no_grad(), model_mode(model, "keep", isolate=True):
        _draw()
        model.eval()
        model[0].weight.requires_grad_(False)
        model[0].weight.grad = None
        if fail:
            raise RuntimeError("the attribution failed")
    assert _draw() == expected  # the training's random streams continue as if nothing ran
    assert model.training and model[1].training and model[0].weight.requires_grad
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
