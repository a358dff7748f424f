"""Shared fixtures: tiny random GPT-2 and Llama classifiers with their tokenizers, nothing downloaded."""

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
