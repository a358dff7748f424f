"""The package imports fast, without side effects, and the embedded data loads without importing its module."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pi_lightning


def test_import_is_fast_and_does_not_import_wandb():
    code = (
        "import sys, time; t = time.perf_counter(); import pi_lightning; dt = time.perf_counter() - t; "
        "print(dt, 'wandb' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) < 3.0
    assert out[1] == "False" and out[2] == "False"


def test_public_api():
    assert pi_lightning.__version__
    for name in pi_lightning.__all__:
        assert getattr(pi_lightning, name) is not None
    with pytest.raises(AttributeError):
        pi_lightning.not_a_name  # noqa: B018


def test_movie_reviews_splits():
    pytest.importorskip("importlib.metadata")
    from pi_lightning.data import load_movie_reviews

    try:
        train = load_movie_reviews("rotten_tomatoes", "train")
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    val = load_movie_reviews("rotten_tomatoes", "val")
    test = load_movie_reviews("rotten_tomatoes", "test")
    assert len(train) + len(val) + len(test) == 8530
    assert not set(train.texts) & set(test.texts)
    assert abs(sum(test.labels) - len(test) / 2) <= 1  # stratified
    assert "movie_reviews" not in sys.modules  # the package's __init__ (pandas) never ran
    assert load_movie_reviews("rotten_tomatoes", "test").texts == test.texts  # seeded
    with pytest.raises(ValueError, match="Unknown split 'dev': expected one of train, val, test."):
        load_movie_reviews("rotten_tomatoes", "dev")


def test_recipe_adapter_round_trip(tmp_path):
    """A LoRA adapter saved by FinetuneClassifier(save_dir=...) reloads through load_classifier(adapter=...)."""
    import torch

    from pi_lightning.data import load_classifier
    from pi_lightning.modules import FinetuneClassifier

    m = FinetuneClassifier("testing:gpt2", save_dir=str(tmp_path))
    with torch.no_grad():
        for name, p in m.model.named_parameters():
            if "lora_B" in name or ("score" in name and "modules_to_save" in name):
                p.add_(0.1)
    m.model.save_pretrained(tmp_path)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = m.model.eval()(input_ids=x).logits
        base = load_classifier("testing:gpt2")[0](input_ids=x).logits
        got = load_classifier("testing:gpt2", adapter=tmp_path)[0](input_ids=x).logits
    assert not torch.allclose(want, base, atol=1e-3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
