"""benchmarks/long_texts.py: the report is right on a cache whose answers are known, the budget MP-PI
needs is interpolated exactly where error falls as a power of the budget, and the cache is resumable
(a second run adds nothing, more texts add only theirs, shards merge, another model is refused)."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from benchmarks import long_texts

TINY = ["--model", "testing:gpt2", "--adapter", "none", "--threads", "1"]


def _cache(
    errors: dict[tuple[str, str], list[float]], n: int = 10, texts: int = 6
) -> tuple[dict, np.ndarray]:
    """A cache of ``texts`` texts of length n whose method vectors sit at known relative squared errors
    from an exact reference (se = 0): the method's vector is ref + d with ||d||² = e ||ref||²."""
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(texts):
        ref = rng.normal(size=n)
        runs = {}
        for (m, label), errs in errors.items():
            d = rng.normal(size=n)
            d *= math.sqrt(errs[i] * np.sum(ref**2)) / np.linalg.norm(d)
            runs[f"{m}|{label}|0"] = {"phi": (ref + d).tolist(), "passes": 10, "seconds": 0.1}
        entries[f"test/{n}/{i}"] = {
            "split": "test",
            "n": n,
            "index": i,
            "text": f"text {i}",
            "target": 1,
            "reference": {"phi": ref.tolist(), "se": [0.0] * n, "walks": 40},
            "runs": runs,
        }
    return {"version": 1, "setup": {}, "texts": entries, "runs": []}, ref


def test_report_on_known_errors():
    mp = {"2n": [0.4] * 6, "8n/3": [0.3] * 6, "8n": [0.1] * 6}
    errors = {("mp-pi", b): e for b, e in mp.items()}
    errors[("kernel-shap", "2n")] = [0.8, 0.9, 0.7, 0.8, 0.9, 0.85]
    errors[("kernel-shap", "8n")] = [0.3] * 6  # MP-PI reaches it at exactly 8n/3
    errors[("mp-pi-shapley", "2n")] = [0.5] * 6
    errors[("mp-pi-shapley", "8n")] = [0.05] * 6
    cache, _ = _cache(errors)
    # A seventh text still in progress (one cell run, far off): counted aside, in no row.
    partial = json.loads(json.dumps(cache["texts"]["test/10/0"]))
    partial["runs"] = {"mp-pi|2n|0": {**partial["runs"]["mp-pi|2n|0"], "phi": [100.0] * 10}}
    cache["texts"]["test/10/6"] = {**partial, "index": 6}
    rep = long_texts.render_report(cache, "test", Fraction(8, 3), boot=200)
    assert rep["texts_per_length"] == {10: 6} and rep["reference_noise"] == {10: 0.0}
    assert rep["texts_incomplete"] == {10: 1}
    by = {(r["method"], r["budget"]): r for r in rep["summary"]}
    for key, errs in errors.items():
        assert by[key]["rel_err"] == pytest.approx(np.mean(errs)) and by[key]["texts"] == 6
    tests = {(t["a"], t["b"]): t for t in rep["tests"]}
    # MP-PI closer than Kernel SHAP on every text at 2n: the smallest two-sided p of 6 pairs.
    t = tests[("mp-pi 2n", "kernel-shap 2n")]
    assert t["a_closer_share"] == 1.0 and t["p"] == pytest.approx(0.03125)
    # P* is the challenger: worse at 2n on every text, better at 8n.
    assert tests[("mp-pi-shapley 2n", "mp-pi 2n")]["a_closer_share"] == 0.0
    assert tests[("mp-pi-shapley 8n", "mp-pi 8n")]["a_closer_share"] == 1.0
    assert ("mp-pi 8n/3", "kernel-shap 8n") in tests
    [moon] = rep["moonshot"]
    assert moon["mp_pi_budget_needed"] == pytest.approx(8 / 3)
    assert moon["share_of_kernel_shap_passes"] == pytest.approx(1 / 3)
    setup = {"model": "m", "adapter": None, "adapter_sha256": None, "template": "{text}", "dtype": "fp32"}
    md = long_texts._markdown({**cache, "setup": setup}, rep, Path("long_texts"))
    assert "n = 10: 6" in md and "0.33" in md


def test_budget_for_error_interpolates_and_censors():
    # Error proportional to 1 / budget: the crossing of any target is exact in log-log.
    budgets = [2, 8 / 3, 8]
    errors = [1 / b for b in budgets]
    assert long_texts.budget_for_error(budgets, errors, 1 / 5) == pytest.approx(5)
    assert long_texts.budget_for_error(budgets, errors, 1.0) == 0.0  # already below at 2n
    assert long_texts.budget_for_error(budgets, errors, 0.01) == math.inf  # not reached by 8n
    # A noise-corrected mean at or below 0 counts as reached.
    assert long_texts.budget_for_error([2, 8], [0.5, -0.1], 0.2) < 8


