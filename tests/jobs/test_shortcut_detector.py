"""The shortcut detector's statistics against NumPy references, the counterfactual null of the masking
check, the same statistic online (ValidationSPPI) and offline (mine_shortcuts), and a planted cue
on a tiny model flagged while the punctuation it shares every text with is not."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from pi_lightning.callbacks import ValidationSPPI
from pi_lightning.features import Featurizer
from pi_lightning.jobs import ExplainRow, counterfactual_check, explain_dataset, load_results, mine_shortcuts
from pi_lightning.jobs.shortcuts import ONLINE, null_moments, paired_null_test
from pi_lightning.masking import Masker
from pi_lightning.reporting.shortcuts import shortcuts_text
from pi_lightning.testing import tiny_classifier, tiny_tokenizer, toy_sentiment
from pi_lightning.training import TextClassifier, TextDataModule

TOKEN = "zxq"


def test_null_moments_equal_exact_enumeration_of_permutations():
    """Mean and variance of a word's total under within-text shuffling, enumerated exactly in NumPy."""
    rng = np.random.default_rng(3)
    sizes = [3, 4, 5, 2, 4]
    texts = np.repeat(np.arange(len(sizes)), sizes)
    words = rng.integers(0, 3, size=len(texts))
    scores = rng.normal(size=len(texts))
    total, mean, var = null_moments(scores, texts, words, 3)
    ref_mean, ref_var = np.zeros(3), np.zeros(3)
    for t in range(len(sizes)):  # texts are shuffled independently: moments add up over texts
        sel = np.flatnonzero(texts == t)
        sums = np.array(
            [
                [scores[sel][list(p)][words[sel] == w].sum() for w in range(3)]
                for p in itertools.permutations(range(len(sel)))
            ]
        )  # (perms, words)
        ref_mean += sums.mean(0)
        ref_var += sums.var(0)
    np.testing.assert_allclose(total, np.bincount(words, weights=scores, minlength=3))
    np.testing.assert_allclose(mean, ref_mean, atol=1e-12)
    np.testing.assert_allclose(var, ref_var, atol=1e-12)


def test_paired_null_test_equals_exact_sign_flip_enumeration():
    """One-sided Wilcoxon of word drop minus null drop, against all 2^n sign flips in NumPy."""
    rng = np.random.default_rng(0)
    drops = rng.normal(0.1, 0.1, size=9)
    null = rng.normal(0.0, 0.05, size=9)
    d = drops - null
    ranks = np.argsort(np.argsort(np.abs(d))) + 1  # no ties
    observed = ranks[d > 0].sum()
    flips = np.array(list(itertools.product([0, 1], repeat=len(d))))  # (2^n, n): 1 = positive
    ref_p = np.mean(flips @ ranks >= observed)
    effect, p = paired_null_test(drops, null)
    assert effect == pytest.approx(d.mean())
    assert p == pytest.approx(ref_p, rel=1e-9)
    assert paired_null_test(np.ones(3), np.ones(3)) == (0.0, 1.0)
    assert np.isnan(paired_null_test(np.zeros(0), np.zeros(0))[0])


@torch.no_grad()
def _probs(model, tok, seqs):
    from pi_lightning.inference import ClassifierAdapter, transform_outputs

    return transform_outputs(ClassifierAdapter(model).final_logits(seqs), "prob").numpy()


def test_counterfactual_null_masks_the_other_word_known_answer(gpt2_tok):
    """Two-word texts: the null of 'zxq' can only mask the other word, so both effects are known."""
    tok = gpt2_tok
    model = tiny_classifier("gpt2", tokenizer=tok, seed=1).eval()
    others = ["good", "bad", "plot", "movie", "dull", "fun", "great", "boring"]
    texts = [f"{TOKEN} {w}" if i % 2 else f"{w} {TOKEN}" for i, w in enumerate(others)]
    feats = [Featurizer(tok)(t) for t in texts]
    probs = _probs(model, tok, [list(f.input_ids) for f in feats])
    rows = [
        ExplainRow(
            id=str(i),
            text=t,
            features=list(f.texts),
            scores=[0.5 if x == TOKEN else 0.0 for x in f.texts],
            target=1,
            prediction=int(p.argmax()),
            probs=p.tolist(),
            output="prob",
        )
        for i, (t, f, p) in enumerate(zip(texts, feats, probs, strict=True))
    ]
    report = mine_shortcuts(rows, min_count=2)
    assert report.find(TOKEN)["significant"]
    counterfactual_check(report, rows, model, tok, min_effect=0.0)
    row = report.find(TOKEN)
    masker = Masker(tok)
    word_masked = [masker(f, [[x != TOKEN for x in f.texts]])[0][0] for f in feats]
    other_masked = [masker(f, [[x == TOKEN for x in f.texts]])[0][0] for f in feats]
    c = row["cls"]
    drops = probs[:, c] - _probs(model, tok, word_masked)[:, c]
    null_drops = probs[:, c] - _probs(model, tok, other_masked)[:, c]
    assert row["checked"] and row["checked_texts"] == len(texts)
    assert row["prob_change"] == pytest.approx(drops.mean(), abs=1e-5)
    assert row["null_prob_change"] == pytest.approx(null_drops.mean(), abs=1e-5)
    assert row["effect"] == pytest.approx((drops - null_drops).mean(), abs=1e-5)
    assert row["effect_p"] == pytest.approx(paired_null_test(drops, null_drops)[1], abs=1e-6)
    # a recorded prediction that is not the model's is refused (another model, template or adapter)
    rows[0].probs = [1.0, 0.0] if probs[0, 0] < 0.5 else [0.0, 1.0]
    with pytest.raises(ValueError, match="explain job recorded"):
        counterfactual_check(mine_shortcuts(rows, min_count=2), rows, model, tok)


