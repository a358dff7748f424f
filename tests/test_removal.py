"""Removal masking (``mask="remove"``) end to end: the anchor for the empty input, every method and
metric under removal, and the known answer that PI's prefix game *is* the full-input game under removal."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
import torch

from pi_lightning.attributors import available_methods, get_attributor
from pi_lightning.features import Featurizer
from pi_lightning.inference import ClassifierAdapter
from pi_lightning.masking import Masker
from pi_lightning.metrics import METRICS, evaluate_faithfulness
from pi_lightning.testing import exact_shapley

TEXTS = ["a good movie, really bad.", "bad", "the plot is dull"]
FAST = {
    "ig": {"budget": 4},
    "kernel-shap": {"budget": 8},
    "udig": {"budget": 4},
    "mp-pi": {"seed": 0},
    "at2": {"budget": 4, "num_iterations": 20},
}


def test_empty_coalition_without_context_is_the_anchor_token(gpt2_tok):
    f = Featurizer(gpt2_tok)("a good movie")
    assert f.context_end == 0
    m = Masker(gpt2_tok, "remove")
    # GPT-2 style tokenizers: <|endoftext|> is both BOS and EOS.
    assert m.anchor_id == gpt2_tok.bos_token_id
    seqs, ends = m(f, [[False, False, False], [False, True, False], [True, True, True], [True, False, False]])
    assert seqs[0] == [gpt2_tok.bos_token_id] and ends[0].tolist() == [0, 0, 0]
    # A non-empty coalition is exactly its remaining text: no anchor.
    L0, L1 = len(f.feature_ids(0)), len(f.feature_ids(1))
    assert seqs[1] == list(f.feature_ids(1)) and ends[1].tolist() == [-1, L1 - 1, L1 - 1]
    assert seqs[2] == list(f.input_ids)
    assert seqs[3] == list(f.feature_ids(0)) and ends[3].tolist() == [L0 - 1] * 3


def test_empty_coalition_with_context_is_the_context(llama_tok, gpt2_tok):
    f = Featurizer(llama_tok)("a good movie")  # Llama adds BOS: context before the text
    seqs, ends = Masker(llama_tok, "remove")(f, [[False, False, False]])
    assert seqs[0] == [llama_tok.bos_token_id] and ends[0].tolist() == [0, 0, 0]
    g = Featurizer(gpt2_tok, template="Review: {text}")("a good movie")
    seqs, ends = Masker(gpt2_tok, "remove")(g, [[False, False, False]])
    assert seqs[0] == list(g.prefix_ids) and (ends[0] == g.context_end - 1).all()


def test_tokenizer_without_bos_or_eos_is_explained(gpt2_tok):
    m = Masker(gpt2_tok, "remove")
    m.anchor_id = None
    f = Featurizer(gpt2_tok)("a good movie")
    m(f, [[True, False, True]])  # non-empty coalitions need no anchor
    with pytest.raises(ValueError, match="BOS or EOS"):
        m(f, [[False, False, False]])


@pytest.mark.parametrize("template", ["{text}", "Review: {text}"])
@pytest.mark.parametrize("name", available_methods())
def test_every_method_and_metric_under_removal(tiny, name, template):
    _arch, model, tok = tiny
    att = get_attributor(name, model, tok, mask="remove", template=template, **FAST.get(name, {}))
    if name == "at2":
        att.fit(TEXTS, target=1)
    out = att.attribute(TEXTS, target="predicted")
    assert [a.features.n for a in out] == [7, 1, 4]
    for a in out:
        assert torch.isfinite(a.scores).all() and a.method == name
    res = evaluate_faithfulness(out, att.adapter, att.masker)
    for metric in METRICS:
        vals = getattr(res, metric)
        assert vals is not None and torch.isfinite(vals).all(), metric


def test_sppi_local_accuracy_under_removal_without_context(gpt2_model, gpt2_tok):
    sp = get_attributor("sp-pi", gpt2_model, gpt2_tok, mask="remove")
    [a] = sp.attribute("a good movie", target=1)
    adapter = ClassifierAdapter(gpt2_model)
    [anchor] = adapter.forward_positions([[gpt2_tok.bos_token_id]])
    p0 = float(torch.softmax(anchor[-1].double(), -1)[1])
    assert a.base_value == pytest.approx(p0, abs=1e-6)
    assert float(a.scores.sum()) == pytest.approx(float(a.probs[1]) - p0, abs=1e-6)


def _prefix_and_full_games(model, tok, text, mask, template="{text}"):
    """Exact Shapley values of PI's prefix game (each coalition S read inside the pass of its S+
    input, at the end of S's last active feature) and of the full-input game (S's own masked input)."""
    f = Featurizer(tok, template=template)(text)
    n = f.n
    masker = Masker(tok, mask)
    adapter = ClassifierAdapter(model)
    Z = np.array(list(product([False, True], repeat=n)), dtype=bool)
    last = np.where(Z.any(1), n - 1 - np.argmax(Z[:, ::-1], axis=1), -1)
    # S+ input of S: S plus every feature after its last active one (what MP-PI runs).
    plus = Z | (np.arange(n)[None, :] > last[:, None])
    pseqs, pends = masker(f, plus)
    fseqs, _ = masker(f, Z)
    pos = [[int(pends[r, last[r]])] for r in range(len(Z))]
    # The empty coalition (row 0, where `last` is -1): the fully masked input read at its last
    # feature's end, as SP-PI and MP-PI read f(empty) (the anchor, or the context's last token).
    (pseqs[0],), e0 = masker(f, Z[:1])
    pos[0] = [int(e0[0, -1])]
    prefix = torch.stack([lg[0] for lg in adapter.forward_positions(pseqs, pos)])
    full = adapter.final_logits(fseqs)
    vp = torch.softmax(prefix.double(), -1)[:, 1].numpy()
    vf = torch.softmax(full.double(), -1)[:, 1].numpy()
    return vp, vf, exact_shapley(lambda _z: vp, n), exact_shapley(lambda _z: vf, n)


@pytest.mark.parametrize("template", ["{text}", "Review: {text}"])
def test_prefix_game_is_the_full_game_under_removal(tiny, template):
    _, model, tok = tiny
    vp, vf, phi_p, phi_f = _prefix_and_full_games(model, tok, "a good movie, really", "remove", template)
    # Every intermediate prediction is an exact evaluation of the removal-masked input.
    np.testing.assert_allclose(vp, vf, atol=1e-5)
    np.testing.assert_allclose(phi_p, phi_f, atol=1e-5)


def test_prefix_game_differs_from_the_full_game_under_dots(gpt2_model, gpt2_tok):
    """The same construction under '...' (trailing masks unseen by the prefix) gives another game."""
    vp, vf, phi_p, phi_f = _prefix_and_full_games(gpt2_model, gpt2_tok, "a good movie, really", "...")
    assert np.abs(vp - vf).max() > 1e-4 and np.abs(phi_p - phi_f).max() > 1e-5


def test_mppi_values_are_removal_game_values(gpt2_model, gpt2_tok):
    """Every coalition MP-PI reads from its passes has the value of its own removal-masked input."""
    mp = get_attributor("mp-pi", gpt2_model, gpt2_tok, mask="remove", seed=0, budget="3n")
    [(Z, v, _w)] = mp.collect(["a good movie, really bad."], 1)
    f = mp.featurize("a good movie, really bad.")[0]
    seqs, _ = mp.masker(f, Z.numpy())
    direct = torch.softmax(mp.adapter.final_logits(seqs).double(), -1)[:, 1].numpy()
    np.testing.assert_allclose(v.numpy(), direct, atol=1e-5)


def test_ig_under_removal_integrates_from_the_paper_mask(gpt2_model, gpt2_tok):
    ig_r = get_attributor("ig", gpt2_model, gpt2_tok, mask="remove", budget=8)
    ig_d = get_attributor("ig", gpt2_model, gpt2_tok, mask="...", budget=8)
    [ar], [ad] = ig_r.attribute("a good movie", target=1), ig_d.attribute("a good movie", target=1)
    assert ar.extras["f_baseline"] == pytest.approx(ad.extras["f_baseline"], abs=1e-9)
    torch.testing.assert_close(ar.scores, ad.scores)
    assert ar.extras["f_baseline"] != pytest.approx(ar.extras["f_input"], abs=1e-6)
