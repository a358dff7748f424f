"""Where two parts meet: training and explanation see the same token ids, words are whole, free and
probe SP-PI agree, and a reader of examples reads every layout the same way (issue 25)."""

from __future__ import annotations

import pytest

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