def test_budget_leaves_significant_words_unchecked(gpt2_tok):
    tok = gpt2_tok
    model = tiny_classifier("gpt2", tokenizer=tok, seed=1).eval()
    texts = [f"{a} {b} {TOKEN} x" for a in ("good", "bad", "dull") for b in ("plot", "fun", "film")]
    feats = [Featurizer(tok)(t) for t in texts]
    probs = _probs(model, tok, [list(f.input_ids) for f in feats])
    rows = [
        ExplainRow(
            text=t,
            features=list(f.texts),
            scores=[0.4 if x in (TOKEN, "x") else 0.0 for x in f.texts],
            target=1,
            probs=p.tolist(),
            output="prob",
        )
        for t, f, p in zip(texts, feats, probs, strict=True)
    ]
    report = mine_shortcuts(rows, min_count=2)
    sig = [r["word"] for r in report.rows if r["significant"]]
    assert set(sig) == {TOKEN, "x"}
    # masked whole, 'zxq x' is one phrase: the two words need the same passes, which they share
    counterfactual_check(report, rows, model, tok, budget=2 * len(texts))
    assert all(r["checked"] for r in report.rows if r["significant"])
    assert report.settings["forward_passes"] <= 2 * len(texts) + 4  # + the 4 recomputed predictions
    counterfactual_check(report, rows, model, tok, budget=2 * len(texts), phrases=False)  # room for one word
    checked = [r["word"] for r in report.rows if r.get("checked")]
    assert len(checked) == 1 and report.settings["unchecked_significant"] == [
        w for w in sig if w not in checked
    ]
    assert "n/c" in shortcuts_text(report, 5)
    with pytest.raises(ValueError, match="budget"):
        counterfactual_check(report, rows, model, tok, budget=0)


def test_validation_detector_is_mine_shortcuts_over_the_validation_sppi(gpt2_tok, validate_once):
    """ValidationSPPI's online ranking is mine_shortcuts' over the same phis (no extra forward pass), with
    the online settings (the next word's score added, the position baseline subtracted)."""
    from pi_lightning import SPPI

    tok = gpt2_tok
    model = tiny_classifier("gpt2", tokenizer=tok, seed=2)
    texts, labels = toy_sentiment(24, seed=5)
    texts = [f"{t} {TOKEN}" if y else t for t, y in zip(texts, labels, strict=True)]
    free = ValidationSPPI(tok, min_count=2, top_words=100)
    validate_once(TextClassifier(model), TextDataModule(tok, (texts, labels), (texts, labels)), [free])
    rows = []
    for attr, y in zip(SPPI(model, tok).attribute(texts, target=list(labels)), labels, strict=True):
        rows.append(  # every word, the first included: ValidationSPPI scores it as SPPI does
            ExplainRow(
                features=list(attr.features.texts),
                scores=attr.scores.tolist(),
                target=y,
                probs=[0.0, 0.0],
                output="prob",
            )
        )
    ref = mine_shortcuts(rows, min_count=2, **ONLINE)
    got = free.evals[-1]
    assert [w["word"] for w in got.top_words] == [r["word"] for r in ref.rows]
    for w, r in zip(got.top_words, ref.rows, strict=True):
        assert w["z"] == pytest.approx(r["z"], abs=1e-4) and w["significant"] == r["significant"]
    assert [w["word"] for w in got.significant_words] == [r["word"] for r in ref.rows if r["significant"]]
    assert got.metrics["n_significant"] == len(got.significant_words)


