"""evaluate_faithfulness: known answers on an additive model, agreement with a one-at-a-time reference,
one budgeted model call with shared inputs, and clear errors."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _reference import np_auc

from pi_lightning.attributors import SPPI
from pi_lightning.features import Featurizer
from pi_lightning.inference import ClassifierAdapter
from pi_lightning.masking import Masker
from pi_lightning.metrics import METRIC_CLASSES, METRICS, FaithfulnessResult, evaluate_faithfulness
from pi_lightning.metrics.functional import mean_confidence_interval
from pi_lightning.result import Attribution

TEXTS = ["a good movie", "bad plot but great cast", "the film was dull", "fun"]


class BagOfWordsClassifier(torch.nn.Module):
    """Causal bag of words: at position t, logits = (0, sum of token weights up to t).

    p(class 1) = sigmoid(sum of weights), so each feature's effect on the logit is known exactly.
    It has the interface ClassifierAdapter needs: ``config.pad_token_id`` and a per-position head ``score``.
    """

    def __init__(self, weights: torch.Tensor, pad_token_id: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(pad_token_id=pad_token_id, model_type="bag-of-words", num_labels=2)
        self.embed = torch.nn.Embedding(len(weights), 2)
        self.score = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.embed.weight.zero_()
            self.embed.weight[:, 1] = weights
            self.score.weight.copy_(torch.eye(2))

    def forward(self, input_ids, attention_mask, position_ids=None):
        h = (self.embed(input_ids) * attention_mask.unsqueeze(-1)).cumsum(1)
        return SimpleNamespace(logits=self.score(h)[:, -1])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture
def additive(gpt2_tok):
    masker = Masker(gpt2_tok)
    feats = Featurizer(gpt2_tok, "word", template="Review: {text} Sentiment:")(
        "great acting but boring dull script"
    )
    g = torch.Generator().manual_seed(0)
    w = torch.randn(len(gpt2_tok), generator=g, dtype=torch.float32)
    w[list(feats.prefix_ids)] = 0.1  # a weak fixed context
    w[list(feats.suffix_ids)] = 0.0
    for ids in (masker.mask_ids(True), masker.mask_ids(False)):
        w[list(ids)] = 0.0  # the mask carries no evidence
    model = BagOfWordsClassifier(w, gpt2_tok.pad_token_id)
    effects = torch.tensor(
        [float(w[list(feats.feature_ids(i))].sum()) for i in range(feats.n)], dtype=torch.float64
    )
    context = float(w[list(feats.prefix_ids) + list(feats.suffix_ids)].sum())
    return ClassifierAdapter(model), masker, feats, effects, context


@pytest.mark.parametrize("target", [0, 1])
def test_exact_attribution_gives_best_as_and_ias(additive, target):
    adapter, masker, feats, effects, context = additive
    exact = effects if target == 1 else -effects  # d log-odds of the target per feature
    sign = 1.0 if target == 1 else -1.0

    def curve(order):  # closed form: probability of the target after activating `order`
        logit = context + np.concatenate([[0.0], np.cumsum(effects.numpy()[list(order)])])
        return _sigmoid(sign * logit)

    all_aucs = [np_auc(curve(p)) for p in itertools.permutations(range(feats.n))]
    atts = [Attribution(scores=s, features=feats, target=target, method="exact") for s in (exact, -exact)]
    res = evaluate_faithfulness(atts, adapter, masker)
    best_order = np.argsort(-exact.numpy(), kind="stable")
    np.testing.assert_allclose(res.as_curves[0].numpy(), curve(best_order), atol=1e-5)
    assert float(res.as_auc[0]) == pytest.approx(max(all_aucs), abs=1e-5)  # exact: best AS
    assert float(res.as_auc[1]) == pytest.approx(min(all_aucs), abs=1e-5)  # reversed: worst AS
    assert float(res.ias_auc[0]) == pytest.approx(min(all_aucs), abs=1e-5)  # exact: best IAS
    assert float(res.ias_auc[1]) == pytest.approx(max(all_aucs), abs=1e-5)  # reversed: worst IAS
    assert max(all_aucs) - min(all_aucs) > 0.1  # the check is not vacuous


def _reference(att, adapter, masker, top_k):
    """One masked input and one model call at a time, NumPy orderings."""
    n, s = att.features.n, att.scores.numpy()

    def probs(active):
        z = np.zeros((1, n), dtype=bool)
        z[0, list(active)] = True
        (seq,), _ = masker(att.features, z)
        return torch.softmax(adapter.forward_positions([seq], [[len(seq) - 1]])[0][0].double(), -1).numpy()

    as_order, ias_order = np.argsort(-s, kind="stable"), np.argsort(s, kind="stable")
    as_curve = [probs(as_order[:k])[att.target] for k in range(n + 1)]
    ias_curve = [probs(ias_order[:k])[att.target] for k in range(n + 1)]
    top = as_order[: max(1, int(np.floor(n * top_k / 100 + 1e-9)))]
    full, masked, kept = probs(range(n)), probs(sorted(set(range(n)) - set(top))), probs(top)
    y = full.argmax()
    return {
        "as_curve": as_curve,
        "ias_curve": ias_curve,
        "as_auc": np_auc(as_curve),
        "ias_auc": np_auc(ias_curve),
        "log_odds": np.log(masked[y]) - np.log(full[y]),
        "comprehensiveness": full[y] - masked[y],
        "sufficiency": full[y] - kept[y],
        "full": full,
    }


def test_matches_one_at_a_time_reference(tiny, monkeypatch):
    _, model, tok = tiny
    sppi = SPPI(model, tok, template="Review: {text}\nSentiment:")
    atts = sppi.attribute(TEXTS, target=[1, 0, 1, 0])
    refs = [_reference(a, sppi.adapter, sppi.masker, 40.0) for a in atts]

    calls = []
    original = sppi.adapter.forward_positions
    monkeypatch.setattr(
        sppi.adapter, "forward_positions", lambda *a, **k: calls.append(len(a[0])) or original(*a, **k)
    )
    res = evaluate_faithfulness(atts, sppi.adapter, sppi.masker, top_k=40.0)
    assert calls == [res.forward_passes]  # every masked input of every example in one call
    for i, ref in enumerate(refs):
        np.testing.assert_allclose(res.as_curves[i].numpy(), ref["as_curve"], atol=1e-5)
        np.testing.assert_allclose(res.ias_curves[i].numpy(), ref["ias_curve"], atol=1e-5)
        np.testing.assert_allclose(res.probs[i].numpy(), ref["full"], atol=1e-5)
        for name in METRICS:
            assert float(getattr(res, name)[i]) == pytest.approx(ref[name], abs=1e-5), name
        assert res.as_curves[i].dtype == torch.float64 and len(res.as_curves[i]) == atts[i].features.n + 1
    # AS and IAS share the empty and the full input; the full input is the unmasked prediction.
    for a, c, ic, p in zip(atts, res.as_curves, res.ias_curves, res.probs, strict=False):
        assert float(c[0]) == float(ic[0]) and float(c[-1]) == float(ic[-1]) == float(p[a.target])
    # Rows built: AS, IAS, full, top-k masked, top-k kept. Shared and run once: the empty and the full
    # input of AS/IAS, the unmasked input, and "top-k kept" (a point of the AS curve).
    rows = sum(2 * (a.features.n + 1) + 3 for a in atts)
    assert res.forward_passes <= rows - 4 * len(atts)
    assert res.targets.tolist() == [1, 0, 1, 0]


def test_token_budget_and_duplicates(gpt2_tok, gpt2_model):
    sppi = SPPI(gpt2_model, gpt2_tok)
    atts = sppi.attribute(TEXTS + TEXTS[:1], target=1)  # the repeated text adds no new inputs
    big = evaluate_faithfulness(atts, ClassifierAdapter(gpt2_model, max_tokens=100_000), sppi.masker)
    small_adapter = ClassifierAdapter(gpt2_model, max_tokens=40)
    batches = []
    original = small_adapter.per_position_logits
    small_adapter.per_position_logits = lambda ids, mask: (
        batches.append(tuple(ids.shape)) or original(ids, mask)
    )
    small = evaluate_faithfulness(atts, small_adapter, sppi.masker)
    assert len(batches) > 1 and all(b * t <= 40 or b == 1 for b, t in batches)
    assert small.forward_passes == big.forward_passes == sum(b for b, _ in batches)
    for name in METRICS:
        torch.testing.assert_close(getattr(small, name), getattr(big, name), atol=1e-5, rtol=0)
    first_only = evaluate_faithfulness(atts[:-1], ClassifierAdapter(gpt2_model), sppi.masker)
    assert first_only.forward_passes == big.forward_passes


def test_metric_subset_and_summary(gpt2_tok, gpt2_model):
    sppi = SPPI(gpt2_model, gpt2_tok)
    atts = sppi.attribute(TEXTS, target="predicted")
    res = evaluate_faithfulness(atts, sppi.adapter, sppi.masker, metrics=["as_auc", "sufficiency"])
    assert isinstance(res, FaithfulnessResult)
    assert res.ias_curves is None and res.log_odds is None and res.probs_masked is None
    summary = res.summary()
    assert set(summary) == {"as_auc", "as_auc_ci", "sufficiency", "sufficiency_ci"}
    m, h = mean_confidence_interval(res.as_auc)
    assert summary["as_auc"] == m and summary["as_auc_ci"] == h
    # With the predicted class as target, sufficiency is the full-input minus the AS curve at top-k.
    for a, c, s in zip(atts, res.as_curves, res.sufficiency, strict=False):
        k = max(1, math.floor(a.features.n * 0.2 + 1e-9))
        assert float(s) == pytest.approx(float(c[-1] - c[k]), abs=1e-12)
    full = evaluate_faithfulness(atts, sppi.adapter, sppi.masker).summary()
    assert set(full) == {f"{n}{s}" for n in (*METRICS, "gap") for s in ("", "_ci")}


def test_metric_classes_update_from_result_without_recomputing(gpt2_tok, gpt2_model, monkeypatch):
    """Each Metric class reads its per-example values from the FaithfulnessResult as computed (its
    functional twin is not run again) and equals the class updated from the raw inputs."""
    sppi = SPPI(gpt2_model, gpt2_tok)
    res = evaluate_faithfulness(sppi.attribute(TEXTS, target="predicted"), sppi.adapter, sppi.masker)
    raw = {
        "as_auc": (res.as_curves, res.curve_x),
        "ias_auc": (res.ias_curves, res.curve_x),
        "gap": (res.as_curves, res.ias_curves, res.curve_x),
        "log_odds": (res.probs, res.probs_masked),
        "comprehensiveness": (res.probs, res.probs_masked),
        "sufficiency": (res.probs, res.probs_kept),
    }
    assert set(raw) == set(METRIC_CLASSES)
    want = {}
    for name, cls in METRIC_CLASSES.items():
        m = cls(curve_points=11) if name in ("as_auc", "ias_auc") else cls()
        m.update(*raw[name])
        want[name] = m

    def recomputed(*args, **kwargs):
        raise AssertionError("update(result) recomputed a metric that evaluate_faithfulness computed")

    for cls in METRIC_CLASSES.values():
        monkeypatch.setattr(cls, "_fn", staticmethod(recomputed), raising=False)
    monkeypatch.setattr("pi_lightning.metrics.classes.activation_gap", recomputed)
    for name, cls in METRIC_CLASSES.items():
        m = cls(curve_points=11) if name in ("as_auc", "ias_auc") else cls()
        m.update(res)
        assert float(m.compute()) == pytest.approx(float(want[name].compute()), abs=1e-12)
        assert float(m.confidence_interval()) == pytest.approx(
            float(want[name].confidence_interval()), rel=1e-9
        )
        if name in ("as_auc", "ias_auc"):
            torch.testing.assert_close(m.mean_curve()[1], want[name].mean_curve()[1])
    summary = res.summary()
    for name, m in want.items():
        assert summary[name] == pytest.approx(float(m.compute()), abs=1e-12)
    partial = evaluate_faithfulness(
        sppi.attribute(TEXTS[:2], target=1), sppi.adapter, sppi.masker, metrics=["as_auc"]
    )
    with pytest.raises(ValueError, match="metrics including 'ias_auc'"):
        METRIC_CLASSES["ias_auc"]().update(partial)
    with pytest.raises(ValueError, match="including both 'as_auc' and 'ias_auc'"):
        METRIC_CLASSES["gap"]().update(partial)


def test_bad_input(gpt2_tok, gpt2_model):
    sppi = SPPI(gpt2_model, gpt2_tok)
    atts = sppi.attribute(TEXTS[:2], target=1)
    ad, mk = sppi.adapter, sppi.masker
    with pytest.raises(ValueError, match="non-empty list"):
        evaluate_faithfulness([], ad, mk)
    with pytest.raises(TypeError, match=r"expected pi_lightning\.result\.Attribution"):
        evaluate_faithfulness([atts[0], "text"], ad, mk)
    with pytest.raises(TypeError, match="ClassifierAdapter"):
        evaluate_faithfulness(atts, gpt2_model, mk)
    with pytest.raises(TypeError, match="Masker"):
        evaluate_faithfulness(atts, ad, gpt2_tok)
    for k in (0, 120, -1):
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            evaluate_faithfulness(atts, ad, mk, top_k=k)
    with pytest.raises(ValueError, match="metrics must be"):
        evaluate_faithfulness(atts, ad, mk, metrics=["aopc"])
    with pytest.raises(ValueError, match="metrics must be"):
        evaluate_faithfulness(atts, ad, mk, metrics=[])
    bad = Attribution(scores=atts[0].scores, features=atts[0].features, target=5, method="x")
    with pytest.raises(ValueError, match="not a class index"):
        evaluate_faithfulness([bad], ad, mk)


@pytest.mark.parametrize("n_words", [20, 40, 60])
def test_fixed_fraction_curves_against_exact(gpt2_tok, n_words):
    """Real-sized inputs (20-60 words) on an additive model with known effects: the 11-point curves are
    the exact curves read at the steps k = round(f * n), their areas differ from the exact ones by at
    most the bound of linear interpolation, and the measured error stays small."""
    g = torch.Generator().manual_seed(n_words)
    vocab = [
        "good",
        "bad",
        "great",
        "dull",
        "fun",
        "boring",
        "fine",
        "awful",
        "superb",
        "plot",
        "cast",
        "acting",
        "script",
        "film",
        "scene",
        "story",
        "music",
        "pace",
        "witty",
        "flat",
    ]
    texts = [
        " ".join(vocab[int(i)] for i in torch.randint(len(vocab), (n_words,), generator=g)) for _ in range(6)
    ]
    w = 0.4 * torch.randn(len(gpt2_tok), generator=g)
    masker = Masker(gpt2_tok)
    for ids in (masker.mask_ids(True), masker.mask_ids(False)):
        w[list(ids)] = 0.0
    adapter = ClassifierAdapter(BagOfWordsClassifier(w, gpt2_tok.pad_token_id))
    featurize = Featurizer(gpt2_tok, "word", template="Review: {text}")
    feats = [featurize(t) for t in texts]
    atts = []
    for f in feats:
        effects = torch.tensor(
            [float(w[list(f.feature_ids(i))].sum()) for i in range(f.n)], dtype=torch.float64
        )
        noisy = effects + 0.3 * torch.randn(f.n, generator=g, dtype=torch.float64)  # an imperfect explanation
        atts.append(Attribution(scores=noisy, features=f, target=1, method="noisy"))
    exact = evaluate_faithfulness(atts, adapter, masker, metrics=["as_auc", "ias_auc"])
    fast = evaluate_faithfulness(atts, adapter, masker, metrics=["as_auc", "ias_auc"], points=11)
    assert fast.forward_passes <= len(atts) * (2 * 11 - 2) < exact.forward_passes  # empty and full shared
    errors = []
    for i, f in enumerate(feats):
        steps = torch.tensor(np_steps := sorted({int(j * f.n / 10 + 0.5) for j in range(11)}))
        assert f.n == n_words and len(np_steps) == 11
        np.testing.assert_allclose(fast.curve_x[i].numpy(), steps.numpy() / f.n)
        for ex, fa, auc_ex, auc_fa in (
            (exact.as_curves[i], fast.as_curves[i], exact.as_auc[i], fast.as_auc[i]),
            (exact.ias_curves[i], fast.ias_curves[i], exact.ias_auc[i], fast.ias_auc[i]),
        ):
            torch.testing.assert_close(fa, ex[steps])  # the same points as the exact curve
            assert float(auc_fa) == pytest.approx(np_auc(ex[steps].numpy(), steps.numpy() / f.n), abs=1e-12)
            # Interpolation bound: per segment, (width) x (range of the exact curve over it).
            bound = sum(
                (float(b - a) / f.n) * float(ex[a : b + 1].max() - ex[a : b + 1].min())
                for a, b in itertools.pairwise(steps.tolist())
            )
            err = abs(float(auc_fa) - float(auc_ex))
            assert err <= bound + 1e-12
            errors.append(err)
        assert float(fast.gap[i]) == pytest.approx(float(fast.as_auc[i] - fast.ias_auc[i]), abs=1e-15)
    # Measured (seeds as here): mean |AUC error| 0.004 (n = 20), 0.011 (n = 40), 0.012 (n = 60); max 0.018.
    assert float(np.mean(errors)) < 0.02
    # Short texts (n + 1 <= 11) get the exact curve.
    short = [
        Attribution(
            scores=torch.arange(4.0, dtype=torch.float64),
            features=featurize("good bad great dull"),
            target=1,
            method="x",
        )
    ]
    e1 = evaluate_faithfulness(short, adapter, masker, metrics=["as_auc", "ias_auc"])
    e2 = evaluate_faithfulness(short, adapter, masker, metrics=["as_auc", "ias_auc"], points=11)
    assert float(e1.as_auc[0]) == pytest.approx(float(e2.as_auc[0]), abs=1e-12)
