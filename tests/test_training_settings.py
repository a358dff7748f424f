"""Training settings of the recipes' LightningModule: warm-up + cosine schedule, label-word head init."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from pi_lightning.models import init_head_from_words
from pi_lightning.testing import tiny_classifier, toy_sentiment
from pi_lightning.training import TextClassifier, TextDataModule


def test_warmup_cosine_schedule_follows_the_formula(gpt2_tok, tmp_path):
    seen = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    module = TextClassifier(
        tiny_classifier("gpt2", tokenizer=gpt2_tok), lr=1e-2, warmup_steps=2, schedule="cosine"
    )
    trainer = pl.Trainer(
        max_steps=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Record()],
        default_root_dir=tmp_path,
    )
    trainer.fit(
        module, datamodule=TextDataModule(gpt2_tok, toy_sentiment(48, 1), toy_sentiment(8, 2), batch_size=8)
    )
    want = [
        1e-2 * f
        for f in (
            0.5,
            1.0,
            1.0,
            0.5 * (1 + math.cos(math.pi / 4)),
            0.5,
            0.5 * (1 + math.cos(3 * math.pi / 4)),
        )
    ]
    assert seen == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="schedule"):
        TextClassifier(torch.nn.Linear(1, 1), schedule="linear")
    with pytest.raises(ValueError, match="warmup_steps"):
        TextClassifier(torch.nn.Linear(1, 1), warmup_steps=-1)


def test_head_from_label_words_is_the_lm_reading(gpt2_tok):
    model = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    words = [" bad", " good"]
    init_head_from_words(model, gpt2_tok, words)
    ids = [gpt2_tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    emb = model.get_input_embeddings().weight
    torch.testing.assert_close(model.score.weight, emb[ids])
    # Known answer: the head's logits are the final hidden state times the label words' embeddings,
    # i.e. what a tied LM head gives for those two tokens.
    enc = gpt2_tok(["a fine film"], return_tensors="pt")
    with torch.no_grad():
        h = model.transformer(**enc).last_hidden_state[:, -1]
        torch.testing.assert_close(model(**enc).logits, h @ emb[ids].T)
    with pytest.raises(ValueError, match="one word per class"):
        init_head_from_words(model, gpt2_tok, [" good"])
    with pytest.raises(ValueError, match="linear head"):
        init_head_from_words(torch.nn.Linear(2, 2), gpt2_tok, words)
