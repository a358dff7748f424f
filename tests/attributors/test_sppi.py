"""SP-PI: Eqn 6, local accuracy, targets, p_0, and bad input."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from pi_lightning import SPPI, get_attributor
from pi_lightning.attributors.sppi import progressive_differences
from pi_lightning.inference import ClassifierAdapter, transform_outputs

TEXTS = ["a good movie, really.", "bad plot and dull acting", "Wow!! Really? It's a 10/10."]


@pytest.mark.parametrize("output", ["prob", "logits", "log_odds"])
def test_local_accuracy_exact(tiny, output):
    _, model, tok = tiny
    for a in SPPI(model, tok, output=output).attribute(TEXTS, target=1):
        final_feature = a.extras["intermediate"][-1]
        assert float(a.scores.sum()) == pytest.approx(float(final_feature) - a.base_value, abs=1e-12)


def test_matches_eqn6_on_prefix_runs(tiny):
    """phi_i = p_i - p_{i-1} with p_i the model's prediction on the prefix ending at feature i."""
    _, model, tok = tiny
    sppi = SPPI(model, tok, template="Review: {text}")
    [a] = sppi.attribute(TEXTS[0], target=0)
    f = a.features
    ps = []
    for end in [f.context_end - 1, *f.ends]:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([f.input_ids[: end + 1]])).logits[0]
        ps.append(float(transform_outputs(logits, "prob")[0]))
    ref = torch.diff(torch.tensor(ps, dtype=torch.float64))
    torch.testing.assert_close(a.scores, ref, atol=1e-5, rtol=0)
    assert a.base_value == pytest.approx(ps[0], abs=1e-5)


def test_no_context_p0_from_masked_input(gpt2_model, gpt2_tok):
    [a] = SPPI(gpt2_model, gpt2_tok, mask="...").attribute("good movie", target=1)
    assert a.features.context_end == 0
    with torch.no_grad():
        p0 = torch.softmax(
            gpt2_model(input_ids=torch.tensor([gpt2_tok("... ...")["input_ids"]])).logits[0], -1
        )[1]
    assert a.base_value == pytest.approx(float(p0), abs=1e-5)
    # The default, removal: p0 is the model's output on the anchor token alone (BOS, else EOS).
    [r] = SPPI(gpt2_model, gpt2_tok).attribute("good movie", target=1)
    with torch.no_grad():
        p0 = torch.softmax(gpt2_model(input_ids=torch.tensor([[gpt2_tok.bos_token_id]])).logits[0], -1)[1]
    assert r.base_value == pytest.approx(float(p0), abs=1e-5)


def test_targets(gpt2_model, gpt2_tok):
    sppi = SPPI(gpt2_model, gpt2_tok)
    pred = sppi.attribute(TEXTS)
    assert [a.target for a in pred] == [a.prediction for a in pred]
    per = sppi.attribute(TEXTS, target=[0, 1, 0])
    assert [a.target for a in per] == [0, 1, 0]
    both = sppi.attribute(TEXTS[0], target=0)[0].scores + sppi.attribute(TEXTS[0], target=1)[0].scores
    torch.testing.assert_close(both, torch.zeros_like(both), atol=1e-6, rtol=0)  # probabilities sum to 1
    with pytest.raises(ValueError, match=re.escape("Target class 2 is not a class index in 0..1.")):
        sppi.attribute(TEXTS[0], target=2)
    with pytest.raises(
        ValueError, match=re.escape("Got 2 targets for 3 texts: give one per text, or a single int.")
    ):
        sppi.attribute(TEXTS, target=[0, 1])


def test_batched_equals_one_by_one(tiny):
    _, model, tok = tiny
    sppi = SPPI(model, tok, template="Review: {text}")
    batched = sppi.attribute(TEXTS, target=1)
    for text, b in zip(TEXTS, batched, strict=False):
        [single] = sppi.attribute(text, target=1)
        torch.testing.assert_close(single.scores, b.scores, atol=1e-6, rtol=0)


def test_one_feature_and_registry(gpt2_model, gpt2_tok):
    [a] = get_attributor("sp-pi", gpt2_model, gpt2_tok).attribute("great", target=1)
    assert a.scores.shape == (1,) and a.method == "sp-pi"
    with pytest.raises(ValueError, match="Unknown attribution method 'nope': expected one of"):
        get_attributor("nope", gpt2_model, gpt2_tok)


def test_long_text_warns_and_truncates(gpt2_tok):
    from pi_lightning.testing import tiny_classifier

    model = tiny_classifier("gpt2", tokenizer=gpt2_tok, n_positions=32)
    sppi = SPPI(model, gpt2_tok, template="Review: {text} End")
    with pytest.warns(UserWarning, match="does not fit the model's context of 32 tokens"):
        [a] = sppi.attribute(" ".join(["good movie"] * 40), target=1)
    assert len(a.features.input_ids) <= 32
    (masked,), _ = sppi.masker(a.features, torch.zeros((1, a.features.n), dtype=torch.bool))
    assert len(masked) <= 32  # the fully masked input fits too
    assert ClassifierAdapter(model).max_length == 32


def test_progressive_differences_matches_a_loop():
    """The one vectorised SP-PI: at every end after the first, the value there minus at the previous end."""
    g = torch.Generator().manual_seed(0)
    values = torch.rand(5, 11, generator=g, dtype=torch.float64)
    is_end = torch.rand(5, 11, generator=g) < 0.4
    phi, scored = progressive_differences(values, is_end)
    for r in range(5):
        ends = is_end[r].nonzero().flatten().tolist()
        want = torch.zeros(11, dtype=torch.float64)
        for prev, e in itertools.pairwise(ends):
            want[e] = values[r, e] - values[r, prev]
        torch.testing.assert_close(phi[r], want, atol=0, rtol=0)
        assert scored[r].nonzero().flatten().tolist() == ends[1:]


@pytest.mark.parametrize("template", ["{text}", "Review: {text}"])
def test_batched_sppi_equals_the_per_text_path(tiny, template):
    """SP-PI of a batch (one padded progressive_differences call) equals each text's p_i - p_{i-1}
    read from its own per-position outputs, with and without context before the text."""
    _, model, tok = tiny
    sppi = SPPI(model, tok, template=template, output="log_odds")
    adapter = ClassifierAdapter(model)
    for a in sppi.attribute(TEXTS, target=1):
        f = a.features
        [per_position] = adapter.forward_positions([f.input_ids])
        p = transform_outputs(per_position, "log_odds")[:, 1]
        p0 = p[f.context_end - 1] if f.context_end else a.base_value
        ref = torch.diff(torch.cat([torch.tensor([float(p0)], dtype=torch.float64), p[list(f.ends)]]))
        # the reference ran each text alone: equal up to float32 batching round-off
        torch.testing.assert_close(a.scores, ref, atol=1e-5, rtol=0)
        last = float(a.extras["intermediate"][-1])
        assert float(a.scores.sum()) == pytest.approx(last - a.base_value, abs=1e-12)