def test_cache_is_resumable_and_checks_its_setup(tmp_path):
    args = [*TINY, "--lengths", "5", "--permutations", "8", "--budgets", "2", "--out", str(tmp_path)]
    args += ["--methods", "mp-pi,kernel-shap"]
    long_texts.main([*args, "--texts", "2", "--shard", "1/2"])  # text 1 only
    long_texts.main([*args, "--texts", "2", "--shard", "0/2"])  # text 0 beside it
    path = tmp_path / "long_texts.json"
    cache = json.loads(path.read_text())
    assert sorted(cache["texts"]) == ["test/5/0", "test/5/1"] and len(cache["runs"]) == 2
    entry = cache["texts"]["test/5/0"]
    # mp-pi at 2n and at the moonshot budget ceil(8 * 5 / 3) = 14, kernel-shap at 2n.
    assert sorted(entry["runs"]) == ["kernel-shap|2n|0", "mp-pi|2n|0", "mp-pi|8n/3|0"]
    ref = np.asarray(entry["reference"]["phi"])
    # Efficiency holds per permutation walk: the reference sums to f(full) - f(empty).
    assert ref.sum() == pytest.approx(entry["reference"]["f_full"] - entry["reference"]["f_empty"], abs=1e-9)
    # Per-text seeds: no two texts share a draw.
    assert entry["runs"]["mp-pi|2n|0"]["seed"] != cache["texts"]["test/5/1"]["runs"]["mp-pi|2n|0"]["seed"]

    before = path.read_text()
    long_texts.main([*args, "--texts", "2"])  # nothing left to do: the cache is unchanged
    assert path.read_text() == before
    rep = long_texts.main([*args, "--texts", "3"])  # one more text, the first two untouched
    cache = json.loads(path.read_text())
    assert sorted(cache["texts"]) == ["test/5/0", "test/5/1", "test/5/2"]
    assert cache["texts"]["test/5/0"] == json.loads(before)["texts"]["test/5/0"]
    assert rep["texts_per_length"] == {5: 3}
    assert (tmp_path / "long_texts.md").read_text().count("n = 5: 3") == 1

    with pytest.raises(ValueError, match="another setup"):
        long_texts.main([*args, "--texts", "1", "--template", "Film: {text}"])
    with pytest.raises(ValueError, match="whole multiples"):
        long_texts.main([*args, "--methods", "shap-permutation", "--budgets", "8/3"])
    with pytest.raises(ValueError, match="--shard"):
        long_texts.main([*args, "--shard", "2/2"])


def test_import_reference_only_of_the_same_game(tmp_path):
    """An earlier shapley_accuracy.py reference is taken when it sums to this model's f(full) - f(empty),
    and refused (with a warning, a new reference computed instead) when it does not."""
    args = [*TINY, "--lengths", "5", "--permutations", "8", "--budgets", "2", "--methods", "mp-pi"]
    args += ["--moonshot", "none", "--texts", "2"]
    long_texts.main([*args, "--out", str(tmp_path / "a")])
    cache = json.loads((tmp_path / "a" / "long_texts.json").read_text())
    refs = []
    for i, scale in ((0, 1.0), (1, 1.5)):  # text 1's reference scaled: no longer of this game
        e = cache["texts"][f"test/5/{i}"]
        refs.append(
            {
                "text": e["text"],
                "n": 5,
                "target": e["target"],
                "reference": "permutations",
                "full": [scale * v for v in e["reference"]["phi"]],
                "se": e["reference"]["se"],
                "passes": e["reference"]["passes"],
                "seconds": e["reference"]["seconds"],
            }
        )
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"permutations": 8, "references": refs}))
    with pytest.warns(UserWarning, match="another model"):
        long_texts.main([*args, "--out", str(tmp_path / "b"), "--import-reference", str(old)])
    new = json.loads((tmp_path / "b" / "long_texts.json").read_text())["texts"]
    assert "imported_from" in new["test/5/0"]["reference"] and new["test/5/0"]["reference"]["walks"] == 8
    assert new["test/5/0"]["reference"]["phi"] == cache["texts"]["test/5/0"]["reference"]["phi"]
    assert "imported_from" not in new["test/5/1"]["reference"]