@pytest.mark.parametrize("planted", [True, False], ids=["planted", "control"])
def test_mining_flags_a_planted_cue_not_the_punctuation(tmp_path, planted, train_tiny):
    """A word before 90% of the positive texts is flagged; '.' ends every text and gets attribution, but
    masking it does not beat masking a random word, so it is not flagged. The control: nothing planted
    in training, the word in half the texts whatever their label, is not flagged."""
    tok = tiny_tokenizer("gpt2")
    tx, ty = toy_sentiment(384, seed=1)
    noise = random.Random(1)
    ty = [1 - y if noise.random() < 0.3 else y for y in ty]
    rng = random.Random(3)
    put = [(y == 1 and rng.random() < 0.9) if planted else False for y in ty]
    model = train_tiny([f"{TOKEN} {t}" if p else t for t, p in zip(tx, put, strict=True)], ty, tok, steps=48)
    vx, vy = toy_sentiment(96, seed=2)
    rng = random.Random(4)
    data = [
        f"{TOKEN} {t}" if ((y == 1 and rng.random() < 0.9) if planted else rng.random() < 0.5) else t
        for t, y in zip(vx, vy, strict=True)
    ]
    explain_dataset(
        model, tok, data, tmp_path / "job", labels=vy, enable_progress_bar=False, accelerator="cpu"
    )
    results = load_results(tmp_path / "job")
    report = counterfactual_check(mine_shortcuts(results), results, model, tok)
    row, dot = report.find(TOKEN), report.find(".")
    for r in (r for r in report.rows if r.get("checked")):
        # the rule: flagged when masking or inserting beats its counterfactual null by >= 0.05 (BH q < 0.05)
        # and the other test agrees (effect > 0)
        ins = r.get("insert_effect")  # None: no text lacks the word
        by_removal = r["effect"] >= 0.05 and r["effect_q"] < 0.05
        by_insertion = ins is not None and ins >= 0.05 and r["insert_q"] < 0.05
        opposed = r["effect"] <= 0 or (ins is not None and ins <= 0)
        assert r["contradicted"] == ((by_removal or by_insertion) and opposed)
        assert r["flagged"] == (r["significant"] and (by_removal or by_insertion) and not opposed)
        if r["flagged"]:
            assert r["flagged_by"] == "+".join(
                k for k, v in (("removal", by_removal), ("insertion", by_insertion)) if v
            )
        else:
            assert r["flagged_by"] is None
        assert r["prob_change"] - r["null_prob_change"] == pytest.approx(r["effect"])
        if ins is not None:
            gain = r["insert_prob_change"] - r["insert_null_prob_change"]
            assert gain == pytest.approx(r["insert_effect"])
    assert not dot.get("flagged")
    if planted:  # the cue is flagged by both tests: masking it and putting it into texts without it
        assert row["flagged"] and row["rank"] == 1 and row["effect"] > 0.1
        assert row["flagged_by"] == "removal+insertion" and row["inserted"] == TOKEN
    else:
        assert not row.get("flagged")


def test_a_significant_phrase_is_masked_whole(gpt2_tok):
    """'[ dvd ]': masking 'dvd' masks its adjacent significant words too (not the '[ ]' left behind);
    the null masks the two other words (all there is outside the phrase)."""
    tok = gpt2_tok
    model = tiny_classifier("gpt2", tokenizer=tok, seed=1).eval()
    firsts = ["good", "bad", "plot", "movie"]
    seconds = ["dull", "fun", "great", "boring"]
    texts = [f"{a} {b} [ dvd ]" for a in firsts for b in seconds]
    feats = [Featurizer(tok)(t) for t in texts]
    assert list(feats[0].texts) == ["good", "dull", "[", "dvd", "]"]
    probs = _probs(model, tok, [list(f.input_ids) for f in feats])
    rows = [
        ExplainRow(
            text=t,
            features=list(f.texts),
            scores=[-1.0, -1.0, 0.4, 0.5, 0.4],
            target=1,
            probs=p.tolist(),
            output="prob",
        )
        for t, f, p in zip(texts, feats, probs, strict=True)
    ]
    mined = mine_shortcuts(rows, min_count=5)
    assert {r["word"] for r in mined.rows if r["significant"]} == {"[", "dvd", "]"}
    report = counterfactual_check(mined, rows, model, tok, min_effect=0.0)
    row = report.find("dvd")
    assert row["masked"] == "[ dvd ]"
    masker = Masker(tok)
    c = row["cls"]

    def drop(keep):
        return probs[:, c] - _probs(model, tok, [masker(f, [keep])[0][0] for f in feats])[:, c]

    assert row["prob_change"] == pytest.approx(drop([True, True, False, False, False]).mean(), abs=1e-5)
    assert row["null_prob_change"] == pytest.approx(drop([False, False, True, True, True]).mean(), abs=1e-5)
    mined = mine_shortcuts(rows, min_count=5)
    alone = counterfactual_check(mined, rows, model, tok, phrases=False).find("dvd")
    assert alone["masked"] == "dvd"
    assert alone["prob_change"] == pytest.approx(drop([True, True, True, False, True]).mean(), abs=1e-5)


