"""Baseline attribution methods (paper Table 2): known answers, cost strings, and side-effect freedom."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch

from pi_lightning.attributors import (
    GAE,
    LRP,
    ALast,
    InputXGradientAttributor,
    IntegratedGradientsAttributor,
    KernelShapAttributor,
    RandomAttributor,
    get_attributor,
)
from pi_lightning.attributors.base import aggregate
from pi_lightning.features import Featurizer
from pi_lightning.testing import exact_shapley, tiny_classifier

TEXT = "a good movie, really bad."
COSTS = {
    "random": "0",
    "a-last": "0",
    "gae": "1x",
    "inputxgrad": "1x",
    "ig": "2n",
    "lrp": "1x",
    "kernel-shap": "2n",
}
FAST = {"ig": {"budget": 4}, "kernel-shap": {"budget": 8}}


def _snapshot(model):
    """Everything a method could leave changed on the model."""
    hf = model
    return {
        "impl": hf.config._attn_implementation,
        "config": copy.deepcopy({k: v for k, v in hf.config.to_dict().items()}),
        "training": [m.training for m in hf.modules()],
        "requires_grad": [p.requires_grad for p in hf.parameters()],
        "grads": [p.grad is None for p in hf.parameters()],
        "params": [p.detach().clone() for p in hf.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in hf.modules()
        ],
        "impls": [getattr(getattr(m, "config", None), "_attn_implementation", None) for m in hf.modules()],
    }


def _assert_same(a, b):
    for key in a:
        if key == "params":
            assert all(torch.equal(x, y) for x, y in zip(a[key], b[key], strict=False)), key
        else:
            assert a[key] == b[key], key


def _unusual_state(model):
    """Train mode and one frozen parameter, so that restoring (not just resetting) is tested."""
    model.train()
    next(model.parameters()).requires_grad_(False)
    return model


def test_registered_with_paper_costs(gpt2_model, gpt2_tok):
    for name, cost in COSTS.items():
        att = get_attributor(name, gpt2_model, gpt2_tok)  # default budgets: the paper's costs
        assert att.cost == cost and att.name == name
    # A fixed budget is a fixed cost ("8x": 8 sampled coalitions), as for MP-PI.
    assert get_attributor("kernel-shap", gpt2_model, gpt2_tok, budget=8).cost == "8x"
    assert get_attributor("ig", gpt2_model, gpt2_tok).forward_equivalents(7) == 14.0
    assert get_attributor("ig", gpt2_model, gpt2_tok, budget=5).forward_equivalents(7) == 10.0
    assert get_attributor("kernel-shap", gpt2_model, gpt2_tok).forward_equivalents(7) == 14.0
    assert get_attributor("lrp", gpt2_model, gpt2_tok).forward_equivalents(7) == 1.0


@pytest.mark.parametrize("name", list(COSTS))
def test_every_method_gives_finite_scores_and_leaves_model_as_found(tiny, name):
    _arch, model, tok = tiny
    _unusual_state(model)
    before = _snapshot(model)
    rng = torch.get_rng_state()
    att = get_attributor(name, model, tok, **FAST.get(name, {}))
    out = att.attribute([TEXT, "bad", "the plot is dull"], target="predicted")
    assert [a.features.n for a in out] == [7, 1, 4]
    for a in out:
        assert a.scores.dtype == torch.float64 and torch.isfinite(a.scores).all()
        assert a.method == name and a.forward_passes >= 1
    _assert_same(before, _snapshot(model))
    assert torch.equal(rng, torch.get_rng_state()), "the global RNG was touched"


def test_ig_completeness_at_128_steps(tiny):
    _arch, model, tok = tiny
    ig = IntegratedGradientsAttributor(model, tok, budget=128, template="Review: {text}")
    [a] = ig.attribute(TEXT, target=1)
    # Stated tolerance: 1e-3 in probability (measured ~1e-7 with Gauss-Legendre on the tiny models).
    assert abs(float(a.scores.sum()) - (a.extras["f_input"] - a.extras["f_baseline"])) < 1e-3
    # f(x) through the embedding path equals the ordinary token-id path.
    f = a.features
    [lg] = ig.adapter.forward_positions([list(f.input_ids)], [[len(f.input_ids) - 1]])
    assert a.extras["f_input"] == pytest.approx(float(torch.softmax(lg[0].double(), -1)[1]), abs=1e-5)
    # f(baseline) is the prediction with every text token's embedding replaced by the mask's ("..." -> one
    # token here), which differs from the unmasked prediction.
    assert abs(a.extras["f_input"] - a.extras["f_baseline"]) > 1e-4


def test_input_x_gradient_matches_autograd(gpt2_model, gpt2_tok):
    f = Featurizer(gpt2_tok)(TEXT)
    ids = torch.tensor([f.input_ids])
    emb = gpt2_model.get_input_embeddings()(ids).detach().requires_grad_(True)
    p = torch.softmax(gpt2_model(inputs_embeds=emb).logits, -1)[0, 1]
    (g,) = torch.autograd.grad(p, emb)
    rel = (emb * g).detach()[0]
    for how in ("l2", "sum"):
        [a] = InputXGradientAttributor(gpt2_model, gpt2_tok, aggregation=how).attribute(TEXT, target=1)
        ref = torch.stack([rel[s:e].norm() if how == "l2" else rel[s:e].sum() for s, e in f.spans]).double()
        torch.testing.assert_close(a.scores, ref, rtol=1e-4, atol=1e-7)
    assert InputXGradientAttributor(gpt2_model, gpt2_tok).aggregation == "l2"


def test_kernel_shap_matches_exact_shapley(gpt2_model, gpt2_tok):
    # 2^4 passes: every coalition once, the exact Shapley fit (tests/attributors/test_sampling_peers.py
    # checks the sampled budgets).
    ks = KernelShapAttributor(gpt2_model, gpt2_tok, budget=16, seed=3)
    text = "good movie, bad"
    [a] = ks.attribute(text, target=1)
    assert a.features.n == 4
    exact = exact_shapley(ks.coalition_function(a.features, 1), a.features.n)
    np.testing.assert_allclose(a.scores.numpy(), exact, atol=1e-6)
    # Efficiency holds exactly (a constraint of the fit).
    assert float(a.scores.sum()) == pytest.approx(a.extras["f_full"] - a.base_value, abs=1e-9)
    # Seeded: a fresh attributor with the same seed reproduces the result; another seed does not.
    runs = [
        KernelShapAttributor(gpt2_model, gpt2_tok, budget=10, seed=s).attribute(text, target=1)[0].scores
        for s in (1, 1, 2)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_exact_shapley_on_a_known_game():
    # v(S) = 3*[0 in S] + 2*[1 in S and 2 in S]: phi = (3, 1, 1).
    phi = exact_shapley(lambda z: 3.0 * z[:, 0] + 2.0 * (z[:, 1] & z[:, 2]), 3)
    np.testing.assert_allclose(phi, [3.0, 1.0, 1.0])


@pytest.mark.parametrize("template", ["{text}", "Review: {text}\nSentiment:"])
def test_a_last_equals_output_attentions(tiny, template):
    _arch, model, tok = tiny
    texts = [TEXT, "bad", "the plot is dull and the cast is weak"]
    # A small token budget forces several batches with padding.
    out = ALast(model, tok, template=template, max_tokens=24).attribute(texts)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    for a in out:
        ids = torch.tensor([a.features.input_ids])
        with torch.no_grad():
            att = eager(input_ids=ids, output_attentions=True).attentions[-1]
        row = att[0, :, -1, :].mean(0)
        ref = torch.stack([row[s:e].sum() for s, e in a.features.spans]).double()
        torch.testing.assert_close(a.scores, ref, rtol=1e-4, atol=1e-6)


def test_gae_rollout_on_one_layer_by_hand(gpt2_tok):
    # With one layer, R = I + A_bar, so the last row without the identity is A_bar[last].
    model = tiny_classifier("gpt2", tokenizer=gpt2_tok, n_layer=1)
    [a] = GAE(model, gpt2_tok).attribute(TEXT, target=0)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    ids = torch.tensor([a.features.input_ids])
    emb = eager.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = eager(inputs_embeds=emb, output_attentions=True)
    (A,) = out.attentions
    (g,) = torch.autograd.grad(out.logits[0, 0], A)
    a_bar = (g * A).clamp(min=0).mean(1)[0, -1]
    ref = torch.stack([a_bar[s:e].sum() for s, e in a.features.spans]).double()
    torch.testing.assert_close(a.scores, ref, rtol=1e-4, atol=1e-7)


def test_lrp_cp_conserves_the_logit_on_llama(llama_model, llama_tok):
    lrp = LRP(llama_model, llama_tok, rule="cp", aggregation="sum")
    [a] = lrp.attribute(TEXT, target=1)
    # Bias-free model + CP rules: the network is linear in the embeddings, so relevance sums to the logit.
    assert a.extras["total"] == pytest.approx(a.extras["logit"], rel=1e-4)
    assert a.output == "logits"
    logit = llama_model(input_ids=torch.tensor([a.features.input_ids])).logits[0, 1]
    assert a.extras["logit"] == pytest.approx(float(logit.detach()), abs=1e-5)


def test_lrp_rules_differ_from_plain_gradient(tiny):
    _arch, model, tok = tiny
    kw = dict(aggregation="sum", output="logits")
    att = LRP(model, tok, **kw).attribute(TEXT, target=1)[0].scores
    cp = LRP(model, tok, rule="cp", **kw).attribute(TEXT, target=1)[0].scores
    ixg = InputXGradientAttributor(model, tok, **kw).attribute(TEXT, target=1)[0].scores
    assert not torch.allclose(att, ixg) and not torch.allclose(cp, ixg) and not torch.allclose(att, cp)
    assert LRP(model, tok).attribute(TEXT, target=1)[0].scores.min() >= 0  # L2 default


def test_random_is_seeded_and_private(gpt2_model, gpt2_tok):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = RandomAttributor(gpt2_model, gpt2_tok, seed=7).attribute([TEXT, TEXT])
    b = RandomAttributor(gpt2_model, gpt2_tok, seed=7).attribute([TEXT])
    c = RandomAttributor(gpt2_model, gpt2_tok, seed=8).attribute([TEXT])
    # a text's scores depend only on the seed and the text (not on the batch or the call order)
    assert torch.equal(a[0].scores, b[0].scores) and torch.equal(a[0].scores, a[1].scores)
    assert not torch.equal(a[0].scores, c[0].scores)
    assert torch.equal(state, torch.get_rng_state())


def test_aggregation_sum_and_l2(gpt2_tok):
    f = Featurizer(gpt2_tok)("it was")
    x = torch.tensor([[3.0, -4.0], [1.0, 1.0]])
    assert aggregate(x, f, "l2").tolist() == [5.0, pytest.approx(2**0.5)]
    assert aggregate(x, f, "sum").tolist() == [-1.0, 2.0]
    with pytest.raises(ValueError, match="one score per input token"):
        aggregate(x[:1], f, "sum")


def test_bad_settings_are_explained(gpt2_model, gpt2_tok):
    with pytest.raises(ValueError, match="aggregation"):
        InputXGradientAttributor(gpt2_model, gpt2_tok, aggregation="max")
    with pytest.raises(ValueError, match="LRP rule"):
        LRP(gpt2_model, gpt2_tok, rule="eps")
    with pytest.raises(ValueError, match="budget must be at least 1"):
        IntegratedGradientsAttributor(gpt2_model, gpt2_tok, budget=0)
    with pytest.raises(ValueError, match="budget must be at least 1"):
        KernelShapAttributor(gpt2_model, gpt2_tok, budget=-1)
    # The old budget names are gone, with an error naming the one to use (direct or by name).
    with pytest.raises(ValueError, match="'n_steps' of method 'ig' is now called 'budget'"):
        IntegratedGradientsAttributor(gpt2_model, gpt2_tok, n_steps=4)
    with pytest.raises(ValueError, match="'n_samples' of method 'kernel-shap' is now called 'budget'"):
        get_attributor("kernel-shap", gpt2_model, gpt2_tok, n_samples=8)
    with pytest.raises(TypeError, match="seed"):
        RandomAttributor(gpt2_model, gpt2_tok, seed="x")
    with pytest.raises(ValueError, match="class index"):
        GAE(gpt2_model, gpt2_tok).attribute(TEXT, target=5)


def test_kernel_shap_reports_the_passes_it_ran(gpt2_model, gpt2_tok):
    ks = KernelShapAttributor(gpt2_model, gpt2_tok, budget=40, seed=0)
    before = ks.adapter.forward_passes
    out = ks.attribute(["a good movie", "the plot was dull but fine"], target=1)
    assert sum(a.forward_passes for a in out) == ks.adapter.forward_passes - before + 0.0
    # n = 3: only 2^3 coalitions exist; n = 6: the budget, each pass a distinct coalition.
    assert [a.forward_passes for a in out] == [8.0, 40.0]


def test_a_method_implements_only_its_part(gpt2_model, gpt2_tok):
    """Attributor.attribute is the template (featurize, one prediction pass, targets, then the method's
    explain); a method that implements explain alone gets the rest, and the built-in methods keep it."""
    from pi_lightning.attributors.base import _REGISTRY, Attributor, available_methods
    from pi_lightning.inference import class_probs

    class TargetScores(Attributor):
        def explain(self, feats, targets, finals, state):
            assert state is None and finals.shape == (len(feats), 2)
            return [
                self.result(f, c, lg, torch.full((f.n,), float(c), dtype=torch.float64), forward_passes=1.0)
                for f, c, lg in zip(feats, targets, finals, strict=True)
            ]

    method = TargetScores(gpt2_model, gpt2_tok)
    texts = ["a good movie", "dull"]
    finals = method.adapter.final_logits([f.input_ids for f in method.featurize(texts)])
    got = method.attribute(texts)
    assert [a.target for a in got] == finals.argmax(-1).tolist()
    for a, lg in zip(got, finals, strict=True):
        assert a.output == "prob" and torch.equal(a.probs, class_probs(lg))
        assert a.scores.tolist() == [float(a.target)] * a.features.n
    assert [a.target for a in method.attribute(texts, target=[1, 0])] == [1, 0]
    with pytest.raises(NotImplementedError, match="explain"):
        Attributor(gpt2_model, gpt2_tok).attribute("a good movie")
    available_methods()
    for cls in _REGISTRY.values():  # no method rewrites the template; AT2 and UDIG wrap it (checks, autograd)
        assert cls.attribute is Attributor.attribute or "super().attribute(" in inspect.getsource(
            cls.attribute
        )
        assert cls.explain is not Attributor.explain, cls.__name__
