"""The ``pi-lightning`` console command: dispatch, help, the early one-line errors (exact messages),
``report`` from a checkpoint, and the wheel's contents (entry point, default configs as package data)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from pi_lightning.cli import _SUBCOMMANDS, main
from pi_lightning.data import DataSourceError, check_data_source
from pi_lightning.models import ModelNotFoundError, default_model_dir, resolve_model_name

ROOT = Path(__file__).resolve().parents[2]
BUILTINS = "smollm2-135m-instruct, testing:gpt2, testing:llama"


@pytest.fixture
def quiet(tmp_path, monkeypatch, capsys):
    """Run in tmp_path with W&B offline; any model load is an error (the checks must come first)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr("pi_lightning.models.load_classifier", no_load)
    monkeypatch.setattr("pi_lightning.models.load_tokenizer", no_load)
    # "Seed set to 0" is Lightning's info log; its handler may hold the stderr of an earlier test.
    logger = logging.getLogger("lightning.fabric")
    monkeypatch.setattr(logger, "level", logging.WARNING)
    return tmp_path


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, help_line) in _SUBCOMMANDS.items():
        assert f"  {name}" in out and help_line in out
    assert main([]) == 2
    assert main(["nope"]) == 2
    assert "unknown subcommand 'nope'; expected one of finetune, report" in capsys.readouterr().err


