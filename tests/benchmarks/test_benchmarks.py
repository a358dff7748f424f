"""The benchmark scripts run end to end at their smallest setting on the tiny GPT-2 and write their files.

Correctness only (no timing assertions): the files exist and parse, every requested method has a
row, the exact Shapley references satisfy efficiency, and the figures are finite where defined.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import (
    _common,
    faithfulness_table,
    model_accuracy,
    scaling,
    shapley_accuracy,
    train_settings,
    value_function,
)
from pi_lightning.data import load_movie_reviews
from pi_lightning.features import Featurizer
from pi_lightning.models import load_tokenizer
from pi_lightning.testing import in_range

TINY = ["--model", "testing:gpt2", "--adapter", "none", "--threads", "1"]


def _files(out: Path, stem: str, exts) -> dict[str, Path]:
    paths = {e: out / f"{stem}.{e}" for e in exts}
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0, f"{p} was not written"
    return paths


def test_model_accuracy_counts_correct_predictions(tmp_path, monkeypatch):
    """The accuracy is the share of texts whose argmax matches the label (checked by recomputing it)."""
    res = model_accuracy.main([*TINY, "--examples", "6", "--out", str(tmp_path), "--tag", "t"])
    assert res["examples"] == 6 and 0.0 <= res["accuracy"] <= 1.0
    assert json.loads((tmp_path / "model_accuracy_t.json").read_text())["accuracy"] == res["accuracy"]
    from pi_lightning.data import load_movie_reviews

    y = torch.tensor(load_movie_reviews("rotten_tomatoes", "test").labels[:6])
    # A model that always says class 1 scores the share of positive labels.
    monkeypatch.setattr(
        model_accuracy.ClassifierAdapter,
        "final_logits",
        lambda self, seqs: torch.tensor([[0.0, 1.0]] * len(seqs)),
    )
    res = model_accuracy.main([*TINY, "--examples", "6", "--out", str(tmp_path)])
    assert res["accuracy"] == pytest.approx(float((y == 1).double().mean()))
    with pytest.raises(ValueError, match="--examples"):
        model_accuracy.main([*TINY, "--examples", "-1", "--out", str(tmp_path)])


def test_cosine_is_clipped_to_one():
    """Parallel vectors whose rounded cosine lands above 1 (which depends on the BLAS kernel) report 1."""
    rng = np.random.default_rng(0)
    vecs = rng.random((2000, 5))
    # (2000,) unclipped cosines of each vector with itself, as the arithmetic rounds them here
    raw = np.einsum("ij,ij->i", vecs, vecs) / np.linalg.norm(vecs, axis=1) ** 2
    assert (raw > 1).any(), "no vector rounded above 1: the test would not exercise the clip"
    assert all(_common.cosine(v, 2.0 * v) <= 1.0 for v in vecs[raw > 1])
    assert _common.cosine(vecs[0], -vecs[0]) >= -1.0 and math.isnan(_common.cosine(vecs[0], 0 * vecs[0]))


@pytest.mark.slow
def test_faithfulness_table_writes_every_method(tmp_path):
    methods = "random,sp-pi,kernel-shap,mp-pi,at2"
    res = faithfulness_table.main(
        [
            *TINY,
            "--examples",
            "2",
            "--max-features",
            "8",
            "--methods",
            methods,
            "--at2-fit",
            "2",
            "--out",
            str(tmp_path),
            "--tag",
            "t",
        ]
    )
    paths = _files(tmp_path, "faithfulness_rotten_tomatoes_word_t", ("json", "csv", "md", "png"))
    data = json.loads(paths["json"].read_text())
    assert list(data["rows"]) == methods.split(",")
    assert data["examples"] == 2 and data["features_max"] <= 8
    for name, row in data["rows"].items():
        assert in_range(row["as_auc"]) and in_range(row["ias_auc"]), name
        assert row["cost"] and math.isfinite(row["seconds_per_example"])
    # The ordering verdict is consistent with the rows it summarises.
    as_rows = {k: r["as_auc"] for k, r in data["rows"].items()}
    assert data["ordering"]["as_auc"]["mp-pi"]["best"] == (as_rows["mp-pi"] >= max(as_rows.values()))
    cheap = {k: v for k, v in as_rows.items() if data["rows"][k]["cost"] in ("0", "1x")}
    assert data["ordering"]["as_auc"]["sp-pi"]["best"] == (cheap["sp-pi"] >= max(cheap.values()))
    with open(paths["csv"]) as fh:
        assert [r["name"] for r in csv.DictReader(fh)] == methods.split(",")
    md = paths["md"].read_text()
    assert "| MP-PI | 2n (" in md and "Command: `python -m benchmarks.faithfulness_table" in md
    assert res["rows"]["at2"]["at2_fit_examples"] == 2


def test_faithfulness_table_sentence_level_and_bad_method(tmp_path):
    res = faithfulness_table.main(
        [
            *TINY,
            "--dataset",
            "imdb",
            "--examples",
            "1",
            "--max-features",
            "3",
            "--methods",
            "sp-pi,a-last",
            "--out",
            str(tmp_path),
        ]
    )
    assert res["granularity"] == "sentence" and 2 <= res["features_max"] <= 3
    _files(tmp_path, "faithfulness_imdb_sentence", ("json", "csv", "md", "png"))
    with pytest.raises(ValueError, match="Unknown method"):
        faithfulness_table.main([*TINY, "--methods", "sp-pi,nope", "--out", str(tmp_path)])


def test_exact_references_are_shapley_values(gpt2_tok, gpt2_model):
    from pi_lightning.attributors import MPPI
    from pi_lightning.features import Featurizer
    from pi_lightning.inference import ClassifierAdapter
    from pi_lightning.masking import Masker

    adapter = ClassifierAdapter(gpt2_model)
    mp = MPPI(gpt2_model, gpt2_tok, budget=8192, seed=0, mask="...")
    [f] = mp.featurize(["a good movie , really fun"])
    ref = shapley_accuracy.exact_references(adapter, Masker(gpt2_tok, "..."), f, 1)
    # Efficiency: both games sum to f(N) - f(empty); they share both end points here (no template).
    assert ref["full"].sum() == pytest.approx(ref["f_full"] - ref["f_empty"], abs=1e-9)
    assert ref["prefix"].sum() == pytest.approx(ref["f_full"] - ref["f_empty"], abs=1e-9)
    # With the "..." mask the two games differ (masked tail tokens still reach the last position).
    assert not np.allclose(ref["full"], ref["prefix"], atol=1e-4)
    # MP-PI, with a budget far beyond the 2^6 coalitions, converges to the prefix game's values.
    [a] = mp.attribute([f], target=1)
    assert _common.cosine(a.scores.numpy(), ref["prefix"]) > 0.98
    # Removing features (no mask tokens) makes a coalition's input end at its last active feature:
    # the two games coincide, which checks where the prefix game is read.
    g = Featurizer(gpt2_tok, "word", "Review: {text}")("a good movie , really fun")
    ref = shapley_accuracy.exact_references(adapter, Masker(gpt2_tok, "remove"), g, 1)
    assert np.allclose(ref["full"], ref["prefix"], atol=1e-6)


@pytest.mark.slow
def test_shapley_accuracy_writes_all_peers(tmp_path):
    pytest.importorskip("shap")
    shapley_accuracy.main(
        [
            *TINY,
            "--inputs",
            "1",
            "--min-features",
            "4",
            "--max-features",
            "5",
            "--budgets",
            "1,4",
            "--seeds",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    paths = _files(tmp_path, "shapley_accuracy", ("json", "csv", "md", "png"))
    data = json.loads(paths["json"].read_text())
    by = {(r["method"], r["budget_multiple"]): r for r in data["summary"]}
    from pi_lightning.attributors.base import available_methods

    ran = [m for m in shapley_accuracy.METHODS if m != "shap-partition" or m in available_methods()]
    assert set(by) == {(m, k) for m in ran for k in (1, 4)}
    assert by[("shap-permutation", 1)]["runs"] == 0  # below one antithetic permutation (2n + 1 passes)
    n = data["n"][0]
    assert by[("captum-kernelshap", 4)]["passes_per_input"] == 4 * n  # one pass per sample, as a user runs it
    for key, r in by.items():
        if r["runs"]:
            assert in_range(r["cos_full"], -1.0) and in_range(r["cos_prefix"], -1.0), key
    assert set(data["goals"]) == {"1n", "4n"}
    assert in_range(data["cos_full_vs_prefix_mean"], -1.0)


@pytest.mark.slow
def test_scaling_writes_series_and_slopes(tmp_path):
    scaling.main(
        [
            *TINY,
            "--pprime-ns",
            "8,16",
            "--ns",
            "4,8",
            "--widths",
            "2,4",
            "--sentences",
            "3",
            "--texts",
            "1",
            "--repeats",
            "1",
            "--reuse",
            "none",
            "--out",
            str(tmp_path),
        ]
    )
    paths = _files(tmp_path, "scaling", ("json", "md", "png"))
    data = json.loads(paths["json"].read_text())
    assert [r["n"] for r in data["p_prime"]] == [8, 16]
    assert [r["n"] for r in data["mppi_by_n"]] == [4, 8]
    assert all(r["n"] == 3 for r in data["mppi_by_length"])
    for r in data["mppi_by_n"] + data["mppi_by_length"]:
        assert r["forward_seconds"] > 0 and r["seconds"] >= r["forward_seconds"] and r["sequences"] > 0
    assert set(data["loglog_slopes"]) == {"seconds_vs_n", "seconds_vs_tokens_fixed_n", "p_prime_seconds_vs_n"}
    assert scaling.loglog_slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="--reuse"):
        scaling.main([*TINY, "--reuse", "bogus", "--out", str(tmp_path)])


def test_common_options_reject_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="pi-lightning finetune"):
        faithfulness_table.main(
            ["--model", "testing:gpt2", "--adapter", str(tmp_path / "missing"), "--out", str(tmp_path)]
        )
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="--device cpu"):
            scaling.main([*TINY, "--device", "cuda", "--out", str(tmp_path)])


def test_train_settings_reports_accuracy_cost_and_gap(tmp_path):
    res = train_settings.main(
        [
            "--model",
            "testing:gpt2",
            "--lora-last-layers",
            "1",
            "--steps",
            "2",
            "--val",
            "8",
            "--gap-examples",
            "3",
            "--head-words",
            " bad",
            " good",
            "--warmup",
            "1",
            "--schedule",
            "cosine",
            "--template",
            "Review: {text}",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert 0 <= res["val_acc"] <= 1 and res["cpu_s_per_step"] > 0 and len(res["loadavg"]) == 3
    exact, fast = res["gap"]["exact"], res["gap"]["fractions_11"]
    assert fast["passes"] < exact["passes"]  # the probe texts have more than 10 words
    assert res["fraction_gap_error"]["max_abs"] == pytest.approx(
        max(abs(a - b) for a, b in zip(exact["per_example"], fast["per_example"], strict=False))
    )
    assert (tmp_path / "train_settings.jsonl").read_text().count("\n") == 1


def test_value_function_compares_both_masks_on_the_same_examples(tmp_path):
    runs = {}
    for mask in ("remove", "..."):
        runs[mask] = faithfulness_table.main(
            [
                *TINY,
                "--examples",
                "6",
                "--max-features",
                "6",
                "--methods",
                "random,sp-pi,mp-pi",
                "--mask",
                mask,
                "--out",
                str(tmp_path),
                "--tag",
                "r" if mask == "remove" else "d",
            ]
        )
    res = value_function.main(
        [
            "--remove",
            str(tmp_path / "faithfulness_rotten_tomatoes_word_r.json"),
            "--dots",
            str(tmp_path / "faithfulness_rotten_tomatoes_word_d.json"),
            "--out",
            str(tmp_path),
        ]
    )
    _files(tmp_path, "value_function", ("json", "md", "png"))
    pe = runs["remove"]["per_example"]
    margin = np.mean(np.array(pe["sp-pi"]["as_auc"]) - np.array(pe["random"]["as_auc"]))
    assert res["masks"]["remove"]["sp-pi"]["as_margin"] == pytest.approx(margin)
    assert 0 <= res["margin_remove_vs_dots"]["mp-pi"]["as_p"] <= 1
    assert set(res["masks"]) == {"remove", "..."}


def test_permutation_reference_matches_exact_shapley(gpt2_model, gpt2_tok):
    """The long-text reference (antithetic permutations of the removal game) against enumeration."""
    from pi_lightning.features import Featurizer
    from pi_lightning.inference import ClassifierAdapter
    from pi_lightning.masking import Masker

    adapter, masker = ClassifierAdapter(gpt2_model), Masker(gpt2_tok, "remove")
    f = Featurizer(gpt2_tok, "word", "Review: {text}")("a good movie , really fun")
    exact = shapley_accuracy.exact_references(adapter, masker, f, 1)
    mc = shapley_accuracy.permutation_reference(adapter, masker, f, 1, permutations=3000, seed=0)
    assert mc["full"].sum() == pytest.approx(
        exact["f_full"] - exact["f_empty"], abs=1e-9
    )  # efficiency per walk
    assert _common.cosine(mc["full"], exact["full"]) > 0.99
    np.testing.assert_allclose(mc["full"], exact["full"], atol=0.1 * np.abs(exact["full"]).max())


def test_relative_error_removes_the_reference_noise():
    """Against a noisy reference, the raw relative error of an estimate is inflated by the reference's
    variance; the corrected one is unbiased for the error against the true values (known answer)."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=30)
    estimate = truth + rng.normal(scale=0.2, size=30)  # fixed estimate, true rel. error known
    true_rel = float(np.sum((estimate - truth) ** 2) / np.sum(truth**2))
    se = np.full(30, 0.3)  # the reference's standard error per feature
    raw, corrected = [], []
    for _ in range(4000):
        ref = truth + rng.normal(scale=se)
        sq, rel = shapley_accuracy.relative_error(estimate, ref, se)
        raw.append(sq / np.sum(ref**2))
        corrected.append(rel)
    assert np.mean(raw) > 2 * true_rel  # the noise dominates the raw figure
    assert np.mean(corrected) == pytest.approx(true_rel, rel=0.1)
    # An exact reference (no se) gives the plain relative squared error.
    assert shapley_accuracy.relative_error(estimate, truth)[1] == pytest.approx(true_rel)


