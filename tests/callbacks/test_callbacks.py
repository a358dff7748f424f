"""Callbacks: end-to-end fits on a tiny model, side-effect freedom, resume, W&B offline, DDP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

# The fit harness and its data are shared with other modules (tests/_reference.py); the old local names kept.
from _reference import FIT_PROBE as PROBE
from _reference import FIT_TRAIN as TRAIN
from _reference import FIT_VAL as VAL
from _reference import fit_tiny as _fit
from _reference import read_wandb_records as _read_wandb_records
from _reference import sp_monitor as _sp

from pi_lightning.attributors import available_methods
from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ValidationSPPI
from pi_lightning.testing import in_range, tiny_classifier
from pi_lightning.training import TextClassifier, TextDataModule

FAST_KW = {
    "mp-pi": {"budget": 8},
    "kernel-shap": {"budget": 8},
    "ig": {"budget": 4},
    "udig": {"budget": 4},
    "at2": {"budget": 8, "num_iterations": 50},
}


def test_fit_with_callbacks_logs_history_and_report(gpt2_tok, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    sp = _sp(gpt2_tok)
    free = ValidationSPPI(gpt2_tok)
    report = HTMLReport()
    trainer, _ = _fit(gpt2_tok, [sp, free, report], tmp_path, logger=CSVLogger(tmp_path))
    # the baseline before the first step, then one evaluation per validation
    assert [e.step for e in sp.evals] == [0, 6, 12] and len(free.evals) == 2
    m = sp.evals[-1].metrics
    for k in (
        "as_auc",
        "ias_auc",
        "as_auc_ci",
        "log_odds",
        "comprehensiveness",
        "sufficiency",
        "accuracy",
        "drift_rank_corr",
        "gap_change",
        "gap_change_ci",
        "gap_change_p",
        "gap_change_prev",
        "as_auc_change",
        "ias_auc_change_prev_p",
    ):
        assert k in m and m[k] == m[k]
    assert "gap_change" not in sp.evals[0].metrics  # nothing to pair the baseline with
    assert in_range(m["as_auc"]) and in_range(m["ias_auc"])
    assert len(sp.evals[-1].scores) == len(PROBE[0])
    assert free.evals[-1].metrics["n_examples"] == len(VAL[0])
    assert free.evals[-1].top_words
    html = report.written.read_text()
    assert "src='data:image/png;base64," in html and "sp-pi" in html and "rgba(" in html
    # the verdict since the baseline, every probe example with its label, prediction and colour scale
    assert "Verdict: what changed since the baseline" in html and "sp-pi: " in html and "since step 0" in html
    assert f"all {len(PROBE[0])} probe examples" in html
    assert html.count("full colour at |attribution|") == 2 * len(PROBE[0])
    logged = (Path(trainer.loggers[0].log_dir) / "metrics.csv").read_text()
    assert "pi/sp-pi/as_auc" in logged and "pi/val-sp-pi/top20_share" in logged
    pages = list((Path(trainer.loggers[0].log_dir) / "pi_lightning").glob("pi_sp-pi_step*.html"))
    assert len(pages) == 3


@pytest.mark.parametrize("method", [m for m in available_methods() if m != "sp-pi"])
def test_every_method_runs_through_the_monitor(gpt2_tok, tmp_path, method):
    mon = AttributionMonitor(
        gpt2_tok, PROBE, method, method_kwargs=FAST_KW.get(method, {}), metrics=["as_auc", "ias_auc"]
    )
    _fit(gpt2_tok, [mon], tmp_path, epochs=1)
    assert len(mon.evals) == 2  # the baseline and the validation
    assert in_range(mon.evals[-1].metrics["as_auc"])


def test_callbacks_do_not_change_training(gpt2_tok, tmp_path):
    methods = [m for m in ("sp-pi", "mp-pi", "ig", "random") if m in available_methods()]
    cbs = [
        AttributionMonitor(gpt2_tok, PROBE, m, method_kwargs=FAST_KW.get(m, {}), every_n_steps=3)
        for m in methods
    ]
    cbs.append(ValidationSPPI(gpt2_tok))
    _, with_cb = _fit(gpt2_tok, cbs, tmp_path / "a", val_check_interval=3)
    _, without = _fit(gpt2_tok, [], tmp_path / "b", val_check_interval=3)
    assert all(len(c.evals) >= 2 for c in cbs)
    for (n1, p1), (n2, p2) in zip(with_cb.state_dict().items(), without.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1


@pytest.mark.parametrize("precision", ["bf16-mixed", "32"])
def test_peft_model_under_precision(gpt2_tok, tmp_path, precision):
    peft = pytest.importorskip("peft")
    pl.seed_everything(0, verbose=False)
    model = peft.get_peft_model(
        tiny_classifier("gpt2", tokenizer=gpt2_tok),
        peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["c_attn"]),
    )
    mons = [
        AttributionMonitor(gpt2_tok, PROBE, m, method_kwargs=FAST_KW.get(m, {}))
        for m in ("sp-pi", "mp-pi", "ig")
        if m in available_methods()
    ]
    free = ValidationSPPI(gpt2_tok)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        callbacks=[*mons, free],
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(TextClassifier(model, lr=5e-3), datamodule=TextDataModule(gpt2_tok, TRAIN, VAL, batch_size=8))
    for mon in mons:
        m = mon.evals[-1].metrics
        assert in_range(m["as_auc"]) and all(s == s for row in mon.evals[-1].scores for s in row)
    assert free.evals[-1].metrics["n_examples"] == len(VAL[0])


def test_resume_keeps_history(gpt2_tok, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    # No shuffling: a resumed DataLoader would otherwise replay epoch 1's order (not the callback's business).
    full = _sp(gpt2_tok)
    _fit(gpt2_tok, [full], tmp_path / "full", epochs=3, shuffle=False)
    first = _sp(gpt2_tok)
    _fit(
        gpt2_tok,
        [first, ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)],
        tmp_path / "p1",
        epochs=1,
        shuffle=False,
    )
    assert [e.step for e in first.evals] == [0, 6]
    resumed = _sp(gpt2_tok)
    _fit(
        gpt2_tok,
        [resumed, ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)],
        tmp_path / "p2",
        epochs=3,
        ckpt=str(tmp_path / "ck" / "last.ckpt"),
        shuffle=False,
    )
    # the baseline is not repeated on resume: one record at step 0, as in the uninterrupted run
    assert [e.step for e in resumed.evals] == [e.step for e in full.evals] == [0, 6, 12, 18]
    for a, b in zip(resumed.evals, full.evals, strict=True):
        assert a.metrics["as_auc"] == pytest.approx(b.metrics["as_auc"], abs=1e-6)
        for sa, sb in zip(a.scores, b.scores, strict=True):
            assert sa == pytest.approx(sb, abs=1e-6)
    from pi_lightning.reporting import write_report_from_checkpoint

    out = write_report_from_checkpoint(tmp_path / "ck" / "last.ckpt", tmp_path / "from_ckpt.html")
    assert "sp-pi" in out.read_text()


def test_evaluation_records_round_trip_through_a_checkpoint(gpt2_tok, tmp_path):
    """The typed records survive a checkpoint (saved as plain dicts, loadable with weights_only=True) and
    read back equal: the probe history through histories_from_checkpoint, ValidationSPPI's through its
    load_state_dict; the in-process accessors give the same records."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from pi_lightning.callbacks import probe_histories, validation_evaluations
    from pi_lightning.metrics import (
        ProbeEvaluation,
        ProbeHistory,
        ValidationEvaluation,
        histories_from_checkpoint,
    )

    sp, free = _sp(gpt2_tok), ValidationSPPI(gpt2_tok, min_count=1)
    trainer, _ = _fit(
        gpt2_tok, [sp, free, ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)], tmp_path
    )
    assert len(sp.evals) == 3 and all(isinstance(e, ProbeEvaluation) for e in sp.evals)
    assert all(isinstance(e, ValidationEvaluation) for e in free.evals) and free.evals
    assert probe_histories(trainer) == {"sp-pi": sp.history()}
    assert validation_evaluations(trainer) == free.evals
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", map_location="cpu", weights_only=True)
    loaded = histories_from_checkpoint(ckpt)
    assert list(loaded) == ["sp-pi"] and isinstance(loaded["sp-pi"], ProbeHistory)
    assert loaded["sp-pi"] == sp.history()
    assert loaded["sp-pi"].evals[-1].curves["as"][0][0] == 0.0  # the mean curves' grid starts at x = 0
    again = ValidationSPPI(gpt2_tok)
    again.load_state_dict(ckpt["callbacks"][free.state_key])
    assert again.evals == free.evals
    resumed = _sp(gpt2_tok)
    resumed.load_state_dict(ckpt["callbacks"][sp.state_key])
    assert resumed.evals == sp.evals
    # A state written before the typed records (no log_step) still loads: log_step defaults to step.
    old = {k: v for k, v in sp.evals[0].to_dict().items() if k != "log_step"}
    assert ProbeEvaluation.from_dict(old).log_step == sp.evals[0].step
    with pytest.raises(ValueError, match="'method', 'texts' and 'evals'"):
        ProbeHistory.from_state_dict({"evals": []})


