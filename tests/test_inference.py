"""Per-position (intermediate) predictions from one hooked forward pass."""

from __future__ import annotations

import re

import pytest
import torch

from pi_lightning.features import Featurizer
from pi_lightning.inference import ClassifierAdapter, eval_mode, token_budget_batches, transform_outputs
from pi_lightning.masking import Masker
from pi_lightning.testing import tiny_classifier

SEQS = [[5, 17, 23, 42, 8, 99, 3], [12, 7], [30, 31, 32, 33], [44]]


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
    with eval_mode(gpt2_model):
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