def test_paired_tests_pair_the_same_inputs_and_seeds():
    recs = [
        {"n": 20, "budget_multiple": 2, "method": m, "input": i, "seed": s, "sq_err": e, "rel_err": e}
        for i in range(6)
        for s in range(2)
        for m, e in (("mp-pi", 0.1 + 0.01 * i), ("kernel-shap", 0.2 + 0.01 * i))
    ]
    recs.append(
        {
            "n": 20,
            "budget_multiple": 2,
            "method": "kernel-shap",
            "input": 9,
            "seed": 0,
            "sq_err": 0.0,
            "rel_err": 0.0,
        }
    )  # no MP-PI partner: left out
    [t] = shapley_accuracy.paired_tests(recs)
    assert t["pairs"] == 12 and t["baseline_better_share"] == 1.0
    assert t["rel_err_baseline"] == pytest.approx(0.125) and t["p"] < 0.001


def test_shapley_accuracy_long_text_mode(tmp_path):
    res = shapley_accuracy.main(
        [
            *TINY,
            "--inputs",
            "1",
            "--min-features",
            "14",
            "--max-features",
            "20",
            "--budgets",
            "1",
            "--seeds",
            "1",
            "--methods",
            "mp-pi,kernel-shap",
            "--reference",
            "permutations",
            "--permutations",
            "40",
            "--template",
            "Review: {text}",
            "--out",
            str(tmp_path),
            "--tag",
            "long",
        ]
    )
    assert res["references"][0]["n"] >= 14 and res["references"][0]["reference"] == "permutations"
    [test] = res["paired_tests"]  # MP-PI against Kernel SHAP at 1n, on the one input
    assert test["method"] == "kernel-shap" and test["pairs"] == 1
    assert all(math.isfinite(r["rel_err"]) for r in res["summary"] if r["runs"])
    with pytest.raises(ValueError, match="removal game"):
        shapley_accuracy.main([*TINY, "--reference", "permutations", "--mask", "...", "--out", str(tmp_path)])


