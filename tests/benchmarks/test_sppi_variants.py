"""benchmarks/sppi_variants.py: SP-PI's variants are what they say (known answers on the tiny GPT-2), and
the validation -> test chain chooses on one split and reports the choice on the other."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from benchmarks import sppi_variants as sv
from benchmarks._common import coalition_game

TINY = ["--model", "testing:gpt2", "--adapter", "none", "--threads", "1"]
TEXTS = ["a good movie , really .", "bad plot and dull acting"]


@pytest.mark.parametrize("space", sv.OUTPUT_SPACES)
def test_every_output_space_keeps_local_accuracy(gpt2_model, gpt2_tok, space):
    """phi sums to v(N) - v(empty) in the space the increments are taken in (Proposition 1)."""
    runner = sv.VariantRunner(gpt2_model, gpt2_tok, "Review: {text}", "remove", "word", 8192, 0)
    out = runner.attribute(TEXTS, [1, 0], [f"sp-pi[{space}]", f"sp-pi+reversed-perm[{space}]"])
    for a_fwd, a_rev, c in zip(
        out[f"sp-pi[{space}]"], out[f"sp-pi+reversed-perm[{space}]"], [1, 0], strict=True
    ):
        f = a_fwd.features
        full = runner.adapter.final_logits([f.input_ids])
        empty = runner.adapter.final_logits(runner.masker(f, np.zeros((1, f.n), bool))[0])
        total = float(sv.output_values(full, c, space)[0] - sv.output_values(empty, c, space)[0])
        assert float(a_fwd.scores.sum()) == pytest.approx(total, abs=1e-5)
        assert float(a_rev.scores.sum()) == pytest.approx(total, abs=1e-5)


def test_reversed_permutation_is_the_two_permutation_shapley_estimate(gpt2_model, gpt2_tok):
    """Under removal: the average of the marginal contributions along the identity and the reversed
    order, from brute-force evaluations of the masked model."""
    runner = sv.VariantRunner(gpt2_model, gpt2_tok, "Review: {text}", "remove", "word", 8192, 0)
    [a] = runner.attribute(TEXTS[1:], [0], ["sp-pi+reversed-perm[log_odds]"])["sp-pi+reversed-perm[log_odds]"]
    f = a.features
    game = coalition_game(runner.adapter, runner.masker, f, 0, "log_odds")
    ref = np.zeros(f.n)
    for order in (range(f.n), reversed(range(f.n))):
        z = np.zeros(f.n, bool)
        for i in order:
            before = game(z[None])[0]
            z[i] = True
            ref[i] += 0.5 * (game(z[None])[0] - before)
    np.testing.assert_allclose(a.scores.numpy(), ref, atol=1e-5)
    assert a.forward_passes == 1.0 + f.n


def test_reversed_text_and_other_templates_score_the_trained_features(gpt2_model, gpt2_tok):
    """A variant made with another template or on the reversed text is mapped back onto the trained
    template's features, word for word."""
    runner = sv.VariantRunner(gpt2_model, gpt2_tok, "Review: {text}", "remove", "word", 8192, 0)
    names = ["sp-pi[prob]", "sp-pi[prob:none]", "sp-pi+reversed-text[prob]"]
    out = runner.attribute(TEXTS, [1, 1], names)
    trained = runner.base.featurize(TEXTS)
    for name in names:
        assert [a.features for a in out[name]] == trained
    bare = sv.SPPI(gpt2_model, gpt2_tok, template="{text}").attribute(TEXTS, target=1)
    for a, b in zip(out["sp-pi[prob:none]"], bare, strict=True):
        torch.testing.assert_close(a.scores, b.scores)
    rev = sv.SPPI(gpt2_model, gpt2_tok, template="Review: {text}").attribute(
        [" ".join(reversed(t.split())) for t in TEXTS], target=1
    )
    for a, fwd, r in zip(out["sp-pi+reversed-text[prob]"], out["sp-pi[prob]"], rev, strict=True):
        torch.testing.assert_close(a.scores, 0.5 * (fwd.scores + r.scores.flip(0)))


def test_bad_variant_names_are_named():
    with pytest.raises(ValueError, match="Unknown variant 'sp-pi\\[margin\\]'"):
        sv.parse_variant("sp-pi[margin]")
    with pytest.raises(ValueError, match="Unknown template key 'chat'"):
        sv.parse_variant("sp-pi[prob:chat]")
    assert [sv.parse_variant(n)[0] for n in sv.variant_names("{text}")].count("sp-pi") == 4 * (
        1 + len(sv.TEMPLATES)
    )


def test_validation_chooses_and_test_reports_the_choice(tmp_path):
    val = sv.main(
        [
            *TINY,
            "--examples",
            "2",
            "--max-features",
            "8",
            "--masks",
            "remove",
            "--peers",
            "random",
            "--variants",
            "sp-pi[prob],sp-pi[log_odds],sp-pi[logits:none]",
            "--out",
            str(tmp_path),
        ]
    )
    rows = val["masks"]["remove"]["rows"]
    free = [m for m in rows if m.startswith("sp-pi[")]
    assert val["chosen"]["variant"] == max(free, key=lambda m: rows[m]["gap"][0])
    for m, r in rows.items():  # the gap is AS - IAS per sentence
        per = val["masks"]["remove"]["per_example"][m]
        assert per["gap"] == pytest.approx(
            [a - b for a, b in zip(per["as_auc"], per["ias_auc"], strict=True)]
        )
        assert np.isfinite(r["gap_log_odds"][0])
    test = sv.main(
        [
            *TINY,
            "--split",
            "test",
            "--examples",
            "2",
            "--max-features",
            "8",
            "--masks",
            "remove,...",
            "--peers",
            "random,kernel-shap",
            "--variants",
            "sp-pi[log_prob]",
            "--out",
            str(tmp_path),
            "--chosen-from",
            str(tmp_path / "sppi_variants_validation.json"),
        ]
    )
    assert test["chosen"]["variant"] == val["chosen"]["variant"]
    assert val["chosen"]["variant"] in test["masks"]["..."]["rows"]
    assert sv.DEFAULT in test["masks"]["remove"]["rows"]
    saved = json.loads((tmp_path / "sppi_variants_test.json").read_text())
    assert saved["chosen"]["variant"] == val["chosen"]["variant"]
    md = (tmp_path / "sppi_variants_test.md").read_text()
    assert "Chosen on validation" in md and "Kernel SHAP 2n" in md
    assert list(itertools.islice(saved["masks"], 2)) == ["remove", "..."]
    # A test run started without the choice makes none of its own; the validation choice is attached after.
    alone = sv.main(
        [
            *TINY,
            *("--split", "test", "--examples", "1", "--max-features", "8", "--masks", "remove"),
            *("--peers", "random", "--variants", "sp-pi[log_odds]", "--out", str(tmp_path), "--tag", "a"),
        ]
    )
    assert "chosen" not in alone
    val_json = str(tmp_path / "sppi_variants_validation.json")
    attached = sv.main(["--split", "test", "--tag", "a", "--out", str(tmp_path), "--attach-choice", val_json])
    assert attached["chosen"]["variant"] == val["chosen"]["variant"]
    assert attached["masks"]["remove"]["per_example"] == alone["masks"]["remove"]["per_example"]
    assert "Chosen on validation" in (tmp_path / "sppi_variants_test_a.md").read_text()
