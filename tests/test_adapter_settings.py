"""The adapter carries its settings: finetune writes template, class names and mask beside the weights
and names the folder in its summary; explain and shortcuts use them and refuse a mismatch unless told;
the summary and the report list the detector's significant words per evaluation."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest

from pi_lightning.adapter_settings import SETTINGS_FILE, read_adapter_settings, resolve_settings
from pi_lightning.callbacks import ValidationSPPI
from pi_lightning.cli import explain, shortcuts
from pi_lightning.cli.finetune import summary
from pi_lightning.metrics import ValidationEvaluation
from pi_lightning.reporting.shortcuts import significant_words_lines, significant_words_section
from pi_lightning.training import FinetuneClassifier, ReviewDataModule


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    pl.seed_everything(0, verbose=False)
    module = FinetuneClassifier("testing:gpt2", lr=5e-3, save_dir=str(tmp / "adapter"))
    dm = ReviewDataModule(
        "testing:gpt2", n_train=32, n_val=16, n_probe=2, template="Movie: {text}", batch_size=8
    )
    trainer = pl.Trainer(
        max_steps=4,
        val_check_interval=2,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ValidationSPPI(min_count=1)],
        default_root_dir=tmp,
    )
    trainer.fit(module, datamodule=dm)
    return tmp, trainer


def test_finetune_saves_settings_and_the_summary_names_them(finetuned):
    tmp, trainer = finetuned
    saved = read_adapter_settings(tmp / "adapter")
    assert saved["template"] == "Movie: {text}" and saved["label_names"] == ["negative", "positive"]
    assert saved["mask"] == "remove" and saved["model_name"] == "testing:gpt2"
    text = summary(trainer, 1.0)
    assert f"fine-tuned weights: {tmp / 'adapter'} (settings: {SETTINGS_FILE}" in text
    assert "label-free shortcut detector over the validation set" in text
    steps = [e.step for e in next(c for c in trainer.callbacks if isinstance(c, ValidationSPPI)).evals]
    assert steps == [2, 4] and all(f"step {s}: " in text for s in steps)


def test_explain_and_shortcuts_use_the_adapter_settings(finetuned, capsys):
    tmp, _ = finetuned
    adapter = str(tmp / "adapter")
    base = ["a good movie", "a dull plot", "good fun", "dull and slow", "--model", "testing:gpt2"]
    base += ["--adapter", adapter, "--no-progress"]
    assert explain.main([*base, "--out", str(tmp / "job")]) == 0
    assert "using the adapter's settings: template 'Movie: {text}'" in capsys.readouterr().out
    job = json.loads((tmp / "job" / "job.json").read_text())
    assert job["method_kwargs"]["template"] == "Movie: {text}"
    assert job["metadata"]["label_names"] == ["negative", "positive"]
    assert shortcuts.main([str(tmp / "job"), "--min-count", "1"]) == 0
    capsys.readouterr()
    # a different template is refused, unless told
    assert explain.main([*base, "--out", str(tmp / "job2"), "--template", "{text}"]) == 2
    err = capsys.readouterr().err
    assert "template '{text}' differs from the one the adapter" in err and "--ignore-adapter-settings" in err
    assert (
        explain.main([*base, "--out", str(tmp / "job2"), "--template", "{text}", "--ignore-adapter-settings"])
        == 0
    )
    capsys.readouterr()
    assert shortcuts.main([str(tmp / "job2"), "--min-count", "1"]) == 2
    assert "differs from the one the adapter" in capsys.readouterr().err
    assert shortcuts.main([str(tmp / "job2"), "--min-count", "1", "--ignore-adapter-settings"]) == 0
    assert explain.main([*base, "--out", str(tmp / "job3"), "--label-names", "pos,neg"]) == 2
    assert "label names" in capsys.readouterr().err


def test_resolve_settings_rules():
    saved = {"template": "Review: {text}", "label_names": ["neg", "pos"], "mask": "remove"}
    got = resolve_settings(saved, {"template": None, "label_names": ["neg", "pos"], "mask": None})
    assert got == saved
    assert resolve_settings(None, {"template": "{text}"}) == {"template": "{text}"}
    assert resolve_settings(saved, {"mask": "..."}, allow_mismatch=True) == {"mask": "..."}
    with pytest.raises(ValueError, match="mask"):
        resolve_settings(saved, {"mask": "..."})


def test_significant_words_with_their_first_step_in_summary_and_report():
    evals = [
        ValidationEvaluation(15, 15, 0, {}, significant_words=[{"word": "simply", "cls": 1, "q": 1e-3}]),
        ValidationEvaluation(
            30,
            30,
            0,
            {},
            significant_words=[{"word": "bad", "cls": 0, "q": 1e-6}, {"word": "simply", "cls": 1, "q": 1e-5}],
        ),
        ValidationEvaluation(45, 45, 0, {}, significant_words=[]),
    ]
    lines = significant_words_lines(evals, ["negative", "positive"])
    assert lines[1].strip() == "step 15: 1 significant: simply (positive, q 1e-03, since step 15)"
    assert "bad (negative, q 1e-06, since step 30), simply (positive, q 1e-05, since step 15)" in lines[2]
    assert lines[3].strip() == "step 45: 0 significant"
    page = significant_words_section(evals, ["negative", "positive"])
    assert page.count("<tr>") == 4 and "<b>simply</b> (positive, q 1.0e-05, step 15)" in page
    assert significant_words_section([]) == ""


def test_report_holds_the_detector_section(tmp_path):
    from pi_lightning.reporting import write_report
    from pi_lightning.reporting.shortcuts import validation_from_checkpoint

    e = ValidationEvaluation(15, 15, 0, {}, significant_words=[{"word": "simply", "cls": 1, "q": 1e-3}])
    page = write_report({}, tmp_path / "r.html", validation=[e]).read_text()
    assert "Label-free shortcut detector" in page and "<b>simply</b>" in page
    ckpt = {"callbacks": {"ValidationSPPI{'output': 'prob'}": {"evals": [e.to_dict()]}}}
    assert validation_from_checkpoint(ckpt) == [e]


def test_shortcuts_rejects_bad_budgets(finetuned, capsys):
    tmp, _ = finetuned
    job = tmp / "job"
    if not (job / "job.json").is_file():
        assert (
            explain.main(
                [
                    "a good movie",
                    "--model",
                    "testing:gpt2",
                    "--adapter",
                    str(tmp / "adapter"),
                    "--no-progress",
                    "--out",
                    str(job),
                ]
            )
            == 0
        )
    for flag, value, low in (("--budget", "-1", 0), ("--max-tokens", "0", 1)):
        assert shortcuts.main([str(job), flag, value]) == 2
        assert f"{flag} must be >= {low}, got {value}" in capsys.readouterr().err