def test_faithfulness_table_rounds_subset_and_paired_tests(tmp_path):
    """Results are written after every round; subset methods run on the first examples only and are
    paired with the others on those; MP-PI and SP-PI get a p-value against every other method."""
    res = faithfulness_table.main(
        [
            *TINY,
            "--examples",
            "4",
            "--max-features",
            "6",
            "--methods",
            "random,sp-pi,mp-pi,kernel-shap",
            "--subset-methods",
            "kernel-shap",
            "--subset-examples",
            "2",
            "--chunk",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert not res["partial"] and res["examples"] == 4
    assert {m: r["examples"] for m, r in res["rows"].items()} == {
        "random": 4,
        "sp-pi": 4,
        "mp-pi": 4,
        "kernel-shap": 2,
    }
    assert len(res["per_example"]["kernel-shap"]["as_auc"]) == 2
    assert set(res["wilcoxon"]["mp-pi"]) == {"random", "sp-pi", "kernel-shap"}
    assert set(res["wilcoxon"]["sp-pi"]) == {"random", "mp-pi", "kernel-shap"}
    assert res["wilcoxon"]["mp-pi"]["kernel-shap"]["as_auc"]["pairs"] == 2
    d = res["wilcoxon"]["sp-pi"]["random"]["ias_auc"]["difference"]
    pe = res["per_example"]
    assert d == pytest.approx(np.mean(np.array(pe["sp-pi"]["ias_auc"]) - np.array(pe["random"]["ias_auc"])))
    md = (tmp_path / "faithfulness_rotten_tomatoes_word.md").read_text()
    assert "p vs MP-PI" in md and "Kernel SHAP ran on the first 2 examples only" in md
    # The gap (AS - IAS) is tested pairwise too, and shown with its difference.
    g = res["wilcoxon"]["mp-pi"]["random"]["gap"]["difference"]
    gap = {m: np.array(pe[m]["as_auc"]) - np.array(pe[m]["ias_auc"]) for m in ("mp-pi", "random")}
    assert g == pytest.approx(np.mean(gap["mp-pi"] - gap["random"]))
    assert "| MP-PI − Random | 4 |" in md  # noqa: RUF001 - a minus sign
    with pytest.raises(ValueError, match="--chunk"):
        faithfulness_table.main([*TINY, "--chunk", "0", "--out", str(tmp_path)])


def test_faithfulness_table_split_skip_and_seeded_peers(tmp_path):
    """--split picks the data split, --skip leaves out the first eligible texts, the texts used are
    recorded; every stochastic peer runs with its per-text seeds and the --budget given."""
    base = [*TINY, "--examples", "3", "--max-features", "8", "--out", str(tmp_path)]
    methods = "random,sp-pi,shap-permutation,shap-partition,kernel-shap"
    val = faithfulness_table.main([*base, "--split", "validation", "--methods", methods, "--budget", "3n"])
    assert val["split"] == "val" and val["selection"]["split"] == "val"
    assert len(val["selection"]["texts"]) == 3
    featurizer = Featurizer(load_tokenizer("testing:gpt2"), "word", "{text}")
    first, _ = faithfulness_table.select_texts("rotten_tomatoes", "val", "word", 8, 5, featurizer)
    assert val["selection"]["texts"] == first[:3]
    skipped = faithfulness_table.main([*base, "--split", "val", "--skip", "2", "--methods", "sp-pi"])
    assert skipped["selection"]["texts"] == first[2:5]
    test = faithfulness_table.main([*base, "--methods", "sp-pi", "--tag", "t"])
    assert test["split"] == "test" and not set(test["selection"]["texts"]) & set(first)
    rows = val["rows"]
    n_mean = val["features_mean"]
    # Kernel SHAP and Partition run their budget (3n passes per text, 2^n when smaller).
    assert rows["kernel-shap"]["forward_passes_per_example"] <= 3 * n_mean + 1e-9
    assert rows["shap-partition"]["forward_passes_per_example"] <= 3 * n_mean + 1e-9
    assert faithfulness_table._method_kwargs("shap-permutation", 4, "3n") == {"seed": 4, "budget": "3n"}
    assert faithfulness_table._method_kwargs("shap-partition", 4, None) == {}


def test_default_job_texts_read_the_adapters_config(tmp_path):
    """The texts the adapter's training job used (its validation subset and test probes) are read from
    the config.yaml beside the adapter, and left out of the selection."""
    (tmp_path / "adapter").mkdir()
    (tmp_path / "config.yaml").write_text(
        "data:\n  dataset: rotten_tomatoes\n  n_val: 3\n  n_probe: 2\n  probe_max_words: 6\n  seed: 0\n"
    )
    used = faithfulness_table.default_job_texts(str(tmp_path / "adapter"), "rotten_tomatoes")
    val = load_movie_reviews("rotten_tomatoes", "val").texts[:3]
    probes = [t for t in load_movie_reviews("rotten_tomatoes", "test").texts if len(t.split()) <= 6][:2]
    assert used == {" ".join(t.split()) for t in (*val, *probes)}
    assert faithfulness_table.default_job_texts(str(tmp_path / "adapter"), "imdb") == set()
    assert faithfulness_table.default_job_texts(None, "rotten_tomatoes") == set()
    featurizer = Featurizer(load_tokenizer("testing:gpt2"), "word", "{text}")
    kept, _ = faithfulness_table.select_texts(
        "rotten_tomatoes", "test", "word", 6, 4, featurizer, exclude=used
    )
    assert not set(kept) & used


def test_coalition_game_is_the_masked_model(gpt2_model, gpt2_tok):
    from benchmarks._common import coalition_game
    from pi_lightning.features import Featurizer
    from pi_lightning.inference import ClassifierAdapter, transform_outputs
    from pi_lightning.masking import Masker

    adapter, masker = ClassifierAdapter(gpt2_model), Masker(gpt2_tok, "remove")
    f = Featurizer(gpt2_tok, "word", "Review: {text}")("a good movie , really fun")
    Z = np.array([[1, 0, 1, 0, 0, 1], [0] * 6, [1] * 6, [0, 1, 1, 0, 0, 0]], dtype=bool)
    full = coalition_game(adapter, masker, f, 1)(Z.astype(float))  # Captum/shap pass floats
    both = coalition_game(adapter, masker, f, 1, prefix=True)(torch.tensor(Z))
    seqs, _ = masker(f, Z)
    with torch.no_grad():
        direct = [transform_outputs(gpt2_model(torch.tensor([s])).logits[0], "prob")[1].item() for s in seqs]
    np.testing.assert_allclose(full.numpy(), direct, atol=1e-6)
    np.testing.assert_allclose(both[:, 1].numpy(), direct, atol=1e-6)
    # Under removal the prefix game is the full game (causal attention), read at the right positions.
    np.testing.assert_allclose(both[:, 0].numpy(), both[:, 1].numpy(), atol=1e-6)


def _fake_adapter_cache(root: Path, template: str) -> Path:
    folder = root / "benchmark_adapter"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "config.yaml").write_text(f"data:\n  template: '{template}'\n")
    return folder


def test_benchmark_adapter_is_reused_and_gives_the_template(tmp_path, monkeypatch):
    import argparse

    import pi_lightning.cli.finetune as finetune

    monkeypatch.setenv("PI_LIGHTNING_CACHE", str(tmp_path))
    folder = _fake_adapter_cache(tmp_path, "Review: {text}")

    def no_training(*_a, **_k):
        raise AssertionError("a cached adapter must not be retrained")

    monkeypatch.setattr(finetune, "run", no_training)
    assert _common.ensure_benchmark_adapter() == folder / "adapter"
    p = argparse.ArgumentParser()
    _common.add_common_args(p)
    assert _common.resolve_template(p.parse_args([])) == "Review: {text}"  # the adapter's own template
    assert _common.resolve_template(p.parse_args(["--template", "{text}!"])) == "{text}!"
    assert _common.resolve_template(p.parse_args(["--adapter", "none"])) == "{text}"
    assert _common.adapter_template(str(tmp_path / "elsewhere" / "adapter")) is None


@pytest.mark.slow
def test_benchmark_adapter_is_trained_once_through_the_finetune_job(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_LIGHTNING_CACHE", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="training it once"):
        adapter = _common.ensure_benchmark_adapter(("--fast",))
    assert adapter == tmp_path / "benchmark_adapter" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert _common.adapter_template(str(adapter)) == "Review: {text}"  # the default job's template
    assert not (tmp_path / "benchmark_adapter.partial").exists()


def test_permutation_reference_reports_its_standard_error(gpt2_model, gpt2_tok):
    from pi_lightning.features import Featurizer
    from pi_lightning.inference import ClassifierAdapter
    from pi_lightning.masking import Masker

    adapter, masker = ClassifierAdapter(gpt2_model), Masker(gpt2_tok, "remove")
    f = Featurizer(gpt2_tok, "word", "Review: {text}")("a good movie , really fun")
    exact = shapley_accuracy.exact_references(adapter, masker, f, 1)
    few = shapley_accuracy.permutation_reference(adapter, masker, f, 1, permutations=40, seed=1)
    many = shapley_accuracy.permutation_reference(adapter, masker, f, 1, permutations=1000, seed=1)
    assert many["rel_se"] < few["rel_se"] and many["cos_ceiling"] > 0 and in_range(many["cos_ceiling"])
    # The error of the estimate is of the size its standard error says (5 SE: no flaky failures).
    assert np.all(np.abs(many["full"] - exact["full"]) <= 5 * many["se"] + 1e-12)


def test_shapley_accuracy_lengths_mode_cuts_texts(tmp_path):
    res = shapley_accuracy.main(
        [
            *TINY,
            "--dataset",
            "imdb",
            "--lengths",
            "6,9",
            "--inputs",
            "1",
            "--budgets",
            "1,2",
            "--seeds",
            "1",
            "--methods",
            "mp-pi,kernel-shap",
            "--reference",
            "permutations",
            "--permutations",
            "20",
            "--template",
            "Review: {text}",
            "--out",
            str(tmp_path),
        ]
    )
    assert [r["n"] for r in res["references"]] == [6, 9]
    assert {r["n"] for r in res["summary"]} == {6, 9}
    for r in res["summary"]:
        assert r["passes_per_input"] <= r["budget_multiple"] * r["n"] + 2, r  # + f(N), f(empty)
    md = (tmp_path / "shapley_accuracy.md").read_text()
    assert "cut to n = 6, 9 words" in md and "standard error" in md


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("baselines_cost", ["--examples", "2"]),
        ("bench_metrics", ["--examples", "2", "--repeats", "1"]),
        ("bench_at2", ["--fit", "2", "--probe", "2", "--masks", "4", "--repeats", "1"]),
        ("mppi_budget", ["--seeds", "1"]),
        ("bench_callbacks", ["--model", "testing:gpt2", "--n-val", "8", "--n-probe", "2", "--repeats", "1"]),
    ],
)
def test_code_path_benchmarks_write_their_figures_with_the_machine_line(script, args, tmp_path):
    """The scripts on benchmarks/_common: common options, machine line and JSON under --out."""
    importlib.import_module(f"benchmarks.{script}").main(
        [*args, "--threads", "1", "--out", str(tmp_path), "--tag", "t"]
    )
    data = json.loads((tmp_path / f"{script}_t.json").read_text())
    assert "CPU cores" in data["machine"] and len(data["load_average_at_start"]) == 3
    assert data["command"].startswith(f"python -m benchmarks.{script}")


