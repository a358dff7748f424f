"""Where two parts meet: training and explanation see the same token ids, words are whole, free and
probe SP-PI agree, and a reader of examples reads every layout the same way (issue 25)."""

from __future__ import annotations

import pytest
import torch

from pi_lightning.attributors import SPPI
from pi_lightning.features import Featurizer
from pi_lightning.testing import tiny_classifier, tiny_tokenizer
from pi_lightning.training import TextDataModule

FAMILIES = ("gpt2", "llama")
TEMPLATES = ("{text}", "Review: {text}\nSentiment:", "Movie review:\n{text}", "Label: {text}")
TEXTS = ["a good movie.", ".great fun", "it was.great", "Don't miss it!\nReally."]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_training_ids_equal_explanation_ids(family, template):
    tok = tiny_tokenizer(family)
    dm = TextDataModule(tok, (TEXTS, [0, 1, 0, 1]), (TEXTS, [0, 1, 0, 1]), template=template, batch_size=4)
    batch = next(iter(dm.val_dataloader()))
    model = tiny_classifier(family, tokenizer=tok)
    attrs = SPPI(model, tok, template=template).attribute(TEXTS, target=1)
    for r, a in enumerate(attrs):
        trained = batch["input_ids"][r][batch["attention_mask"][r].bool()].tolist()
        assert trained == list(a.features.input_ids), (family, template, TEXTS[r])
        # and the same as the Featurizer's own encoding, batched
        assert trained == Featurizer(tok, template=template).encode([TEXTS[r]])[0]


def _validate(module, dm_or_loader, callbacks):
    import lightning.pytorch as pl

    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    if isinstance(dm_or_loader, TextDataModule):
        trainer.validate(module, datamodule=dm_or_loader, verbose=False)
    else:
        trainer.validate(module, dataloaders=dm_or_loader, verbose=False)
    return trainer


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("template", ["{text}", "Review: {text}\nSentiment:", "Movie review: {text}"])
def test_validation_sppi_scores_every_word_as_sppi(family, template):
    from pi_lightning.callbacks import ValidationSPPI
    from pi_lightning.training import TextClassifier

    tok = tiny_tokenizer(family)
    model = tiny_classifier(family, tokenizer=tok)
    labels = [0, 1, 1, 0]
    dm = TextDataModule(tok, (TEXTS, labels), (TEXTS, labels), template=template, batch_size=3)
    cb = ValidationSPPI(tok, template=template)
    _validate(TextClassifier(model).eval(), dm, [cb])
    attrs = SPPI(model, tok, template=template).attribute(TEXTS, target=labels)
    words = [w for a in attrs for w in a.features.texts]
    assert cb._words == words  # every word, the first one included
    free = torch.cat(cb._phis).double()
    probe = torch.cat([a.scores for a in attrs]).double()
    torch.testing.assert_close(free, probe, atol=1e-5, rtol=0)


def test_validation_sppi_names_the_batches_it_skips():
    from pi_lightning.callbacks import ValidationSPPI
    from pi_lightning.training import TextClassifier

    tok = tiny_tokenizer("gpt2")
    model = tiny_classifier("gpt2", tokenizer=tok)
    dm = TextDataModule(tok, (TEXTS, [0, 1, 1, 0]), (TEXTS, [0, 1, 1, 0]), batch_size=2)

    class TupleModule(TextClassifier):
        def validation_step(self, batch, batch_idx):
            ids, mask, y = batch
            return super().validation_step({"input_ids": ids, "attention_mask": mask, "labels": y}, batch_idx)

    tuples = torch.utils.data.DataLoader(
        [(b["input_ids"], b["attention_mask"], b["labels"]) for b in dm.val_dataloader()], batch_size=None
    )
    cb = ValidationSPPI(tok)
    expected = r"skipped 2 validation batches.*batches 0, 1 \(2\): it is a (tuple|list), not a mapping"
    with pytest.warns(UserWarning, match=expected):
        _validate(TupleModule(model).eval(), tuples, [cb])
    assert [b["batch_idx"] for b in cb.skipped_batches] == [0, 1]
    assert all("not a mapping" in b["reason"] for b in cb.skipped_batches)
    assert cb.evals == []
