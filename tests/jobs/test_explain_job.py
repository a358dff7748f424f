"""The distributed explain job: inputs, shard files, resume, and 1 vs 2 processes giving the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pi_lightning.data import TextDataset
from pi_lightning.jobs import ExplainRow, explain_dataset, load_results, mine_shortcuts, read_examples
from pi_lightning.jobs.explain import plan_shards

TEXTS = [
    "a good movie.",
    "a dull, boring plot.",
    "great cast but weak script.",
    "fun!",
    "the film was bland.",
    "a lovely, moving story.",
    "poor acting and a messy plot.",
    "solid.",
]
LABELS = [1, 0, 0, 1, 0, 1, 0, 1]
QUIET = {"enable_progress_bar": False, "accelerator": "cpu"}


def test_read_examples_from_files_and_objects(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('review,stars,key\n"good, really",pos,k1\nbad,neg,k2\n', encoding="utf-8")
    rows = read_examples(
        csv_path, text_column="review", label_column="stars", id_column="key", label_names=["neg", "pos"]
    )
    assert rows == [
        {"id": "k1", "index": 0, "text": "good, really", "label": 1},
        {"id": "k2", "index": 1, "text": "bad", "label": 0},
    ]  # string labels: their index in the explicit label_names
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "fine", "label": 1}\n\n{"text": "meh", "label": 0}\n', encoding="utf-8")
    assert [(r["id"], r["label"]) for r in read_examples(jsonl)] == [("0", 1), ("1", 0)]
    assert read_examples([("x y", 1)])[0]["label"] == 1
    assert read_examples(TextDataset(("a", "b"), (0, 1)))[1] == {
        "id": "1",
        "index": 1,
        "text": "b",
        "label": 1,
    }
    with pytest.raises(ValueError, match="occurs twice"):
        read_examples([{"text": "a", "id": 3}, {"text": "b", "id": 3}])
    with pytest.raises(ValueError, match="no 'text' column"):
        read_examples([{"review": "a"}])
    with pytest.raises(ValueError, match="no text to explain"):
        read_examples(["ok", "  "])


def test_parquet_without_pyarrow_says_how_to_fix(tmp_path, gpt2_model, gpt2_tok):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pyarrow"):
            read_examples(tmp_path / "x.parquet") if (tmp_path / "x.parquet").touch() is None else None
        with pytest.raises(ImportError, match="pip install pyarrow"):
            explain_dataset(gpt2_model, gpt2_tok, TEXTS, tmp_path / "out", format="parquet", **QUIET)
    else:
        explain_dataset(gpt2_model, gpt2_tok, TEXTS[:3], tmp_path / "out", format="parquet", **QUIET)
        assert [r.text for r in load_results(tmp_path / "out")] == TEXTS[:3]


def test_rows_hold_features_spans_scores_and_cost(tmp_path, gpt2_model, gpt2_tok):
    from pi_lightning.attributors import SPPI

    explain_dataset(
        gpt2_model, gpt2_tok, TEXTS, tmp_path, labels=LABELS, target="label", shard_size=3, **QUIET
    )
    rows = load_results(tmp_path)
    assert [r.text for r in rows] == TEXTS and [r.target for r in rows] == LABELS
    ref = SPPI(gpt2_model, gpt2_tok).attribute(TEXTS, target=LABELS)
    for r, a in zip(rows, ref, strict=True):
        assert r.features == [r.text[s:e] for s, e in r.char_spans] == list(a.features.texts)
        assert r.scores == pytest.approx(a.scores.tolist(), abs=1e-6)  # float32 batches differ
        assert r.prediction == a.prediction and r.forward_passes == a.forward_passes
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["shard_size"] == 3 and job["method"] == "sp-pi"
    assert (
        {json.loads(p.read_text())["shard"] for p in (tmp_path / "shards").glob("*.done.json")}
        == set(plan_shards([str(i) for i in range(len(TEXTS))], 3))
        == set(job["shards"])
    )


def test_gradient_method_runs_in_predict(tmp_path, gpt2_model, gpt2_tok):
    explain_dataset(gpt2_model, gpt2_tok, TEXTS[:3], tmp_path, method="inputxgrad", **QUIET)
    rows = load_results(tmp_path)
    assert len(rows) == 3 and all(any(s != 0 for s in r.scores) for r in rows)


def test_resume_skips_finished_shards(tmp_path, gpt2_model, gpt2_tok):
    first = explain_dataset(gpt2_model, gpt2_tok, TEXTS, tmp_path, shard_size=2, **QUIET)
    assert first.skipped == 0 and sorted(first.written) == sorted(plan_shards(list(map(str, range(8))), 2))
    files = sorted((tmp_path / "shards").glob("*.jsonl"))
    before = {p.name: p.stat().st_mtime_ns for p in files}
    lost = files[1]
    lost.unlink()  # an interrupted run: one shard missing
    again = explain_dataset(gpt2_model, gpt2_tok, TEXTS, tmp_path, shard_size=2, **QUIET)
    assert again.written == [lost.name[6:].split(".")[0]] and again.skipped == first.shards - 1
    assert {p.name: p.stat().st_mtime_ns for p in files if p != lost} == {
        k: v for k, v in before.items() if k != lost.name
    }
    assert [r.text for r in load_results(tmp_path)] == TEXTS
    # a changed example re-explains its shard only
    edited = list(TEXTS)
    edited[3] = "fun, really fun!"
    third = explain_dataset(gpt2_model, gpt2_tok, edited, tmp_path, shard_size=2, **QUIET)
    assert third.written == [k for k, pos in plan_shards(list(map(str, range(8))), 2).items() if 3 in pos]
    assert load_results(tmp_path)[3].features == ["fun", ",", "really", "fun", "!"]
    # nothing left to do
    assert explain_dataset(gpt2_model, gpt2_tok, edited, tmp_path, **QUIET).written == []


def test_other_job_in_folder_is_refused(tmp_path, gpt2_model, gpt2_tok):
    explain_dataset(gpt2_model, gpt2_tok, TEXTS[:2], tmp_path, **QUIET)
    with pytest.raises(ValueError, match=r"results of another job.*method"):
        explain_dataset(gpt2_model, gpt2_tok, TEXTS[:2], tmp_path, method="random", **QUIET)
    s = explain_dataset(gpt2_model, gpt2_tok, TEXTS[:2], tmp_path, method="random", overwrite=True, **QUIET)
    assert s.skipped == 0 and load_results(tmp_path)[0].method == "random"


def _run(devices: int, out: Path, method: str, *extra: str) -> list[dict]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "explain_script.py"),
            str(devices),
            str(out),
            method,
            *extra,
        ],
        check=True,
        env=env,
        timeout=400,
        capture_output=True,
    )
    return load_results(out)


@pytest.mark.slow
# MP-PI draws its masks per attribute() call; a shard is one call whatever the number of processes, so
# its rows are identical too (also once its per-text RNG lands, issue 14).
@pytest.mark.parametrize("method", ["sp-pi", "mp-pi"])
def test_one_and_two_processes_give_identical_rows(tmp_path, method):
    one = _run(1, tmp_path / "one", method)
    two = _run(2, tmp_path / "two", method)
    ranks = {json.loads(p.read_text())["rank"] for p in (tmp_path / "two" / "shards").glob("*.done.json")}
    assert ranks == {0, 1}  # both processes wrote shards
    assert len(one) == 40 and one == two


def test_each_rank_takes_every_world_size_th_shard_even_when_shards_are_few():
    from types import SimpleNamespace

    from pi_lightning.jobs.explain import _ShardData

    data = _ShardData([], Path("."), {}, 1, False)
    data.todo = [{"shard": k} for k in range(3)]
    got = {}
    for rank in range(4):  # more processes than shards: the last rank gets nothing, and no sampler assertion
        data.trainer = SimpleNamespace(global_rank=rank, world_size=4)
        got[rank] = [b["shard"] for b in data.predict_dataloader()]
    assert got == {0: [0], 1: [1], 2: [2], 3: []}


@pytest.mark.slow
def test_fewer_shards_than_processes(tmp_path):
    rows = _run(2, tmp_path, "sp-pi", "3")  # 3 texts, shard size 6: one shard, so rank 1 has nothing to do
    assert [r.index for r in rows] == [0, 1, 2]


def test_explain_row_round_trips_and_refuses_old_or_bad_rows(gpt2_model, gpt2_tok):
    from pi_lightning.attributors import SPPI

    (a,) = SPPI(gpt2_model, gpt2_tok).fill_probs(SPPI(gpt2_model, gpt2_tok).attribute(["a good, fun movie"]))
    row = ExplainRow.from_attribution(a, id="k", index=4, label=1)
    assert (row.id, row.index, row.text, row.label, row.method, row.granularity) == (
        "k",
        4,
        "a good, fun movie",
        1,
        "sp-pi",
        "word",
    )
    assert row.features == ["a", "good", ",", "fun", "movie"] == [row.text[s:e] for s, e in row.char_spans]
    assert row.scores == a.scores.tolist() and row.prediction == a.prediction and row.target == a.target
    d = row.to_dict()
    assert list(d) == [  # the order of a JSONL line: the example, the prediction, the attribution
        "id",
        "index",
        "text",
        "label",
        "target",
        "prediction",
        "probs",
        "method",
        "output",
        "granularity",
        "features",
        "char_spans",
        "scores",
        "base_value",
        "forward_passes",
        "settings",
    ]
    assert row.settings == json.loads(json.dumps(a.settings, default=repr))  # what it was made with
    assert ExplainRow.from_dict(json.loads(json.dumps(d))) == row  # through a JSONL line and back
    old = {k: v for k, v in d.items() if k not in ("char_spans", "granularity")}  # an older row layout
    with pytest.raises(ValueError, match=r"\['granularity', 'char_spans'\] are missing.*--overwrite"):
        ExplainRow.from_dict(old)
    with pytest.raises(ValueError, match=r"\['spans'\] are unknown"):
        ExplainRow.from_dict({**d, "spans": []})
    with pytest.raises(ValueError, match=r"Explain row 'k': target='1' \(str\); expected a class index"):
        ExplainRow.from_dict({**d, "target": "1"})
    with pytest.raises(ValueError, match=r"scores=\[0.5, 'x'\].*expected a list of numbers"):
        ExplainRow.from_dict({**d, "scores": [0.5, "x"]})
    with pytest.raises(ValueError, match="5 features but 4 scores"):
        ExplainRow.from_dict({**d, "scores": d["scores"][:4]})
    with pytest.raises(ValueError, match="expected a list of \\[start, end\\) character ranges"):
        ExplainRow.from_dict({**d, "char_spans": [[0, 1, 2]] * 5})
    with pytest.raises(TypeError, match="is a dict, got list"):
        ExplainRow.from_dict([d])


def test_loader_reads_typed_rows_and_names_a_bad_row(tmp_path, gpt2_model, gpt2_tok):
    explain_dataset(gpt2_model, gpt2_tok, TEXTS[:4], tmp_path, labels=LABELS[:4], shard_size=2, **QUIET)
    rows = load_results(tmp_path)
    assert all(isinstance(r, ExplainRow) for r in rows) and [r.label for r in rows] == LABELS[:4]
    # the loader's rows are what mining takes, typed or as their dicts
    assert (
        mine_shortcuts(rows, min_count=1).rows
        == mine_shortcuts([r.to_dict() for r in rows], min_count=1).rows
    )
    shard = sorted((tmp_path / "shards").glob("*.jsonl"))[0]
    lines = shard.read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[-1])
    bad["probs"] = "0.2,0.8"
    shard.write_text("\n".join([*lines[:-1], json.dumps(bad)]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{shard.name}, row {len(lines)}: .*probs='0.2,0.8' \(str\)"):
        load_results(tmp_path)