def test_faithfulness_table_resumes_an_earlier_run(tmp_path):
    """A run continued from an earlier one's JSON gives the continuing methods the same per-example
    figures as one uninterrupted run (per-text seeds); methods left out keep their earlier examples."""
    base = [*TINY, "--max-features", "6", "--chunk", "2", "--out", str(tmp_path)]
    whole = faithfulness_table.main(
        [*base, "--examples", "6", "--methods", "random,sp-pi,mp-pi", "--tag", "w"]
    )
    faithfulness_table.main([*base, "--examples", "4", "--methods", "random,sp-pi,mp-pi", "--tag", "a"])
    resumed = faithfulness_table.main(
        [
            *base,
            "--examples",
            "6",
            "--methods",
            "random,mp-pi",
            "--resume",
            str(tmp_path / "faithfulness_rotten_tomatoes_word_a.json"),
            "--tag",
            "b",
        ]
    )
    assert resumed["examples"] == 6 and resumed["resumed_from"]["examples"] == 4
    assert {m: r["examples"] for m, r in resumed["rows"].items()} == {"random": 6, "sp-pi": 4, "mp-pi": 6}
    for m in ("random", "mp-pi"):
        np.testing.assert_allclose(resumed["per_example"][m]["as_auc"], whole["per_example"][m]["as_auc"])
        assert resumed["rows"][m]["ias_auc"] == pytest.approx(whole["rows"][m]["ias_auc"])
    np.testing.assert_allclose(resumed["mean_curves"]["mp-pi"]["as"], whole["mean_curves"]["mp-pi"]["as"])
    with pytest.raises(ValueError, match="resume the same run"):
        faithfulness_table.main(
            [*base, "--mask", "...", "--resume", str(tmp_path / "faithfulness_rotten_tomatoes_word_a.json")]
        )


