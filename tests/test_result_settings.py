"""Results carry their settings: every attribution records what it was made with, an attributor is
rebuilt from that record (or from an explain job's job.json), and the shortcut check reads it."""

from __future__ import annotations

import json

import pytest
import torch

from pi_lightning.attributors import attributor_from_settings, available_methods, get_attributor
from pi_lightning.attributors.base import resolve_method_settings
from pi_lightning.jobs import (
    counterfactual_check,
    explain_dataset,
    load_attributor,
    load_results,
    mine_shortcuts,
)

FAST = {
    "mp-pi": {"budget": 8, "seed": 3},
    "kernel-shap": {"budget": 8},
    "ig": {"budget": 4},
    "udig": {"budget": 4},
}


@pytest.mark.parametrize("method", ["sp-pi", "mp-pi", "random", "ig"])
def test_every_result_records_its_settings_and_rebuilds_its_attributor(gpt2_model, gpt2_tok, method):
    kwargs = {**FAST.get(method, {}), "template": "Review: {text}", "mask": "...", "granularity": "word"}
    att = get_attributor(method, gpt2_model, gpt2_tok, **kwargs)
    [a] = att.attribute(["a good movie , really"], target=1)
    assert a.settings == att.settings == resolve_method_settings(method, kwargs)
    for key, value in kwargs.items():
        assert a.settings[key] == value
    assert a.settings["max_tokens"] == 8192 and a.settings["output"] == "prob"  # defaults filled in
    again = attributor_from_settings(a.method, a.settings, gpt2_model, gpt2_tok)
    [b] = again.attribute(["a good movie , really"], target=1)
    assert type(again) is type(att) and again.settings == att.settings
    torch.testing.assert_close(a.scores, b.scores)
    assert a.forward_passes == b.forward_passes  # the budget actually run, recorded per result


def test_every_registered_method_records_a_setting_for_each_constructor_argument(gpt2_model, gpt2_tok):
    from pi_lightning.attributors.base import method_settings

    for method in available_methods():
        att = get_attributor(method, gpt2_model, gpt2_tok, **FAST.get(method, {}))
        assert sorted(att.settings) == method_settings(method), method
    with pytest.raises(ValueError, match="Unknown setting 'budjet'"):
        attributor_from_settings("mp-pi", {"budjet": 3}, gpt2_model, gpt2_tok)


def test_job_spec_rebuilds_its_attributor_and_the_check_reads_the_rows_settings(
    tmp_path, gpt2_model, gpt2_tok
):
    texts = ["great fun", "dull and bland", "fun cast", "bland plot"] * 3
    kwargs = {"template": "Review: {text} Verdict:", "mask": "...", "budget": 8, "seed": 1}
    explain_dataset(
        gpt2_model, gpt2_tok, texts, tmp_path, method="mp-pi", method_kwargs=kwargs, enable_progress_bar=False
    )
    rows = load_results(tmp_path)
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["settings"] == rows[0].settings == resolve_method_settings("mp-pi", kwargs)
    att = load_attributor(tmp_path, gpt2_model, gpt2_tok)
    again = att.attribute([r.text for r in rows[:3]], target=[r.target for r in rows[:3]])
    for r, a in zip(rows, again, strict=False):
        assert a.scores.tolist() == pytest.approx(r.scores, abs=1e-9)

    # the check is told nothing: it reads the template and mask from the rows (told another template,
    # it finds predictions that are not the job's)
    report = counterfactual_check(
        mine_shortcuts(rows, min_count=2, alpha=0.99), rows, gpt2_model, gpt2_tok, top=1
    )
    assert report.settings["checked"] == 1
    with pytest.raises(ValueError, match="check the job's model, adapter, template and mask"):
        counterfactual_check(
            mine_shortcuts(rows, min_count=2, alpha=0.99),
            rows,
            gpt2_model,
            gpt2_tok,
            top=1,
            template="{text}",
        )
