"""`pi-lightning explain --metrics`: the faithfulness of the explained texts, end to end on the tiny model,
against the one evaluator and an independent numpy reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pi_lightning.attributors import get_attributor
from pi_lightning.cli import explain
from pi_lightning.metrics import evaluate_faithfulness
from pi_lightning.models import load_classifier

TEXTS = ["great fun really", "dull and bland", "a fine cast", "the plot is thin"]


def test_explain_metrics_end_to_end(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in zip(TEXTS, [1, 0, 1, 0], strict=True)))
    out = tmp_path / "job"
    argv = [str(data), "--model", "testing:gpt2", "--out", str(out), "--no-progress", "--metrics"]
    argv += [
        "--template",
        "Review: {text}",
        "--method",
        "mp-pi",
        "--option",
        "budget=8",
        "--option",
        "seed=0",
    ]
    assert explain.main(argv) == 0
    printed = capsys.readouterr().out
    assert "faithfulness (mean +- 95% half-width" in printed and "metrics.json" in printed
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["examples"] == 4 and saved["settings"]["template"] == "Review: {text}"

    # reference: the same model and attributions, scored by evaluate_faithfulness, averaged by numpy
    model, tok = load_classifier("testing:gpt2", num_labels=2)
    att = get_attributor("mp-pi", model, tok, template="Review: {text}", budget=8, seed=0, max_tokens=8192)
    atts = att.attribute(TEXTS)
    res = evaluate_faithfulness(atts, att.adapter, att.masker)
    figures = saved["metrics"]
    for name in ("as_auc", "ias_auc", "gap", "log_odds", "comprehensiveness", "sufficiency"):
        values = getattr(res, name).numpy()
        assert figures[name] == pytest.approx(values.mean(), abs=1e-6), name
        assert saved["per_example"][name] == pytest.approx(values.tolist(), abs=1e-6), name
    assert figures["accuracy"] == pytest.approx(np.mean(res.predictions.numpy() == [1, 0, 1, 0]))
    assert saved["per_example"]["id"] == ["0", "1", "2", "3"]
    assert set(saved["curves"]) == {"as", "ias"}


def test_explain_metrics_selection_and_bad_names(tmp_path, capsys):
    out = tmp_path / "job"
    base = ["a good movie", "bad plot", "--model", "testing:gpt2", "--out", str(out), "--no-progress"]
    assert explain.main([*base, "--metrics", "as_auc,ias_auc"]) == 0
    figures = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"as_auc", "ias_auc", "gap"} <= set(figures) and "log_odds" not in figures
    capsys.readouterr()
    assert explain.main([*base, "--metrics", "aopc"]) == 2
    assert "metrics must be None (all) or a non-empty selection" in capsys.readouterr().err
