"""Shared fixtures: tiny random GPT-2 and Llama classifiers with their tokenizers, nothing downloaded.

The rootdir conftest of a suite laid out like the package (tests/attributors/, metrics/, callbacks/,
cli/, jobs/, benchmarks/; tests of top-level modules and across modules in tests/). Shared plain
functions (references, the gloo harness) are in tests/_reference.py; the rule is in its docstring.
"""

from __future__ import annotations

import os

import pytest
import torch

from pi_lightning.testing import tiny_classifier, tiny_tokenizer

# One thread by default (2-core CI); PI_LIGHTNING_TEST_THREADS=2 runs the suite on another kernel split,
# which shows float comparisons that hold only for one summation order.
torch.set_num_threads(int(os.environ.get("PI_LIGHTNING_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def gpt2_tok():
    return tiny_tokenizer("gpt2")


@pytest.fixture(scope="session")
def llama_tok():
    return tiny_tokenizer("llama")


@pytest.fixture
def gpt2_model(gpt2_tok):
    return tiny_classifier("gpt2", tokenizer=gpt2_tok)


@pytest.fixture
def llama_model(llama_tok):
    return tiny_classifier("llama", tokenizer=llama_tok)


@pytest.fixture(params=["gpt2", "llama"])
def tiny(request, gpt2_tok, llama_tok):
    """(arch, model, tokenizer) for both tokenizer/architecture styles."""
    tok = gpt2_tok if request.param == "gpt2" else llama_tok
    return request.param, tiny_classifier(request.param, tokenizer=tok), tok


@pytest.fixture
def validate_once():
    """``validate_once(module, data, callbacks)``: one quiet CPU ``Trainer.validate`` (no logger, no
    checkpoints, no bars) over a datamodule (anything with ``val_dataloader``) or a loader; returns the
    trainer."""
    import lightning.pytorch as pl

    def run(module, data, callbacks):
        trainer = pl.Trainer(
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        if hasattr(data, "val_dataloader"):
            trainer.validate(module, datamodule=data, verbose=False)
        else:
            trainer.validate(module, dataloaders=data, verbose=False)
        return trainer

    return run


@pytest.fixture
def train_tiny():
    """``train_tiny(texts, labels, tok, steps=64, lr=1e-2, batch=16, seed=0)``: a few AdamW steps on the
    tiny GPT-2 (the shortcut recipe's --fast settings, without Lightning); returns the model in eval mode."""
    import random

    from pi_lightning.testing import tiny_classifier

    def run(texts, labels, tok, steps=64, lr=1e-2, batch=16, seed=0):
        torch.manual_seed(seed)
        model = tiny_classifier("gpt2", tokenizer=tok, seed=seed).train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        rng = random.Random(seed)
        for _ in range(steps):
            b = rng.sample(range(len(texts)), batch)
            enc = tok([texts[i] for i in b], padding=True, return_tensors="pt")
            loss = model(**enc, labels=torch.tensor([labels[i] for i in b])).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval()

    return run