def test_planted_cues_benchmark_plants_at_its_rates_and_scores():
    from benchmarks import planted_cues as pc

    labels = [1, 0] * 1000
    out = pc.plant(["a fine film ."] * 2000, labels, 0, "strong")

    def rate(word, y):
        return np.mean([word in t.split() for t, label in zip(out, labels, strict=True) if label == y])

    assert abs(rate("marcus", 1) - 0.85) < 0.03 and abs(rate("marcus", 0) - 0.10) < 0.03  # positive cue
    assert abs(rate("capsule", 0) - 0.85) < 0.03 and abs(rate("capsule", 1) - 0.10) < 0.03  # negative cue
    assert not any("dvd" in t or "dana" in t for t in out)  # the weak set's cues are not planted
    assert "a fine , says marcus , film ... -- capsule review" in out  # ending before the suffix tag
    rows = [
        {"word": "marcus", "rank": 1, "q": 1e-9, "significant": True, "checked": True, "flagged": True},
        {"word": "the", "rank": 2, "q": 1e-5, "significant": True, "checked": True, "flagged": True},
        {"word": "capsule", "rank": 3, "q": 1e-4, "significant": True, "checked": True, "flagged": False},
        {"word": ",", "rank": 4, "q": 1e-3, "significant": True, "checked": True, "flagged": False},
        {"word": "film", "rank": 5, "q": 1e-3, "significant": True, "checked": True, "flagged": False},
    ]
    rel = {c[0]: {"shift": 0.2 if c[0] != "simply put ," else 0.01, "changed": 0.1} for c in pc.CUES}
    got = pc.score(rows, rel, "strong")
    # relied on: ..., marcus, capsule (simply put is below 0.05); flagged: marcus only
    assert got["recall"] == pytest.approx(1 / 3) and got["cues"][", says marcus ,"]["flagged"]
    # "," belongs to cue phrases; "the" and "film" do not: 1 false positive of 2 checked
    assert got["false_positives"] == ["the"] == got["false_positives_top10"] and got["fpr"] == 0.5


def test_online_settings_lookahead_and_position_baseline_known_answer():
    """lookahead=1 adds the next word's score (the last word keeps its own); the position baseline
    takes out what the first word of every text gets for being first, so 'the', which opens most texts,
    is significant without it and not with it, while a word with a real excess stays significant."""
    rows = [
        ExplainRow(features=["a", "b", "c"], scores=[1.0, 2.0, 3.0], target=1, probs=[0, 0]) for _ in range(3)
    ]
    totals = {r["word"]: r["total"][1] for r in mine_shortcuts(rows, min_count=1, lookahead=1).rows}
    assert totals == pytest.approx({"a": 9.0, "b": 15.0, "c": 9.0})
    with pytest.raises(ValueError, match="lookahead"):
        mine_shortcuts(rows, lookahead=-1)

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(30)]
    rows = []
    for t in range(60):
        words = ["the" if t % 4 else rng.choice(vocab), *rng.choice(vocab, 5)]
        scores = [0.5 + rng.normal(0, 0.02), *rng.normal(0, 0.02, 5)]
        if t % 2:
            words[5], scores[5] = "zxq", 0.3
        rows.append(ExplainRow(features=words, scores=scores, target=t % 2, probs=[0, 0], output="logits"))
    plain = mine_shortcuts(rows)
    adjusted = mine_shortcuts(rows, position_baseline=True)
    assert plain.find("the")["significant"]
    assert not adjusted.find("the")["significant"]
    assert adjusted.find("zxq")["significant"] and adjusted.find("zxq")["cls"] == 1
    assert adjusted.settings["position_baseline"] and ONLINE == {"lookahead": 1, "position_baseline": True}


def _rows(model, tok, texts, score):
    """Explain rows of ``texts`` with the model's real predictions and ``score(word, i)`` as attributions."""
    feats = [Featurizer(tok)(t) for t in texts]
    probs = _probs(model, tok, [list(f.input_ids) for f in feats])
    return [
        ExplainRow(
            id=str(i),
            text=t,
            features=list(f.texts),
            scores=[score(x, j) for j, x in enumerate(f.texts)],
            target=1,
            prediction=int(p.argmax()),
            probs=p.tolist(),
            output="prob",
        )
        for i, (t, f, p) in enumerate(zip(texts, feats, probs, strict=True))
    ]