def test_mppi_defensive_compares_mixtures(tmp_path):
    mppi_defensive = importlib.import_module("benchmarks.mppi_defensive")
    res = mppi_defensive.main(
        [
            *TINY,
            "--lengths",
            "6",
            "--texts",
            "1",
            "--seeds",
            "1",
            "--budgets",
            "2",
            "--defensive",
            "0.05,0.7",
            "--permutations",
            "20",
            "--out",
            str(tmp_path),
        ]
    )
    names = [r["method"] for r in res["rows"]]
    assert names == ["mp-pi@0.05", "mp-pi@0.7", "mp-pi shapley S+", "kernel-shap"]
    assert all(math.isfinite(r["rel_err_mean"]) for r in res["rows"])
    # More of P* mixed in evens the weights: a larger effective sample size at n = 40.
    assert mppi_defensive.effective_sample_size(40, 320, 0.7) > 3 * mppi_defensive.effective_sample_size(
        40, 320, 0.05
    )
    assert (tmp_path / "mppi_defensive.json").is_file()


def test_paired_runs_pairs_the_same_examples(tmp_path):
    paired_runs = importlib.import_module("benchmarks.paired_runs")

    def run(mp, rnd):
        return {
            "per_example": {
                "random": {"as_auc": rnd, "ias_auc": rnd},
                "mp-pi": {"as_auc": mp, "ias_auc": [1 - x for x in mp]},
            }
        }

    a = run([0.5, 0.6, 0.7, 0.55, 0.65, 0.6], [0.5] * 6)
    b = run([0.6, 0.7, 0.8, 0.65, 0.75, 0.7], [0.5] * 6)
    rows = paired_runs.compare(a, b, "mp-pi")
    [same] = [r for r in rows if r["metric"] == "as_auc" and r["against"] == "mp-pi"]
    assert same["pairs"] == 6 and same["mean_b"] - same["mean_a"] == pytest.approx(0.1) and same["p"] < 0.05
    with pytest.raises(ValueError, match="not made on the same"):
        paired_runs.compare(a, run([0.6] * 6, [0.4] * 6), "mp-pi")
    with pytest.raises(ValueError, match="no per-example results"):
        paired_runs.compare(a, b, "kernel-shap")


def test_kernelshap_sampler_compares_draws_on_exact_games(tmp_path):
    sampler = importlib.import_module("benchmarks.kernelshap_sampler")
    res = sampler.main(
        [
            *TINY,
            "--texts",
            "1",
            "--min-features",
            "5",
            "--max-features",
            "6",
            "--seeds",
            "3",
            "--budgets",
            "2,8",
            "--out",
            str(tmp_path),
        ]
    )
    assert [(r["budget"], r["draw"]) for r in res["rows"]] == [
        (b, d) for b in ("2n", "8n") for d in ("replacement", "unpaired", "paired")
    ]
    # 8n passes cover every coalition of a 5- or 6-word text: the distinct draws are exact there.
    exact = {r["draw"]: r["relative_error"] for r in res["rows"] if r["budget"] == "8n"}
    assert exact["unpaired"] < 1e-12 and exact["paired"] < 1e-12 and exact["replacement"] > 1e-6
    assert (tmp_path / "kernelshap_sampler.md").is_file() and res["split"] == "val"
