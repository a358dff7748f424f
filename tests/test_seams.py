"""Where two parts meet: training and explanation see the same token ids, words are whole, free and
probe SP-PI agree, and a reader of examples reads every layout the same way (issue 25)."""

from __future__ import annotations

import pytest
import torch

from pi_lightning.attributors import SPPI
from pi_lightning.features import Featurizer, group_tokens
from pi_lightning.testing import tiny_classifier, tiny_tokenizer
from pi_lightning.training import TextDataModule

FAMILIES = ("gpt2", "llama")
TEMPLATES = ("{text}", "Review: {text}\nSentiment:", "Movie review:\n{text}", "Label: {text}")
TEXTS = ["a good movie.", ".great fun", "it was.great", "Don't miss it!\nReally."]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_training_ids_equal_explanation_ids(family, template):
    tok = tiny_tokenizer(family)
    dm = TextDataModule(tok, (TEXTS, [0, 1, 0, 1]), (TEXTS, [0, 1, 0, 1]), template=template, batch_size=4)
    batch = next(iter(dm.val_dataloader()))
    model = tiny_classifier(family, tokenizer=tok)
    attrs = SPPI(model, tok, template=template).attribute(TEXTS, target=1)
    for r, a in enumerate(attrs):
        trained = batch["input_ids"][r][batch["attention_mask"][r].bool()].tolist()
        assert trained == list(a.features.input_ids), (family, template, TEXTS[r])
        # and the same as the Featurizer's own encoding, batched
        assert trained == Featurizer(tok, template=template).encode([TEXTS[r]])[0]


def test_a_token_covering_two_words_stays_whole_and_merges_them():
    from pi_lightning.features import feature_char_spans

    text = "it was.great"
    offs = [(0, 2), (2, 6), (6, 8), (8, 12)]  # "it", " was", ".g", "reat": ".g" covers "." and "great"
    groups = group_tokens(text, offs, "word")
    assert groups == [(0, 1), (1, 2), (2, 4)]  # was ".g" and "reat": two non-words
    assert [text[a:b] for a, b in feature_char_spans(text, offs, groups)] == ["it", "was", ".great"]
    # a token covering the end of one word and the start of the next merges both, and nothing is split
    text = "ab cd ef"
    offs = [(0, 1), (1, 4), (4, 5), (5, 8)]  # "a", "b c", "d", " ef"
    assert group_tokens(text, offs, "word") == [(0, 3), (3, 4)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("template", ["{text}", "Review: {text}\nSentiment:", "Movie review: {text}"])
def test_validation_sppi_scores_every_word_as_sppi(family, template, validate_once):
    from pi_lightning.callbacks import ValidationSPPI
    from pi_lightning.training import TextClassifier

    tok = tiny_tokenizer(family)
    model = tiny_classifier(family, tokenizer=tok)
    labels = [0, 1, 1, 0]
    dm = TextDataModule(tok, (TEXTS, labels), (TEXTS, labels), template=template, batch_size=3)
    cb = ValidationSPPI(tok, template=template)
    validate_once(TextClassifier(model).eval(), dm, [cb])
    attrs = SPPI(model, tok, template=template).attribute(TEXTS, target=labels)
    words = [w for a in attrs for w in a.features.texts]
    assert cb._words == words  # every word, the first one included
    free = torch.cat(cb._phis).double()
    probe = torch.cat([a.scores for a in attrs]).double()
    torch.testing.assert_close(free, probe, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ one reader of examples (item 5)
def _write_layouts(tmp_path, texts, labels):
    import csv
    import json

    csv_path = tmp_path / "d.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True)),
        encoding="utf-8",
    )
    return csv_path, jsonl


def test_one_reader_reads_every_layout_the_same_everywhere(tmp_path):
    from pi_lightning.data import TextDataset, load_text_file, normalize_probe
    from pi_lightning.jobs import read_examples

    texts, labels = ["a good movie", "dull plot", "fun, really"], [1, 0, 1]
    csv_path, jsonl = _write_layouts(tmp_path, texts, labels)
    layouts = [
        (texts, labels),
        list(zip(texts, labels, strict=True)),
        [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)],
        [{"sentence": t, "label": y} for t, y in zip(texts, labels, strict=True)],
        TextDataset(tuple(texts), tuple(labels)),
    ]
    for layout in layouts:
        assert normalize_probe(layout) == (texts, labels), layout
        rows = read_examples(layout)  # (texts, labels) was read as two rows here before
        assert [(r["text"], r["label"]) for r in rows] == list(zip(texts, labels, strict=True)), layout
    for path in (csv_path, jsonl):
        rows = read_examples(path)
        assert [(r["text"], r["label"]) for r in rows] == list(zip(texts, labels, strict=True))
        ds = load_text_file(path, fractions=None)
        assert (list(ds.texts), list(ds.labels)) == (texts, labels)


