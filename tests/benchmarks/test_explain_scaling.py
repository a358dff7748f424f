"""The explain-job scaling benchmark runs 1 and 2 processes and prints the ratio (smoke test on the
tiny model)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_explain_scaling_prints_ratio(tmp_path, capsys):
    from benchmarks import explain_scaling

    res = explain_scaling.main(
        ["--model", "testing:gpt2", "--examples", "8", "--methods", "sp-pi", "--out", str(tmp_path)]
    )
    assert set(res["ratios"]) == {"sp-pi"} and res["ratios"]["sp-pi"] > 0
    assert [(r["processes"], r["examples"]) for r in res["runs"]] == [(1, 8), (2, 8)]
    assert "ratio 2/1" in capsys.readouterr().out
    assert "ratio 2/1" in (tmp_path / "explain_scaling.md").read_text()