@pytest.mark.slow
def test_wandb_offline_receives_scalars_and_table(gpt2_tok, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = WandbLogger(project="pi-lightning-test", save_dir=str(tmp_path), offline=True)
    _fit(gpt2_tok, [_sp(gpt2_tok), ValidationSPPI(gpt2_tok)], tmp_path, epochs=1, logger=logger)
    logger.experiment.finish()
    files = list(tmp_path.rglob("*.wandb"))
    assert len(files) == 1, list(tmp_path.rglob("*"))
    keys: set[str] = set()
    for _ in range(50):  # the wandb service may still be flushing the file
        records = _read_wandb_records(files[0])
        keys = {
            item.key or item.nested_key[0]
            for rec in records
            if rec.WhichOneof("record_type") == "history"
            for item in rec.history.item
        }
        if any(rec.WhichOneof("record_type") == "exit" for rec in records):
            break
        time.sleep(0.2)
    assert "pi/sp-pi/as_auc" in keys and "pi/val-sp-pi/top20_share" in keys
    assert "pi/sp-pi/examples" in keys  # the table of highlighted examples


def test_wandb_run_holds_highlighted_text_for_each_probe_example(gpt2_tok, tmp_path, monkeypatch):
    """Read the offline run back: every probe example has its highlighted text as W&B HTML media at
    every evaluation, the examples table holds the plain texts (not the string "Html") and scores."""
    pytest.importorskip("wandb")
    import html as html_lib

    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = WandbLogger(project="pi-lightning-test", save_dir=str(tmp_path), offline=True)
    sp = _sp(gpt2_tok)
    _fit(gpt2_tok, [sp], tmp_path, epochs=2, logger=logger)
    run_files = Path(logger.experiment.dir)
    logger.experiment.finish()
    [wandb_file] = tmp_path.rglob("*.wandb")
    for _ in range(50):  # the wandb service may still be flushing the file
        records = _read_wandb_records(wandb_file)
        if any(rec.WhichOneof("record_type") == "exit" for rec in records):
            break
        time.sleep(0.2)
    values: dict[str, list] = {}  # key -> its logged values, in order (media: {"_type", "path", ...})
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            row: dict[str, dict] = {}
            for item in rec.history.item:
                if item.key or len(item.nested_key) == 1:  # scalars: key, or a one-part nested key
                    row[item.key or item.nested_key[0]] = json.loads(item.value_json)
                elif len(item.nested_key) == 2:  # media: one item per field
                    row.setdefault(item.nested_key[0], {})[item.nested_key[1]] = json.loads(item.value_json)
            for key, value in row.items():
                values.setdefault(key, []).append(value)
    texts = PROBE[0]
    assert len(sp.evals) == 3  # baseline + 2 validations
    for i, text in enumerate(texts):
        media = values.get(f"pi/sp-pi/highlighted/{i:02d}")
        assert media is not None and len(media) == len(sp.evals), sorted(values)
        for value, record in zip(media, sp.evals, strict=True):
            assert value["_type"] == "html-file"
            page = (run_files / value["path"]).read_text(encoding="utf-8")
            spans = page.count("<span title=")
            assert spans == len(record.scores[i]) and "rgba(" in page
            # the highlighted words are the text's words, in order
            plain = html_lib.unescape(re.sub(r"<[^>]*>", "", page))
            assert text in plain
            # the panel names the label, the prediction and the colour scale
            assert "label " in plain and "predicted " in plain and "full colour at |attribution|" in plain
    [page] = values["pi/sp-pi/page"][-1:]
    assert all(html_lib.escape(t.split()[0]) in (run_files / page["path"]).read_text() for t in texts)
    table = values["pi/sp-pi/examples"][-1]
    rows = json.loads((run_files / table["path"]).read_text())
    assert rows["columns"][:2] == ["text", "label"] and "as_auc" in rows["columns"]
    assert [r[0] for r in rows["data"]] == list(texts)  # plain text, not "Html"
    col = rows["columns"].index("as_auc")
    assert [r[col] for r in rows["data"]] == pytest.approx(sp.evals[-1].as_auc)
    # the long-format words table: one row per (evaluation, example, word), every evaluation so far
    words = json.loads((run_files / values["pi/sp-pi/words"][-1]["path"]).read_text())
    assert words["columns"][:5] == ["example", "word", "position", "score", "step"]
    assert len(words["data"]) == sum(len(s) for e in sp.evals for s in e.scores)
    assert sorted({r[4] for r in words["data"]}) == [e.step for e in sp.evals]
    first = [r for r in words["data"] if r[4] == sp.evals[-1].step and r[0] == 0]
    assert [r[3] for r in first] == pytest.approx(sp.evals[-1].scores[0])
    # every figure carries pi/step, the optimizer steps done (the report's step numbers)
    assert values.get("pi/step") == [e.step for e in sp.evals], sorted(k for k in values if "step" in k)


def test_at2_refits_from_mppi_passes(gpt2_tok, tmp_path):
    if not {"mp-pi", "at2"} <= set(available_methods()):
        pytest.skip("needs MP-PI and AT2")
    mp = AttributionMonitor(gpt2_tok, PROBE, "mp-pi", method_kwargs={"budget": 12, "seed": 0})
    at2 = AttributionMonitor(gpt2_tok, PROBE, "at2", refit_from="mp-pi", method_kwargs={"num_iterations": 50})
    _fit(gpt2_tok, [mp, at2], tmp_path, epochs=2)
    assert len(at2.evals) == 3 and at2.attributor.is_fitted  # baseline + 2 validations
    # refitted from MP-PI: one extra pass per example (the head features), not its own ablations
    assert at2.evals[-1].metrics["forward_passes_per_example"] <= 2


def test_bad_probe_and_arguments(gpt2_tok):
    with pytest.raises(
        ValueError, match=r"The probe set is empty: pass at least one held-out text to explain\."
    ):
        AttributionMonitor(gpt2_tok, [], "sp-pi")
    with pytest.raises(ValueError, match="target='label' needs labels"):
        AttributionMonitor(gpt2_tok, ["a fine film"], "sp-pi")
    with pytest.raises(ValueError, match="Unknown attribution method 'shap'"):
        AttributionMonitor(gpt2_tok, PROBE, "shap")
    with pytest.raises(ValueError, match=r"every_n_val must be None or a positive int, got 0\."):
        AttributionMonitor(gpt2_tok, PROBE, every_n_val=0)


def test_probe_larger_than_val_and_one_feature_text(gpt2_tok, tmp_path):
    texts = PROBE[0] * 5 + ["great"]
    labels = PROBE[1] * 5 + [1]
    mon = AttributionMonitor(gpt2_tok, list(zip(texts, labels, strict=True)), "sp-pi")
    _fit(gpt2_tok, [mon], tmp_path, epochs=1)
    assert len(mon.evals[0].scores) == len(texts) > len(VAL[0])
    assert len(mon.evals[0].scores[-1]) == 1


@pytest.mark.slow
def test_ddp_two_processes_match_single(tmp_path):
    script = Path(__file__).parent / "ddp_script.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single.json"
    ddp = tmp_path / "ddp.json"
    subprocess.run([sys.executable, str(script), "1", str(single)], check=True, env=env, timeout=240)
    subprocess.run([sys.executable, str(script), "2", str(ddp)], check=True, env=env, timeout=240)
    a, b = json.loads(single.read_text()), json.loads(ddp.read_text())
    # the baseline and 2 validations (steps differ: each rank sees half the training batches)
    assert len(a["as_auc"]) == len(b["as_auc"]) == 3
    # the paired change is synced across ranks: every probe example paired, same mean as one process
    assert a["gap_change_n"] == b["gap_change_n"] == [None, 7.0, 7.0]
    for x, y in zip(a["gap_change"][1:], b["gap_change"][1:], strict=True):
        assert x == pytest.approx(y, abs=1e-6)
    for x, y in zip(a["as_auc"], b["as_auc"], strict=True):
        assert x == pytest.approx(y, abs=1e-6)
    for x, y in zip(a["ias_auc"], b["ias_auc"], strict=True):
        assert x == pytest.approx(y, abs=1e-6)


def test_free_sppi_equals_sppi_attributor(tiny, validate_once):
    """The free per-word phi from the validation forward pass equals SP-PI's word attributions."""
    from pi_lightning import SPPI

    _arch, model, tok = tiny
    text, label = "the movie was very good and the plot was fun", 1
    free = ValidationSPPI(tok, min_count=1, top_words=50)
    validate_once(TextClassifier(model), TextDataModule(tok, ([text], [label]), ([text], [label])), [free])
    got = {w["word"]: w["mean_phi"] for w in free.evals[-1].top_words}
    [ref] = SPPI(model, tok).attribute(text, target=label)
    words = ref.features.texts
    # every word is scored, the first one included: against the BOS token when the tokenizer adds one,
    # else against the anchor token alone, as SP-PI does.
    want: dict[str, list[float]] = {}  # words that occur twice average their phis
    for w, s in zip(words, ref.scores.tolist(), strict=True):
        want.setdefault(w, []).append(s)
    assert set(got) == set(want), (got, want)
    for w, ss in want.items():
        assert got[w] == pytest.approx(sum(ss) / len(ss), abs=1e-5), (w, got, want)


def test_gap_fractions_and_steps_aligned_with_validation(gpt2_tok, tmp_path):
    """pi/* figures (the monitor's, free SP-PI's) carry the logger step of the validation they follow,
    the headline gap is logged with its CI, and points=11 gives the same figures as the exact curves
    on short probe texts (n + 1 <= 11 features)."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    exact = _sp(gpt2_tok)
    trainer, _ = _fit(
        gpt2_tok,
        [exact, ValidationSPPI(gpt2_tok)],
        tmp_path,
        logger=CSVLogger(tmp_path),
        val_check_interval=3,
        max_steps=6,
        epochs=1,
    )
    rows = list(csv.DictReader((Path(trainer.loggers[0].log_dir) / "metrics.csv").read_text().splitlines()))
    steps = {
        k: sorted(int(r["step"]) for r in rows if r.get(k))
        for k in ("val/acc", "pi/sp-pi/gap", "pi/sp-pi/gap_ci", "pi/val-sp-pi/top20_share")
    }
    assert steps["val/acc"] == [2, 5] and steps["pi/val-sp-pi/top20_share"] == [2, 5]
    # the monitor's baseline (step 0), then the steps of the validations it follows
    assert steps["pi/sp-pi/gap"] == steps["pi/sp-pi/gap_ci"] == [0, 2, 5]
    assert [e.step for e in exact.evals] == [0, 3, 6]  # optimizer steps done, for the report's x axis
    # ... which is logged with them as pi/step (W&B plots pi/* against it: the report's numbers)
    assert sorted(int(float(r["pi/step"])) for r in rows if r.get("pi/sp-pi/gap")) == [0, 3, 6]
    m = exact.evals[-1].metrics
    assert m["gap"] == pytest.approx(m["as_auc"] - m["ias_auc"], abs=1e-12) and m["gap_ci"] > 0
    assert exact.evals[-1].gap == pytest.approx(
        [a - b for a, b in zip(exact.evals[-1].as_auc, exact.evals[-1].ias_auc, strict=True)]
    )
    # Same model state, fixed fractions: identical on short texts (n + 1 <= 11: every step is a fraction).
    short = (["a good movie", "bad plot, dull cast"], [1, 0])
    pair = [AttributionMonitor(gpt2_tok, short, "sp-pi", points=f) for f in (None, 11)]
    figs = []
    for mon in pair:
        mon.setup(trainer, trainer.lightning_module, "fit")
        figs.append(mon.evaluate(trainer, trainer.lightning_module))
    assert figs[0]["gap"] == pytest.approx(figs[1]["gap"], abs=1e-12)
    with pytest.raises(ValueError, match="points must be"):
        AttributionMonitor(gpt2_tok, PROBE, "sp-pi", points=1)


def test_step_progress_bar_counts_max_steps(gpt2_tok, tmp_path, capsys):
    from pi_lightning.callbacks import StepProgressBar

    seen: list[tuple[int, int]] = []

    class Seen(StepProgressBar):
        def on_train_batch_end(self, trainer, *args):
            super().on_train_batch_end(trainer, *args)
            seen.append((self.train_progress_bar.n, self.train_progress_bar.total))

    # 48 examples / 8 = 6 batches per epoch; max_steps=4 stops in the first epoch, max_steps=9 in the second.
    for max_steps, want in ((4, [4] * 4), (9, [6] * 6 + [3] * 3)):
        seen.clear()
        bar = Seen(refresh_rate=1)
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[bar],
            limit_val_batches=0,
            default_root_dir=tmp_path,
        )
        trainer.fit(
            TextClassifier(tiny_classifier("gpt2", tokenizer=gpt2_tok), lr=1e-3),
            datamodule=TextDataModule(gpt2_tok, TRAIN, VAL, batch_size=8),
        )
        assert [t for _, t in seen] == want
        assert seen[-1][0] == seen[-1][1]  # the bar ends full


def test_step_progress_bar_time_left_includes_evaluations_to_come(gpt2_tok, tmp_path):
    """The bar's time left counts the monitors' evaluations still to come at their measured cost (the
    baseline's, before step 1), and evaluation_seconds times them all."""
    from pi_lightning.callbacks import StepProgressBar

    class Slow(AttributionMonitor):
        def _evaluate(self, trainer, pl_module):
            time.sleep(0.5)
            return super()._evaluate(trainer, pl_module)

    left: list[tuple[int, float, int]] = []

    class Seen(StepProgressBar):
        def on_train_batch_end(self, trainer, *args):
            super().on_train_batch_end(trainer, *args)
            est = self.time_left(trainer)
            left.append((trainer.global_step, *est))
            assert "incl." in self.get_metrics(trainer, trainer.lightning_module)["left"]

    mon = Slow(gpt2_tok, PROBE, "sp-pi", every_n_val=None, at_steps=[2, 3], metrics=[])
    bar = Seen(refresh_rate=1)
    trainer = pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar, mon],
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(
        TextClassifier(tiny_classifier("gpt2", tokenizer=gpt2_tok), lr=1e-3),
        datamodule=TextDataModule(gpt2_tok, TRAIN, VAL, batch_size=8),
    )
    assert [e.step for e in mon.evals] == [0, 2, 3]
    step, seconds, count = left[0]
    assert step == 1 and count == 2 and seconds >= 2 * 0.5  # two evaluations to come, 0.5 s each at least
    assert left[-1][2] == 0  # nothing left after the last step
    assert bar.evaluation_seconds(trainer) >= 3 * 0.5