def test_one_reader_refuses_what_it_cannot_read_in_one_line(tmp_path):
    from pi_lightning.data import DataSourceError, load_examples, load_text_file, normalize_probe
    from pi_lightning.jobs import read_examples

    txt = tmp_path / "reviews.txt"
    txt.write_text("a good movie\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"Unsupported data file .*reviews.txt.*'.txt'"):
        read_examples(txt)
    csv_path, _ = _write_layouts(tmp_path, ["good", "bad"], [1, 0])
    with pytest.raises(
        DataSourceError, match=r"has no label column 'stars'; its columns are \['label', 'text'\]"
    ):
        read_examples(csv_path, label_column="stars")
    with pytest.raises(DataSourceError, match=r"label '0.7' is not a whole number"):
        load_examples([{"text": "a", "label": "0.7"}])
    with pytest.raises(ValueError, match=r"label 0.7 is not a whole number"):
        normalize_probe((["a"], [0.7]))
    assert read_examples([("fine", 1.0)])[0]["label"] == 1  # an integral float is an index
    # a name is never numbered by the values present: "pos" alone is not class 0
    with pytest.raises(DataSourceError, match=r"class names as labels \('pos'\): say which index each is"):
        read_examples([("good", "pos")])
    assert read_examples([("good", "pos")], label_names=["neg", "pos"])[0]["label"] == 1
    with pytest.raises(DataSourceError, match=r"mixes class indices .* and class names"):
        read_examples([("good", "pos"), ("bad", 1)], label_names=["neg", "pos"])
    with pytest.raises(DataSourceError, match=r"rows \[1\] have no label while the others have one"):
        read_examples([{"text": "a", "label": 1}, {"text": "b"}])
    # a UTF-8 byte-order mark is not part of the first column's name
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefftext,label\nnice,1\n".encode())
    assert read_examples(bom)[0] == {"id": "0", "index": 0, "text": "nice", "label": 1}
    assert load_text_file(bom, fractions=None).texts == ("nice",)
    # invalid UTF-8: the file is named
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    for read in (read_examples, lambda p: load_text_file(p, fractions=None)):
        with pytest.raises(DataSourceError, match=r"latin1.csv is not UTF-8 text"):
            read(bad)


def test_finetune_reads_the_users_own_splits_without_resplitting(tmp_path):
    import csv

    from pi_lightning.training import ReviewDataModule

    def write(name, rows, header=("text", "label")):
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([header, *rows])
        return str(path)

    train = [(f"train text {i} good", i % 2) for i in range(10)]
    val = [(f"val text {i} fine", i % 2) for i in range(4)]
    test = [(f"test text {i} dull", i % 2) for i in range(3)]
    dm = ReviewDataModule(
        "testing:gpt2",
        dataset=write("train.csv", train),
        val_dataset=write("val.csv", val),
        test_dataset=write("test.csv", test),
        n_val=None,
        n_probe=3,
    )
    assert list(zip(dm.train_set.texts, dm.train_set.labels, strict=True)) == train
    assert list(zip(dm.val_set.texts, dm.val_set.labels, strict=True)) == val
    assert list(dm.probe.texts) == [t for t, _ in test]
    # or one file with a split column
    rows = [(t, y, "train") for t, y in train] + [(t, y, "validation") for t, y in val]
    rows += [(t, y, "test") for t, y in test]
    path = write("all.csv", rows, header=("text", "label", "split"))
    dm = ReviewDataModule("testing:gpt2", dataset=path, split_column="split", n_val=None, n_probe=3)
    assert list(dm.train_set.texts) == [t for t, _ in train]
    assert list(dm.val_set.texts) == [t for t, _ in val]
    assert list(dm.probe.texts) == [t for t, _ in test]


# ------------------------------------------------------------------ the explain job (item 4)
QUIET = {"enable_progress_bar": False, "accelerator": "cpu"}


def _reviews(n, seed=0):
    from pi_lightning.testing import toy_sentiment

    return toy_sentiment(n, seed=seed, length=(2, 4))[0]


def test_explain_rerun_on_fewer_examples_returns_exactly_the_current_input(tmp_path, gpt2_model, gpt2_tok):
    from pi_lightning.jobs import explain_dataset, load_results

    texts = _reviews(20)
    explain_dataset(gpt2_model, gpt2_tok, texts, tmp_path, shard_size=4, **QUIET)
    assert [r.text for r in load_results(tmp_path)] == texts
    explain_dataset(gpt2_model, gpt2_tok, texts[:3], tmp_path, shard_size=4, **QUIET)
    assert [r.text for r in load_results(tmp_path)] == texts[:3]  # was 13 rows: stale shards kept
    shard_files = list((tmp_path / "shards").glob("shard-*.jsonl"))
    assert sum(len(p.read_text().splitlines()) for p in shard_files) == 3  # stale shard files deleted


def test_explain_shards_stay_put_when_examples_are_added(tmp_path, gpt2_model, gpt2_tok):
    from pi_lightning.jobs import explain_dataset, load_results

    texts = _reviews(48, seed=1)
    first = explain_dataset(gpt2_model, gpt2_tok, texts[:40], tmp_path, shard_size=8, **QUIET)
    again = explain_dataset(gpt2_model, gpt2_tok, texts, tmp_path, shard_size=8, **QUIET)
    # 8 new examples: only the shards they fall in are redone (all of them before: a hash modulo a count)
    assert again.skipped >= 1 and again.skipped + len(again.written) == again.shards
    assert len(again.written) <= 8 and first.shards - again.skipped <= 8
    assert [r.text for r in load_results(tmp_path)] == texts
    fewer = explain_dataset(gpt2_model, gpt2_tok, texts[:-1], tmp_path, shard_size=8, **QUIET)
    # a removed example (ids are row numbers here): its shard only (none when it was alone in it)
    assert len(fewer.written) <= 1 and fewer.skipped == fewer.shards - len(fewer.written) >= first.shards - 2
    assert [r.text for r in load_results(tmp_path)] == texts[:-1]


def test_explain_job_is_keyed_on_the_weights(tmp_path, gpt2_tok):
    from pi_lightning.jobs import explain_dataset

    texts = _reviews(4)
    a = tiny_classifier("gpt2", tokenizer=gpt2_tok, seed=0)
    b = tiny_classifier("gpt2", tokenizer=gpt2_tok, seed=1)  # same name, other weights
    explain_dataset(a, gpt2_tok, texts, tmp_path, model_name="m", **QUIET)
    with pytest.raises(ValueError, match=r"results of another job \(weights: "):
        explain_dataset(b, gpt2_tok, texts, tmp_path, model_name="m", **QUIET)
    assert explain_dataset(b, gpt2_tok, texts, tmp_path, model_name="m", overwrite=True, **QUIET).skipped == 0


# ------------------------------------------------------------------ one-line errors, before loading (item 6)
@pytest.fixture
def no_model(tmp_path, monkeypatch):
    """Run in tmp_path offline; any model load is an error (the checks must come first)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr("pi_lightning.models.load_classifier", no_load)
    monkeypatch.setattr("pi_lightning.models.load_tokenizer", no_load)
    (tmp_path / "d.csv").write_text("review,stars\ngreat,1\ndull,0.7\n", encoding="utf-8")
    (tmp_path / "reviews.txt").write_text("a good movie\n", encoding="utf-8")
    (tmp_path / "taken").write_text("a file, not a folder")
    return tmp_path


def _one_line(argv, capsys) -> str:
    from pi_lightning.cli import main

    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


EXPLAIN_MISTAKES = [
    (["a text", "--model", "does-not-exist"], r"error: Model 'does-not-exist' not found"),
    (["a text", "--model", "testing:gpt2", "--template", "Review: {txt}"], r"exactly one '\{text\}'"),
    (["d.csv", "--model", "testing:gpt2", "--text-column", "text"], r"Row 0 of d.csv has no 'text' column"),
    (
        ["d.csv", "--model", "testing:gpt2", "--text-column", "review", "--label-column", "label"],
        "no label column",
    ),
    (
        ["d.csv", "--model", "testing:gpt2", "--text-column", "review", "--label-column", "stars"],
        "not a whole",
    ),
    (["a text", "--model", "testing:gpt2", "--out", "taken"], r"--out taken is a file"),
    (["a text", "--model", "testing:gpt2", "--target", "2"], r"class index in 0\.\.1, got '2'"),
    (["reviews.txt", "--model", "testing:gpt2"], r"Unsupported data file 'reviews.txt'"),
    (
        ["a text", "--model", "testing:gpt2", "--method", "mp-pi", "--option", "budjet=8"],
        "did you mean 'budget'",
    ),
    (["a text", "--model", "testing:gpt2", "--limit", "0"], "--limit must be at least 1, got 0"),
]


@pytest.mark.parametrize(("argv", "expected"), EXPLAIN_MISTAKES)
def test_explain_answers_a_mistake_in_one_line_before_loading_the_model(no_model, capsys, argv, expected):
    import re

    err = _one_line(["explain", *argv], capsys)
    assert err.startswith("pi-lightning explain: error: ") and re.search(expected, err), err


def test_the_same_mistake_has_the_same_words_in_every_subcommand(no_model, capsys):
    from pi_lightning.cli import main

    pairs = [
        (["--model.model_name", "does-not-exist"], ["a text", "--model", "does-not-exist"]),
        (
            ["--data.template", "Review: {txt}"],
            ["a text", "--model", "testing:gpt2", "--template", "Review: {txt}"],
        ),
        (["--data.dataset", "missing.csv"], ["missing.csv", "--model", "testing:gpt2"]),
        (
            ["--data.dataset", "d.csv", "--data.text_column", "review", "--data.label_column", "stars"],
            ["d.csv", "--model", "testing:gpt2", "--text-column", "review", "--label-column", "stars"],
        ),
    ]
    for finetune_args, explain_args in pairs:
        a = _one_line(["finetune", "--fast", *finetune_args], capsys).split(": error: ", 1)[1]
        b = _one_line(["explain", *explain_args], capsys).split(": error: ", 1)[1]
        assert a == b, (a, b)
    assert "is not an explain job folder" in _one_line(["shortcuts", "nojob"], capsys)
    # --debug shows the traceback instead
    with pytest.raises(ValueError, match=r"exactly one '\{text\}'"):
        main(["explain", "a text", "--model", "testing:gpt2", "--template", "{txt}", "--debug"])


def test_a_misspelled_method_setting_fails_at_construction(gpt2_model, gpt2_tok):
    from pi_lightning.callbacks import AttributionMonitor
    from pi_lightning.jobs import ExplainModule

    with pytest.raises(
        ValueError, match=r"Unknown setting 'budjet' for method 'mp-pi' \(did you mean 'budget'\?\)"
    ):
        AttributionMonitor(gpt2_tok, (["a good movie"], [1]), "mp-pi", method_kwargs={"budjet": 8})
    with pytest.raises(ValueError, match=r"Unknown setting 'budjet'"):
        ExplainModule(gpt2_model, gpt2_tok, "mp-pi", {"budjet": 8})
    with pytest.raises(ValueError, match="Unknown granularity 'wrod'"):
        AttributionMonitor(gpt2_tok, (["a good movie"], [1]), "sp-pi", method_kwargs={"granularity": "wrod"})


# ------------------------------------------------------------------ values reaching HTML (item 7)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("step", 1.5),
        ("metrics", {"gap": "0.2"}),
        ("scores", [["x"]]),
        ("targets", [True]),
        ("as_auc", ["0.5"]),
        ("curves", {"as": ([0.0], "y")}),
    ],
)
def test_records_validate_their_field_types(field, value):
    from pi_lightning.metrics.record import ProbeEvaluation, ProbeHistory, ValidationEvaluation

    good = ProbeEvaluation(step=1, log_step=1, epoch=0, metrics={"gap": 0.2}, scores=[[0.1]], targets=[1])
    assert ProbeEvaluation.from_dict(good.to_dict()) == good
    with pytest.raises(ValueError, match=rf"has {field}=.*; expected"):
        ProbeEvaluation.from_dict({**good.to_dict(), field: value})
    v = ValidationEvaluation(
        step=1, log_step=1, epoch=0, metrics={}, top_words=[{"word": "a", "mean_phi": 0.1, "count": 2}]
    )
    with pytest.raises(ValueError, match="top_words"):
        ValidationEvaluation.from_dict(
            {**v.to_dict(), "top_words": [{"word": 3, "mean_phi": 0.1, "count": 2}]}
        )
    h = ProbeHistory("sp-pi", ["good"], [1], None, [[[0, 4]]], []).state_dict()
    with pytest.raises(ValueError, match="char_spans"):
        ProbeHistory.from_state_dict({**h, "char_spans": [[["0", 4]]]})
