"""`pi-lightning explain` and `pi-lightning shortcuts` end to end on the tiny random model (in-process)."""

from __future__ import annotations

import json

import pytest

from pi_lightning.cli import explain, shortcuts


def test_explain_texts_then_file_then_mine_shortcuts(tmp_path, capsys):
    out = tmp_path / "job"
    args = [
        "--model",
        "testing:gpt2",
        "--out",
        str(out),
        "--no-progress",
        "--label-names",
        "negative,positive",
    ]
    assert explain.main(["a good movie, really.", "the plot is dull", *args]) == 0
    printed = capsys.readouterr().out
    assert "2 examples explained" in printed and "prediction" in printed and "HTML:" in printed
    rows = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert [r["features"] for r in rows] == [
        ["a", "good", "movie", ",", "really", "."],
        ["the", "plot", "is", "dull"],
    ]
    assert "<span title=" in (out / "explanations.html").read_text()

    data = tmp_path / "d.csv"
    data.write_text(
        "review,stars\n"
        + "\n".join(
            f"{t},{y}"
            for t, y in [("great fun", 1), ("dull and bland", 0), ("fun cast", 1), ("bland plot", 0)] * 2
        )
    )
    out2 = tmp_path / "job2"
    assert (
        explain.main(
            [
                str(data),
                "--text-column",
                "review",
                "--label-column",
                "stars",
                "--target",
                "label",
                "--method",
                "mp-pi",
                "--option",
                "budget=8",
                "--option",
                "seed=0",
                "--shard-size",
                "3",
                "--model",
                "testing:gpt2",
                "--out",
                str(out2),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out2 / "explanations.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and [r["target"] for r in rows] == [1, 0, 1, 0] * 2 and rows[0]["method"] == "mp-pi"
    assert json.loads((out2 / "job.json").read_text())["method_kwargs"]["budget"] == 8
    capsys.readouterr()

    assert shortcuts.main([str(out2), "--min-count", "2", "--check", "2"]) == 0
    printed = capsys.readouterr().out
    assert "shortcut candidates over 8 examples" in printed and "flagged" in printed
    mined = [json.loads(line) for line in (out2 / "shortcuts" / "shortcuts.jsonl").read_text().splitlines()]
    assert {r["word"] for r in mined} == {"fun", "bland"} or {r["word"] for r in mined} >= {"fun", "bland"}
    assert all(("flip_rate" in r) == (r["significant"] and r["checked"]) for r in mined)
    assert all(r["checked"] for r in mined[:2] if r["significant"])
    assert (out2 / "shortcuts" / "shortcuts.html").is_file()


def test_bad_arguments_are_explained(tmp_path, capsys):
    assert explain.main(["missing.csv", "--model", "testing:gpt2", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("pi-lightning explain: error: No such data file: missing.csv")
    assert (
        explain.main(["text", "--option", "budget", "--model", "testing:gpt2", "--out", str(tmp_path)]) == 2
    )
    assert "KEY=VALUE" in capsys.readouterr().err
    assert shortcuts.main([str(tmp_path / "nothing")]) == 2
    assert "not an explain job folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        explain.main(["x", "--method", "nope"])


def test_explain_embedded_dataset_with_limit(tmp_path, capsys):
    out = tmp_path / "rt"
    assert (
        explain.main(
            [
                "--dataset",
                "rotten_tomatoes",
                "--split",
                "test",
                "--limit",
                "3",
                "--model",
                "testing:gpt2",
                "--out",
                str(out),
                "--no-progress",
                "--show",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "3 examples explained" in printed and "1 more rows" in printed
    rows = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["label"] in (0, 1) for r in rows)
    assert explain.main(["text", "--dataset", "imdb", "--out", str(out)]) == 2
