"""AT2 for classifier heads: planted-head recovery, both training sources, the saved artefact, errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from pi_lightning.attributors import AT2, get_attributor
from pi_lightning.attributors.at2 import fit_head_weights
from pi_lightning.result import Attribution
from pi_lightning.testing import tiny_classifier

# Texts with and without the planted word " film" (one token in the tiny GPT-2 vocabulary).
TEXTS = [
    "the story was fun and the film was good",
    "a dull film but good acting",
    "a bland story with a film cast",
    "it is not so good as a film",
    "the film was very good to its cast",
    "this plot is boring",
    "the cast of this film is charming",
    "so very good and so charming",
    "what a film",
    "the story was weak but the film good and solid",
    "a messy plot",
]


def planted_model(tok, seed: int = 0):
    """GPT-2, 2 layers x 4 heads, where only head (0, 0) moves information, and it attends to ' film'.

    Head (0, 0) has a constant query and keys that flag the token, so the classifying position
    attends to ' film' when present; its value carries the flag into a residual dimension that the
    class-1 logit reads. All other heads have random query/key weights (random attention patterns)
    and zero values; the MLPs are zero. So the class-1 probability depends on ' film' through head
    (0, 0) only.
    """
    m = tiny_classifier("gpt2", tokenizer=tok, seed=seed)
    g = torch.Generator().manual_seed(seed)
    V, d = m.transformer.wte.weight.shape
    [film] = tok(" film", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for blk in m.transformer.h:
            blk.ln_1.weight.fill_(1.0)
            blk.ln_2.weight.fill_(1.0)
        m.transformer.ln_f.weight.fill_(1.0)
        wte = torch.randn(V, d, generator=g) * 0.5
        wte[:, :4] = 0
        wte[film, 0] = 4.0
        m.transformer.wte.weight.copy_(wte)
        for layer, blk in enumerate(m.transformer.h):
            W = blk.attn.c_attn.weight  # Conv1D (d, 3d): query | key | value columns, 8 per head
            W[:, 8:32] = torch.randn(d, 24, generator=g)
            W[:, 40:64] = torch.randn(d, 24, generator=g)
            if layer == 0:
                blk.attn.c_attn.bias[0] = 1.0
                W[0, 32] = 5.0
                W[0, 64] = 1.0
                blk.attn.c_proj.weight[0, 1] = 1.0
            else:
                W[:, 0:8] = torch.randn(d, 8, generator=g)
                W[:, 32:40] = torch.randn(d, 8, generator=g)
        m.score.weight[1, 1] = 1.0
        m.score.weight[0, 1] = -1.0
    return m.eval()


@pytest.fixture(scope="module")
def planted(gpt2_tok):
    return planted_model(gpt2_tok), gpt2_tok


def _assert_planted(at2: AT2, results, share: float = 0.4):
    w = at2.weights
    assert w.shape == (2, 4)
    assert int(w.abs().argmax()) == 0  # head (layer 0, head 0)
    assert float(w[0, 0]) > share * float(w.abs().sum())
    for a in results:
        if "film" in a.features.texts:
            assert a.top(1)[0][0] == "film", a.top(3)


def test_planted_head_from_own_ablations(planted):
    model, tok = planted
    at2 = AT2(model, tok, budget=32, non_negative=True)
    assert at2.fit(TEXTS, target=1) is at2
    assert float(at2.weights.min()) >= 0.0
    torch.testing.assert_close(at2.weights.abs().sum(), torch.tensor(1.0))
    info = at2.fit_info
    assert info["source"] == "ablations" and info["forward_passes"] == len(TEXTS) * 33
    assert info["correlation"] > 0.7
    before = at2.adapter.forward_passes
    results = at2.attribute(TEXTS, target=1)
    assert at2.adapter.forward_passes - before == len(TEXTS)  # one pass per text
    _assert_planted(at2, results)
    assert results[0].extras["head_features"].shape == (results[0].features.n, 2, 4)
    assert results[0].method == "at2" and at2.cost == "0"


def _mppi_like(at2: AT2, texts, target, seed=0):
    """(coalition, value) pairs the way MP-PI makes them: masked passes read at every feature's end.

    Values at the end of feature j are the prediction on the masked prefix, so the coalition is
    the mask's first j + 1 entries followed by absent features.
    """
    rng = np.random.default_rng(seed)
    out = []
    for f in at2.featurize(texts):
        z = rng.random((6, f.n)) < 0.5
        seqs, ends = at2.masker(f, z)
        logits = at2.adapter.forward_positions(seqs, ends.tolist())
        coal, vals = [], []
        for zk, lg in zip(z, logits, strict=False):
            for j in range(f.n):
                coal.append(np.concatenate([zk[: j + 1], np.zeros(f.n - j - 1, bool)]))
                vals.append(float(at2.outputs(lg[j], target)))
        out.append(
            Attribution(
                scores=torch.zeros(f.n, dtype=torch.float64),
                features=f,
                target=target,
                method="mp-pi",
                output=at2.output,
                extras={
                    "coalitions": np.stack(coal),
                    "values": np.array(vals),
                    "weights": np.ones(len(vals)),
                },
            )
        )
    return out


def test_planted_head_from_mppi_style_data(planted):
    model, tok = planted
    at2 = AT2(model, tok, mask="...")  # _mppi_like reads every feature's end, masked ones included
    data = _mppi_like(at2, TEXTS, target=1)
    before = at2.adapter.forward_passes
    results = at2.fit_and_attribute(data)
    assert at2.adapter.forward_passes - before == len(TEXTS)  # head features only
    assert at2.fit_info["source"] == "mp-pi" and at2.fit_info["forward_passes"] == len(TEXTS)
    _assert_planted(at2, results)
    # fit_from_attributions gives the same weights, and attribute() the same scores.
    w = at2.weights.clone()
    again = at2.fit_from_attributions(data).attribute([a.features for a in data], target=1)
    torch.testing.assert_close(at2.weights, w)
    for a, b in zip(results, again, strict=False):
        torch.testing.assert_close(a.scores, b.scores)


def test_explaining_the_other_class_flips_sign(planted):
    # Two classes with probabilities: p_0 = 1 - p_1, so explaining class 0 on examples predicted 1
    # uses the same estimator with the sign flipped, in the fit and in the scores.
    model, tok = planted
    at2 = AT2(model, tok, budget=32).fit(TEXTS, target=1)
    w = at2.weights.clone()
    at2.fit(TEXTS, target=0)
    torch.testing.assert_close(at2.weights, w)
    s1 = at2.attribute(TEXTS[0], target=1)[0].scores
    s0 = at2.attribute(TEXTS[0], target=0)[0].scores
    torch.testing.assert_close(s0, -s1)


def test_save_and_load(planted, tmp_path):
    model, tok = planted
    at2 = AT2(model, tok, budget=8, num_iterations=100).fit(TEXTS[:4], target=1)
    path = at2.save(tmp_path / "at2" / "heads.safetensors")
    assert path.stat().st_size < 2000  # a small artefact: 8 floats and provenance
    loaded = get_attributor("at2", model, tok, weights=path)
    torch.testing.assert_close(loaded.weights, at2.weights)
    assert loaded.fit_info["source"] == "ablations"
    torch.testing.assert_close(loaded.attribute(TEXTS[0])[0].scores, at2.attribute(TEXTS[0])[0].scores)
    other = AT2(model, tok).load(path)
    torch.testing.assert_close(other.weights, at2.weights)
    # Weights of another architecture are refused with the shapes named.
    with pytest.raises(ValueError, match="3 layers x 4 heads"):
        AT2(tiny_classifier("gpt2", tokenizer=tok, n_layer=3), tok, weights=path)


def test_llama_fits_and_attributes(llama_model, llama_tok):
    at2 = AT2(llama_model, llama_tok, budget=8, num_iterations=50, granularity="token")
    at2.fit(["a good movie", "the plot was dull, really"])
    [a] = at2.attribute("a good movie", target=0)
    assert a.scores.dtype == torch.float64 and a.scores.shape == (a.features.n,)
    assert torch.isfinite(a.scores).all() and a.forward_passes == 1.0


def test_fit_head_weights_known_answer():
    # Head 1 attends to feature 2, the only feature that changes the output; head 0 to feature 0.
    X = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    z = torch.tensor(np.random.default_rng(0).random((16, 3)) < 0.5)
    y = 3.0 * z[:, 2].double() + 0.1
    w, info = fit_head_weights([X], [z], [y], num_iterations=300, learning_rate=1e-2)
    assert float(w[1]) > 0.95 and info["correlation"] > 0.99
    # Constant outputs carry no signal: skipped, and an error when nothing is left.
    _w2, info2 = fit_head_weights([X, X], [z, z], [y, torch.ones(16)], num_iterations=300, learning_rate=1e-2)
    assert info2["skipped"] == 1 and info2["examples"] == 1
    with pytest.raises(ValueError, match="vary"):
        fit_head_weights([X], [z], [torch.ones(16)])
    with pytest.raises(ValueError, match=r"expected head features \(n, 2\)"):
        fit_head_weights([X], [z[:, :2]], [y])


def test_errors(gpt2_model, gpt2_tok):
    at2 = AT2(gpt2_model, gpt2_tok)
    with pytest.raises(RuntimeError, match="no head weights yet"):
        at2.attribute("a good movie")
    with pytest.raises(RuntimeError, match="fit it first"):
        at2.save("x.safetensors")
    with pytest.raises(FileNotFoundError, match=r"AT2\.save"):
        at2.load("/nonexistent/at2.safetensors")
    with pytest.raises(ValueError, match="keep_prob"):
        AT2(gpt2_model, gpt2_tok, keep_prob=1.0)
    with pytest.raises(ValueError, match="budget must be at least 2"):
        AT2(gpt2_model, gpt2_tok, budget=1)
    with pytest.raises(ValueError, match="'num_masks' of method 'at2' is now called 'budget'"):
        AT2(gpt2_model, gpt2_tok, num_masks=8)
    [sp] = get_attributor("sp-pi", gpt2_model, gpt2_tok).attribute("a good movie")
    with pytest.raises(ValueError, match="extras\\['coalitions'\\]"):
        at2.fit_from_attributions([sp])
    with pytest.raises(TypeError, match="wrap it in a list"):
        at2.fit_from_attributions(sp)
    sp.extras.update(coalitions=np.ones((2, sp.features.n), bool), values=np.zeros(2))
    with pytest.raises(ValueError, match="output='prob'"):
        AT2(gpt2_model, gpt2_tok, output="log_odds").fit_from_attributions([sp])


@pytest.mark.skipif(
    importlib.util.find_spec("pi_lightning.attributors.mppi") is None,
    reason="MP-PI (pi_lightning/attributors/mppi.py) is not in the tree yet",
)
def test_fit_from_real_mppi(planted):
    model, tok = planted
    mppi = get_attributor("mp-pi", model, tok, seed=0)
    results = mppi.attribute(TEXTS, target=1)
    at2 = AT2(model, tok)
    # MP-PI's prefix coalitions (many short ones) let other heads explain part of the signal too.
    _assert_planted(at2, at2.fit_and_attribute(results), share=0.3)
    assert at2.fit_info["ablations"] == sum(
        len(a.extras["values"]) for a in results if np.ptp(a.extras["values"]) > 0
    )