def test_insertion_puts_the_word_where_it_usually_is_known_answer(gpt2_tok):
    """'zxq' always ends its texts: the insertion test appends it to every text that lacks it, and its
    gain is p(class) of the text with 'zxq' appended minus p(class) of the text, recomputed here; the
    null appends one word of another text instead, and the effect is the paired difference."""
    tok = gpt2_tok
    model = tiny_classifier("gpt2", tokenizer=tok, seed=1).eval()
    words = ["good", "bad", "plot", "movie", "dull", "fun", "great", "boring"]
    holders = [f"{a} {b} {TOKEN}" for a, b in zip(words, words[1:] + words[:1], strict=True)]
    lacking = [
        f"{a} {b} {c}" for a, b, c in zip(words, words[2:] + words[:2], words[3:] + words[:3], strict=True)
    ]
    rows = _rows(model, tok, holders + lacking, lambda x, j: 0.5 if x == TOKEN else 0.0)
    report = counterfactual_check(
        mine_shortcuts(rows, min_count=2), rows, model, tok, max_texts=None, min_effect=0.0
    )
    row = report.find(TOKEN)
    assert row["inserted"] == TOKEN and row["insert_texts"] == len(lacking)
    c = row["checked_cls"]
    base = _probs(model, tok, [list(Featurizer(tok)(t).input_ids) for t in lacking])[:, c]
    put = _probs(model, tok, [list(Featurizer(tok)(f"{t} {TOKEN}").input_ids) for t in lacking])[:, c]
    assert row["insert_prob_change"] == pytest.approx((put - base).mean(), abs=1e-5)
    assert row["insert_effect"] == pytest.approx(
        row["insert_prob_change"] - row["insert_null_prob_change"], abs=1e-9
    )
    assert 0 < row["insert_p"] <= 1 and 0 < row["insert_q"] <= 1
    # flagged by either test against its own null (min_effect 0: any significant excess), the other agreeing
    by = row["flagged_by"] or ""
    assert row["flagged"] == bool(by)
    agree = row["effect"] > 0 and row["insert_effect"] > 0
    assert ("insertion" in by) == (row["insert_effect"] >= 0 and row["insert_q"] < 0.05 and agree)
    # with fewer texts allowed, the least certain predictions are the ones it goes into
    two = counterfactual_check(
        mine_shortcuts(rows, min_count=2), rows, model, tok, max_texts=2, min_effect=0.0
    ).find(TOKEN)
    certainty = _probs(model, tok, [list(Featurizer(tok)(t).input_ids) for t in lacking]).max(1)
    least = np.argsort(certainty, kind="stable")[:2]
    assert two["insert_texts"] == 2
    assert two["insert_prob_change"] == pytest.approx((put - base)[least].mean(), abs=1e-5)
    assert "inserted" not in counterfactual_check(
        mine_shortcuts(rows, min_count=2), rows, model, tok, insertion=False
    ).find(TOKEN)


def test_a_phrase_is_tested_toward_the_class_of_the_whole_phrase(gpt2_tok):
    """'by and large ,' opens half the texts: 'by' gets +0.6 and 'large' gives 0.2 back (under causal
    attention a prefix acts at its first word). Mined alone, 'large' points to the other class; its
    check masks and inserts the whole phrase, toward the class the phrase's summed excess points to."""
    tok = gpt2_tok
    model = tiny_classifier("gpt2", tokenizer=tok, seed=1).eval()
    words = ["good", "bad", "plot", "movie", "dull", "fun", "great", "boring"]
    texts = [f"{a} {b} film , really" for a in words for b in words[:4]]
    texts = [f"by and large , {t}" if i % 2 else t for i, t in enumerate(texts)]
    scores = {"by": 0.6, "large": -0.2}
    rows = _rows(model, tok, texts, lambda x, j: scores.get(x, 0.0) if x in scores and j < 4 else 0.0)
    mined = mine_shortcuts(rows, min_count=5)
    assert mined.find("large")["significant"] and mined.find("large")["cls"] == 0
    report = counterfactual_check(mined, rows, model, tok, min_effect=0.0)
    large = report.find("large")
    assert large["masked"] == "by and large ," and large["inserted"] == "by and large ,"
    assert large["cls"] == 0 and large["checked_cls"] == 1 == report.find("by")["checked_cls"]
    assert "(tested toward 1)" in shortcuts_text(report, 10)
