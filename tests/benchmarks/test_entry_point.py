"""``python -m benchmarks``: every table's chain runs in order (``--quick``: the tiny model, real code
paths), a failing step stops the run, and RESULTS.md's generated blocks are the results files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as entry
from benchmarks._common import RESULTS

ROOT = Path(__file__).resolve().parents[2]


def test_results_md_blocks_are_the_results_files(tmp_path):
    """Every file a table shows has its block in RESULTS.md, every block belongs to a table, and the
    committed RESULTS.md is what rendering the committed results files gives (nothing edited by hand)."""
    text = (RESULTS / "RESULTS.md").read_text()
    named = entry.blocks(text)
    shown = [f for t in entry.TABLES.values() for f in t.files]
    assert sorted(named) == sorted(shown) and len(set(named)) == len(named)
    copy = tmp_path / "RESULTS.md"
    copy.write_text(text)
    rendered = entry.render(copy, RESULTS)
    assert copy.read_text() == text
    assert set(rendered) == {f for f in shown if (RESULTS / f).is_file()}


def test_render_rewrites_only_blocks_with_a_file(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text(
        "# R\nhand-written\n<!-- generated from: a.md -->\nold a\n<!-- end generated: a.md -->\n"
        "<!-- generated from: b.txt -->\nold b\n<!-- end generated: b.txt -->\n"
        "<!-- generated from: c.md -->\nold c\n<!-- end generated: c.md -->\ntail\n"
    )
    (tmp_path / "a.md").write_text("| x |\n|---|\n| 1 |\n")
    (tmp_path / "b.txt").write_text("printed 2\n")
    assert entry.render(md, tmp_path) == ["a.md", "b.txt"]
    assert md.read_text() == (
        "# R\nhand-written\n<!-- generated from: a.md -->\n| x |\n|---|\n| 1 |\n"
        "<!-- end generated: a.md -->\n"
        "<!-- generated from: b.txt -->\n```\nprinted 2\n```\n<!-- end generated: b.txt -->\n"
        "<!-- generated from: c.md -->\nold c\n<!-- end generated: c.md -->\ntail\n"
    )


def test_quick_chain_runs_in_order_and_rewrites_a_copy(tmp_path, monkeypatch):
    """faithfulness-rt --quick: both masks on the tiny model, then the between-mask tests reading their
    JSON files; the copy of RESULTS.md in --out shows the new tables, the committed one is untouched."""
    before = (RESULTS / "RESULTS.md").read_text()
    res = entry.main(["faithfulness-rt", "--quick", "--out", str(tmp_path)])
    assert res["ran"] == ["faithfulness-rt"] and res["rendered"] == entry.TABLES["faithfulness-rt"].files
    text = (tmp_path / "RESULTS.md").read_text()
    for f in res["rendered"]:
        assert (tmp_path / f).read_text().strip("\n") in text
    assert "Command: `python -m benchmarks.faithfulness_table --model testing:gpt2" in text
    assert (RESULTS / "RESULTS.md").read_text() == before

    # A step that breaks stops the chain with its error: no later step runs, RESULTS.md is not rewritten.
    from benchmarks import faithfulness_table

    def broken(argv):
        raise RuntimeError("faithfulness_table broke")

    monkeypatch.setattr(faithfulness_table, "main", broken)
    again = tmp_path / "again"
    with pytest.raises(RuntimeError, match="faithfulness_table broke"):
        entry.main(["faithfulness-rt", "--quick", "--out", str(again)])
    assert sorted(p.name for p in again.iterdir()) == ["RESULTS.md"]
    assert (again / "RESULTS.md").read_text() == before
    with pytest.raises(SystemExit):
        entry.main(["nope", "--out", str(tmp_path)])


@pytest.mark.slow
def test_all_quick_from_the_command_line(tmp_path):
    """``python -m benchmarks all --quick``: every table with a tiny version runs (planted-cues, which
    trains three real models, is skipped and says so) and every block of theirs is rewritten."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "all", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    quick = [n for n, t in entry.TABLES.items() if t.quick]
    for name in quick:
        assert f"== {name}:" in proc.stdout
    assert "== planted-cues: skipped with --quick" in proc.stdout
    files = [f for n in quick for f in entry.TABLES[n].files]
    assert f"Rewrote {len(files)} generated block(s)" in proc.stdout
    text = (tmp_path / "RESULTS.md").read_text()
    assert all((tmp_path / f).read_text().strip("\n") in text for f in files)
