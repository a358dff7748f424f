"""Dataset-scale shortcut mining: the permutation null's moments, the table outputs, and a planted
shortcut on a tiny model found (ranked first, largest flip rate) while a control model without it is not
flagged."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from pi_lightning.jobs import ExplainRow, counterfactual_check, explain_dataset, load_results, mine_shortcuts
from pi_lightning.jobs.shortcuts import null_moments
from pi_lightning.reporting.shortcuts import (
    shortcut_columns,
    shortcut_examples,
    shortcuts_page,
    shortcuts_text,
)
from pi_lightning.testing import tiny_tokenizer, toy_sentiment

TOKEN = "zxq"


def test_null_moments_match_monte_carlo_permutations():
    rng = np.random.default_rng(0)
    texts = np.repeat(np.arange(30), rng.integers(2, 9, size=30))
    words = rng.integers(0, 6, size=len(texts))
    scores = rng.normal(size=len(texts)) + (words == 2) * 0.5
    total, mean, var = null_moments(scores, texts, words, 6)
    assert np.allclose(total, np.bincount(words, weights=scores, minlength=6))
    sims = []
    for _ in range(4000):  # shuffle the scores among the features of each text
        perm = scores.copy()
        for t in range(30):
            sel = np.flatnonzero(texts == t)
            perm[sel] = rng.permutation(scores[sel])
        sims.append(np.bincount(words, weights=perm, minlength=6))
    sims = np.array(sims)
    assert np.allclose(sims.mean(0), mean, atol=4 * np.sqrt(var / 4000) + 1e-9)
    assert np.allclose(sims.var(0), var, rtol=0.1)


def _rows(feature_rows, target=1, label=1):
    return [
        ExplainRow(
            id=str(i),
            text=" ".join(f),
            features=f,
            scores=s,
            target=target,
            prediction=target,
            probs=[0.3, 0.7],
            output="prob",
            label=label,
        )
        for i, (f, s) in enumerate(feature_rows)
    ]


def test_two_classes_fold_and_frequent_constant_words_are_not_candidates():
    rng = random.Random(0)
    rows = []
    for _ in range(40):  # "the" is everywhere with the text's average score; "zxq" is high in a few texts
        f = ["the", "a", "b", "c"] + (["zxq"] if len(rows) % 4 == 0 else [])
        s = [0.1, rng.gauss(0, 0.1), rng.gauss(0, 0.1), rng.gauss(0, 0.1)] + ([0.8] if "zxq" in f else [])
        s[0] = sum(s[1:4]) / 3
        rows.append((f, s))
    rep = mine_shortcuts(_rows(rows), min_count=2)
    top = rep.rows[0]
    assert top["word"] == "zxq" and top["cls"] == 1 and top["significant"]
    assert top["mean"][0] == pytest.approx(-top["mean"][1])  # p(0) = 1 - p(1): toward class 0 is the negative
    the = rep.find("the")
    assert the["count"] == 40 and not the["significant"]
    assert the["excess"] == pytest.approx(the["mean"][the["cls"]] - the["null_mean"])
    with pytest.raises(ValueError, match="min_count"):
        mine_shortcuts(_rows(rows), min_count=0)
    with pytest.raises(ValueError, match=r"'scores'.* are missing"):
        mine_shortcuts([{"features": ["a"], "target": 0, "probs": [1.0]}])
    # the dicts of typed rows (a line of explanations.jsonl) are mined like the rows
    assert mine_shortcuts([r.to_dict() for r in _rows(rows)], min_count=2).rows == rep.rows


def _plant(texts, labels, seed, correlated):
    rng = random.Random(seed)
    put = [(y == 1 and rng.random() < 0.9) if correlated else rng.random() < 0.5 for y in labels]
    return [f"{t} {TOKEN}" if p else t for t, p in zip(texts, put, strict=False)]


@pytest.mark.slow
@pytest.mark.parametrize("planted", [True, False], ids=["planted", "control"])
def test_planted_shortcut_is_found_and_control_is_not_flagged(tmp_path, planted, train_tiny):
    tok = tiny_tokenizer("gpt2")
    tx, ty = toy_sentiment(512, seed=1)
    noise = random.Random(1)
    ty = [
        1 - y if noise.random() < 0.3 else y for y in ty
    ]  # the sentiment words alone are an imperfect signal
    model = train_tiny(_plant(tx, ty, 3, True) if planted else tx, ty, tok)
    vx, vy = toy_sentiment(96, seed=2)
    data = _plant(vx, vy, 4, correlated=planted)  # control: the token on half the texts, whatever their label
    explain_dataset(
        model, tok, data, tmp_path / "job", labels=vy, enable_progress_bar=False, accelerator="cpu"
    )
    results = load_results(tmp_path / "job")
    report = mine_shortcuts(results, label_names=["negative", "positive"])
    mined_rank = report.find(TOKEN)["rank"]
    counterfactual_check(report, results, model, tok, max_texts=None)
    row = report.find(TOKEN)
    checked = [r for r in report.rows if r.get("flip_rate") is not None]
    if planted:
        assert mined_rank == 1 and row["rank"] == 1 and row["flagged"] and row["cls"] == 1
        assert row["flip_rate"] == max(r["flip_rate"] for r in checked) > 0.5
        assert row["texts"] == sum(TOKEN in t.split() for t in data) == row["checked_texts"]
        assert row["label_assoc"] > 0.3
    else:
        assert not row["flagged"] and row["prob_change"] < 0.1
        # only the task's real signal (the toy data's sentiment words) may be flagged, never a neutral word
        from pi_lightning.testing import _NEG, _POS

        assert {r["word"] for r in report.rows if r.get("flagged")} <= set(_POS) | set(_NEG)
    # outputs: terminal table, JSONL, HTML (with the texts that hold the word highlighted), W&B columns
    assert TOKEN in shortcuts_text(report, 10)
    lines = report.write_jsonl(tmp_path / "s.jsonl").read_text().splitlines()
    assert json.loads(lines[row["rank"] - 1])["word"] == TOKEN
    examples = shortcut_examples(report, results, top=row["rank"])
    assert len(examples[TOKEN]) == 3 and all(f">{TOKEN}</span>" in h for h in examples[TOKEN])
    assert TOKEN in shortcuts_page(report, examples=examples)
    cols, table = shortcut_columns(report, 5)
    assert cols[:2] == ["rank", "word"] and len(table) == 5 and table[row["rank"] - 1][1] == TOKEN