def test_finetune_help_is_short_and_shows_what_the_job_runs(capsys):
    """--help: the options a user changes with the values of the job's config (not the classes'
    defaults), the schedule the config runs, without importing Lightning; --help-all: the full list."""
    import yaml

    from pi_lightning.cli._job_help import OPTIONS, config_file

    assert main(["finetune", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pi-lightning finetune")
    assert "Fine-tune a decoder-only transformer classifier" in out
    assert "--fast" in out and "tiny random model" in out and "--help-all" in out
    assert len(out.splitlines()) < 100
    cfg = yaml.safe_load(config_file("default").read_text(encoding="utf-8"))
    for section, name, _, _ in OPTIONS:
        if name in cfg[section]:
            value = cfg[section][name]
            shown = "null" if value is None else str(value)
            assert f"  --{section}.{name} {shown}\n" in out, (section, name)
    # The job's values, where the classes' defaults differ ({text}, 128).
    assert "  --data.template Review: {text}\n" in out and "  --data.max_length 48\n" in out
    monitors = [
        c["init_args"] for c in cfg["trainer"]["callbacks"] if "AttributionMonitor" in c["class_path"]
    ]
    mp = next(m for m in monitors if m["method"] == "mp-pi")
    assert mp["every_n_val"] is None and mp["at_end"] and mp["baseline"]
    assert "mp-pi on 24 probe examples" in out and "baseline (step 0); at the end" in " ".join(out.split())
    assert "second validation" not in out
    # Fast: nothing slow is imported.
    code = (
        "import sys; from pi_lightning.cli import main; main(['finetune', '--help']); "
        "assert 'lightning' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=os.environ.copy())
    # --help-all: LightningCLI's whole list, with the same description of what the job runs.
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--help-all"])
    assert exc.value.code == 0
    full = capsys.readouterr().out
    assert "--trainer.reload_dataloaders_every_n_epochs" in full and "What the job runs:" in full
    assert "Lightning Trainer command line tool" not in full


def test_explain_help_gives_every_option_its_help_and_default():
    from pi_lightning.cli.explain import _parser

    parser = _parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings[0]} has no help"
        text = formatter._get_help_string(action)
        assert "default" in text, f"{action.option_strings[0]}: no default in {text!r}"
    assert "(default: sp-pi)" in parser.format_help() and "(default: 8192)" in parser.format_help()


def _finetune(argv, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["finetune", "--fast", *argv])
    err = capsys.readouterr().err
    assert not [w for w in caught if "not recommended to provide both args" in str(w.message)]
    assert "Traceback" not in err
    return rc, err


def test_unknown_model_offline_fails_in_one_line(quiet, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, err = _finetune(["--model.model_name", "does-not-exist"], capsys)
    assert rc == 2
    assert err == (
        "pi-lightning finetune: error: Model 'does-not-exist' not found: it is not a local folder (no "
        f"{quiet / 'does-not-exist'}), not a built-in name ({BUILTINS}), and it was not looked up as a hub "
        "id because HF_HUB_OFFLINE is set (and it is not in the local hub cache). Fix: give an existing "
        "model folder, a built-in name, or a hub id after unsetting HF_HUB_OFFLINE.\n"
    )


def test_unreachable_hub_is_asked_once(quiet, monkeypatch, capsys):
    import huggingface_hub

    from pi_lightning import models

    calls = []

    def unreachable(repo_id, **kwargs):
        calls.append(repo_id)
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    models._hub_lookup.cache_clear()
    rc, err = _finetune(["--model.model_name", "someone/no-such-model"], capsys)
    assert rc == 2 and calls == ["someone/no-such-model"]  # one request, no retries
    assert err == (
        "pi-lightning finetune: error: Model 'someone/no-such-model' not found: it is not a local folder "
        f"(no {quiet / 'someone' / 'no-such-model'}), not a built-in name ({BUILTINS}), and the Hugging Face "
        "hub could not be reached to look it up as a hub id (ConnectionError). Fix: give an existing model "
        "folder, a built-in name, or a hub id with network access.\n"
    )


def test_missing_data_file_is_reported_before_the_model_loads(quiet, capsys):
    rc, err = _finetune(["--model.model_name", "testing:gpt2", "--data.dataset", "reviews.csv"], capsys)
    assert rc == 2
    assert err == (
        "pi-lightning finetune: error: No such data file: reviews.csv (resolved to "
        f"{quiet / 'reviews.csv'}). Give a built-in dataset (rotten_tomatoes, imdb) or a .csv / .jsonl file "
        "with text and label columns.\n"
    )


def test_data_file_columns_are_checked_first(quiet, capsys):
    (quiet / "reviews.csv").write_text("review,stars\ngreat,1\n", encoding="utf-8")
    rc, err = _finetune(["--data.dataset", "reviews.csv"], capsys)
    assert rc == 2
    assert err == (
        "pi-lightning finetune: error: reviews.csv has no column(s) ['text', 'label']; its columns "
        "are ['review', 'stars']. Name them with --data.text_column / --data.label_column.\n"
    )


def test_model_and_data_resolution(tmp_path, monkeypatch):
    assert resolve_model_name("testing:llama") == "built-in"
    with pytest.raises(
        ModelNotFoundError, match=f"^Unknown built-in model 'testing:bert': expected one of {BUILTINS}.$"
    ):
        resolve_model_name("testing:bert")
    with pytest.raises(
        ModelNotFoundError,
        match=r"is a local folder without a config\.json: give a folder written by save_pretrained",
    ):
        resolve_model_name(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_name(str(tmp_path)) == "local folder"
    monkeypatch.setenv("PI_LIGHTNING_CACHE", str(tmp_path / "cache"))
    assert default_model_dir() == tmp_path / "cache" / "smollm2-135m-instruct"
    with pytest.raises(ModelNotFoundError, match="not a valid hub id"):
        resolve_model_name("two  spaces/x")
    (tmp_path / "rows.jsonl").write_text('{"text": "fine", "label": 1}\n')
    assert check_data_source(tmp_path / "rows.jsonl") == "file"
    (tmp_path / "rows.txt").write_text("fine\n")
    with pytest.raises(
        DataSourceError,
        match=r"^Unsupported data file 'rows.txt': expected a .csv, .jsonl or .parquet file.$",
    ):
        check_data_source(tmp_path / "rows.txt")
    with pytest.raises(DataSourceError, match=r"\(is a folder\)"):
        check_data_source(tmp_path)


def test_report_from_checkpoint(tmp_path, capsys):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from pi_lightning.callbacks import AttributionMonitor
    from pi_lightning.testing import tiny_classifier, tiny_tokenizer, toy_sentiment
    from pi_lightning.training import TextClassifier, TextDataModule

    assert main(["report", str(tmp_path / "none.ckpt")]) == 2
    assert (
        capsys.readouterr().err
        == f"pi-lightning report: error: no such checkpoint file: {tmp_path / 'none.ckpt'}\n"
    )
    tok = tiny_tokenizer("gpt2")
    probe = toy_sentiment(3, seed=3)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[
            AttributionMonitor(tok, probe, "sp-pi", metrics=["as_auc"]),
            ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True),
        ],
    )
    data = toy_sentiment(16, seed=1)
    trainer.fit(
        TextClassifier(tiny_classifier("gpt2", tokenizer=tok)), datamodule=TextDataModule(tok, data, data)
    )
    assert main(["report", str(tmp_path / "ck" / "last.ckpt"), "-o", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().out == f"HTML report: {tmp_path / 'r.html'}\n"
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count("<span title=") >= sum(len(t.split()) for t in probe[0])


def test_report_from_a_run_folder_without_checkpoint(tmp_path, capsys, monkeypatch):
    """The default job saves no checkpoint: HTMLReport's report_state.pt is enough for `report FOLDER`
    (the validation accuracies included), and a folder with neither says how to get one."""
    import lightning.pytorch as pl

    from pi_lightning.callbacks import AttributionMonitor, HTMLReport, html_report
    from pi_lightning.cli import report
    from pi_lightning.testing import tiny_classifier, tiny_tokenizer, toy_sentiment
    from pi_lightning.training import TextClassifier, TextDataModule

    assert report.REPORT_STATE == html_report.REPORT_STATE
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no report_state.pt and no .ckpt file under" in err
    assert "--trainer.enable_checkpointing true" in err
    tok = tiny_tokenizer("gpt2")
    probe = toy_sentiment(3, seed=3)
    run = tmp_path / "run"
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=run,
        callbacks=[AttributionMonitor(tok, probe, "sp-pi", metrics=["as_auc"]), html_cb := HTMLReport()],
    )
    data = toy_sentiment(16, seed=1)
    trainer.fit(
        TextClassifier(tiny_classifier("gpt2", tokenizer=tok)), datamodule=TextDataModule(tok, data, data)
    )
    assert not list(run.rglob("*.ckpt")) and (run / "pi_lightning" / "report_state.pt").is_file()
    # the validation accuracies travel in the state, so the rebuilt page plots them too
    import pi_lightning.reporting.html as html_module

    plotted = []
    real = html_module.write_report
    monkeypatch.setattr(
        html_module, "write_report", lambda *a, **k: plotted.append(list(k["accuracy"])) or real(*a, **k)
    )
    assert html_cb.accuracy and html_cb.accuracy[0]["step"] == 1
    assert main(["report", str(run), "-o", str(tmp_path / "again.html")]) == 0
    assert plotted == [html_cb.accuracy]
    assert capsys.readouterr().out == f"HTML report: {tmp_path / 'again.html'}\n"
    page = (tmp_path / "again.html").read_text(encoding="utf-8")
    first = (run / "pi_lightning" / "report.html").read_text(encoding="utf-8")
    # Same probe examples highlighted with the same scores as the page written at the end of fit.
    spans = re.findall(r"<span title=[^>]*>[^<]*</span>", first)
    assert spans and all(x in page for x in spans)


@pytest.mark.slow
def test_wheel_ships_the_command_and_its_configs(tmp_path):
    """The built wheel holds the console entry point and the finetune configs (package data)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("pi_lightning-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        for config in ("default", "fast"):
            shipped = zf.read(f"pi_lightning/cli/configs/{config}.yaml").decode()
            assert shipped == (ROOT / "pi_lightning" / "cli" / "configs" / f"{config}.yaml").read_text()
    assert "pi-lightning = pi_lightning.cli:main" in entry_points
    assert {
        "pi_lightning/cli/__init__.py",
        "pi_lightning/cli/finetune.py",
        "pi_lightning/cli/report.py",
    } <= names


def test_readme_quickstart_is_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(commands) == 2
    assert commands[0].startswith("pip install ") and commands[0].endswith("&& pi-lightning finetune")
    ci_last = (ROOT / ".ci" / "run").read_text().rstrip("\n").splitlines()[-1]
    assert ci_last == commands[1]


def test_names_given_on_the_command_line_fail_before_lightning_is_imported(tmp_path):
    code = (
        "import sys; from pi_lightning.cli import main; rc = main(['finetune', '--data.dataset', "
        "'missing.jsonl']); print(rc, 'lightning.pytorch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=120,
    )
    assert out.stdout.split() == ["2", "False"]
    assert out.stderr == (
        "pi-lightning finetune: error: No such data file: missing.jsonl (resolved to "
        f"{tmp_path / 'missing.jsonl'}). Give a built-in dataset (rotten_tomatoes, imdb) or a .csv / .jsonl "
        "file with text and label columns.\n"
    )
