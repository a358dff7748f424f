"""Paired change between evaluations: the functional math and PairedChange against NumPy/SciPy, its
DDP sync, the verdict and word changes, and the monitor's baseline and gap_change figures."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pi_lightning.metrics import PairedChange
from pi_lightning.metrics.functional import PairedTest, paired_change, paired_test, verdict, word_changes


def _reference(before, after):
    """NumPy/SciPy: mean difference, Student-t 95% half-width, two-sided Wilcoxon signed-rank p."""
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d, d.mean(), half, stats.wilcoxon(d).pvalue


@pytest.mark.parametrize("n,shift", [(12, 0.0), (40, 0.03), (75, -0.02)])
def test_paired_test_matches_numpy_scipy(n, shift):
    rng = np.random.default_rng(n)
    before = rng.normal(0.2, 0.1, n)
    after = before + rng.normal(shift, 0.05, n)
    d, mean, half, p = _reference(before, after)
    got = paired_change(before.tolist(), after.tolist())
    assert got.numpy() == pytest.approx(d, abs=1e-12)
    t = paired_test(got)
    assert (t.mean, t.ci, t.p, t.n) == (pytest.approx(mean), pytest.approx(half), pytest.approx(p), n)


def test_paired_change_drops_missing_pairs_and_checks_lengths():
    assert paired_change([0.1, None, float("nan"), 0.4], [0.3, 0.2, 0.1, None]).tolist() == pytest.approx(
        [0.2]
    )
    with pytest.raises(ValueError, match="got 2 before and 3 after"):
        paired_change([0.1, 0.2], [0.1, 0.2, 0.3])
    assert paired_test([]).n == 0 and math.isnan(paired_test([]).p)
    assert paired_test([0.0, 0.0, 0.0]).p == 1.0  # no change at all: nothing detected


def test_metric_in_shuffled_chunks_equals_functional_and_scipy():
    rng = np.random.default_rng(3)
    before, after = rng.normal(0.2, 0.1, 30), rng.normal(0.25, 0.1, 30)
    metric = PairedChange(num_examples=30)
    order = rng.permutation(30)
    for chunk in np.array_split(order, 4):  # any order, any chunking: the states are indexed sums
        metric.update(before[chunk].tolist(), after[chunk].tolist(), index=chunk.tolist())
    d, mean, half, p = _reference(before, after)
    assert metric.differences().numpy() == pytest.approx(d)  # back in index order
    t = metric.test()
    assert (t.mean, t.ci, t.p, t.n) == (pytest.approx(mean), pytest.approx(half), pytest.approx(p), 30)
    assert float(metric.compute()) == pytest.approx(mean)
    assert all(metric._reductions[s] is not None for s in ("difference", "paired"))  # summed under DDP


def test_metric_skips_missing_and_rejects_bad_input():
    m = PairedChange(num_examples=3)
    assert math.isnan(float(m.compute()))
    m.update([0.1, None, 0.5], [0.2, 0.3, None])
    assert m.test().n == 1 and float(m.compute()) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="already added"):
        m.update([0.1], [0.2], index=[0])
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        m.update([0.1], [0.2], index=[3])
    with pytest.raises(ValueError, match="one before, one after and one index"):
        m.update([0.1, 0.2], [0.2], index=[1, 2])
    with pytest.raises(ValueError, match="num_examples must be a positive int"):
        PairedChange(num_examples=0)


@pytest.mark.slow
def test_paired_change_syncs_under_ddp(tmp_path):
    """Two gloo processes, each with its shard of the examples, give every example's difference and the
    same test as one process (and as SciPy)."""
    script = Path(__file__).parent / "paired_ddp_script.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for world in (1, 2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        out = tmp_path / f"{world}.json"
        subprocess.run(
            [sys.executable, str(script), str(world), str(out), port], check=True, env=env, timeout=240
        )
        results[world] = json.loads(out.read_text())
    sys.path.insert(0, str(script.parent))
    try:
        from paired_ddp_script import data
    finally:
        sys.path.pop(0)
    d, mean, half, p = _reference(*data())
    for r in results.values():
        assert r["n"] == len(d) and r["differences"] == pytest.approx(d.tolist(), abs=1e-12)
        assert (r["mean"], r["computed_mean"], r["ci"], r["p"]) == (
            pytest.approx(mean),
            pytest.approx(mean),
            pytest.approx(half),
            pytest.approx(p),
        )


def test_verdict_and_word_changes():
    assert verdict(PairedTest(0.05, 0.02, 0.001, 40)) == "more faithful"
    assert verdict(PairedTest(-0.05, 0.02, 0.001, 40)) == "less faithful"
    assert verdict(PairedTest(0.05, 0.06, 0.2, 40)) == "no detectable change"
    assert verdict(PairedTest(math.nan, math.nan, math.nan, 0)) == "no detectable change"
    texts = ["Great fun, great cast.", "dull plot"]
    spans = [[(0, 5), (6, 10), (11, 16), (17, 22)], [(0, 4), (5, 9)]]
    before = [[0.1, 0.0, 0.2, 0.0], [-0.1, 0.0]]
    after = [[0.3, 0.05, 0.2, 0.05], [-0.4, 0.0]]
    rose, fell = word_changes(texts, spans, before, after, top=2)
    # "Great" and "great" are one word: changes +0.2 and 0.0, mean +0.1, 2 occurrences
    assert [r["word"] for r in rose] == ["great", "fun"] and rose[0]["count"] == 2
    assert rose[0]["change"] == pytest.approx(0.1) and rose[1]["change"] == pytest.approx(0.05)
    assert [r["word"] for r in fell] == ["dull"] and fell[0]["change"] == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="one score per feature"):
        word_changes(["a b"], [[(0, 1), (2, 3)]], [[0.1]], [[0.1, 0.2]])


def test_monitor_baseline_and_paired_change(gpt2_tok, tmp_path):
    """A fresh fit evaluates at step 0 first; gap_change (since the baseline) and gap_change_prev
    (since the previous evaluation) are the paired test of the stored per-example gaps; baseline=False
    turns the step-0 evaluation off; the verdict line reads the stored figures."""
    from _reference import fit_tiny as _fit
    from _reference import sp_monitor as _sp

    from pi_lightning.reporting.change import change_since_baseline, verdict_line

    sp = _sp(gpt2_tok)
    _fit(gpt2_tok, [sp], tmp_path / "a", epochs=2)
    assert [e.step for e in sp.evals] == [0, 6, 12]
    base, mid, last = sp.evals
    for ref, suffix in ((base, ""), (mid, "_prev")):
        for field in ("gap", "as_auc", "ias_auc"):
            t = paired_test(paired_change(getattr(ref, field), getattr(last, field)))
            m = last.metrics
            assert m[f"{field}_change{suffix}"] == pytest.approx(t.mean, abs=1e-12)
            assert m[f"{field}_change{suffix}_ci"] == pytest.approx(t.ci, abs=1e-12)
            assert m[f"{field}_change{suffix}_p"] == pytest.approx(t.p, abs=1e-12)
    change = change_since_baseline(sp.history())
    line = verdict_line(change)
    assert line.startswith(f"sp-pi: {change.verdict} since step 0") and "Wilcoxon p" in line
    assert change.test.mean == pytest.approx(last.metrics["gap_change"])

    off = _sp(gpt2_tok, baseline=False)
    _fit(gpt2_tok, [off], tmp_path / "b", epochs=1)
    assert [e.step for e in off.evals] == [6]


def test_monitor_schedule_at_steps_and_end(gpt2_tok, tmp_path):
    """at_steps adds evaluations after given optimizer steps, at_end one when training ends (not
    repeated when the last validation already ran there)."""
    from _reference import FIT_PROBE as PROBE
    from _reference import fit_tiny as _fit
    from _reference import sp_monitor as _sp

    from pi_lightning.callbacks import AttributionMonitor

    sp = _sp(
        gpt2_tok,
        every_n_val=None,
        at_steps=[1],
        at_fractions=[0.5],
        at_end=True,
        metrics=["as_auc", "ias_auc"],
    )
    _fit(gpt2_tok, [sp], tmp_path / "a", epochs=1, max_steps=5)
    assert [e.step for e in sp.evals] == [0, 1, 3, 5]  # 0.5 of 5 steps: step 3 (2.5 rounded half up)
    part = AttributionMonitor(gpt2_tok, PROBE, "sp-pi", probe_size=2, metrics=[])
    assert part.texts == list(PROBE[0][:2]) and part.labels == list(PROBE[1][:2])
    with pytest.raises(ValueError, match="probe_size must be None or a positive int"):
        AttributionMonitor(gpt2_tok, PROBE, "sp-pi", probe_size=0)
    both = _sp(gpt2_tok, at_end=True, metrics=[])
    _fit(gpt2_tok, [both], tmp_path / "b", epochs=1)
    assert [e.step for e in both.evals] == [0, 6]
    with pytest.raises(ValueError, match="at_steps must be a list of optimizer steps"):
        _sp(gpt2_tok, at_steps=[0])
    with pytest.raises(
        ValueError, match=r"at_fractions must be a list of fractions of max_steps in \(0, 1\]"
    ):
        _sp(gpt2_tok, at_fractions=[1.5])
    with pytest.raises(ValueError, match="otherwise the monitor never runs"):
        _sp(gpt2_tok, every_n_val=None, baseline=False)
