"""UDIG / DIG: the vocabulary kNN index, the path's properties, completeness, the straight-line
special case (equals Captum's Integrated Gradients), and running through the callbacks."""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import IntegratedGradients

from pi_lightning.attributors import UDIG, get_attributor
from pi_lightning.attributors._neighbors import VocabularyIndex
from pi_lightning.attributors.udig import discretized_path, resample_path
from pi_lightning.masking import Masker
from pi_lightning.testing import tiny_classifier

TEXT = "a good movie, really boring plot"


# ----------------------------------------------------------------------------- kNN index
def test_knn_matches_brute_force_with_chunking():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(1000, 16, generator=g)
    pts = torch.randn(7, 5, 16, generator=g)
    dist, idx = VocabularyIndex(table, max_elements=3000).knn(pts, k=10)  # forces 1-3 points per chunk
    ref = torch.cdist(pts.reshape(-1, 16), table)
    rd, ri = ref.sort(dim=-1)
    assert idx.shape == (7, 5, 10)
    assert torch.equal(idx.reshape(-1, 10), ri[:, :10])
    torch.testing.assert_close(dist.reshape(-1, 10), rd[:, :10], rtol=1e-5, atol=1e-5)


def test_knn_exact_for_points_that_are_rows():
    # |p|^2 - 2 p.e + |e|^2 cancels badly for p == e; the exact re-ranking must still put the row first.
    table = torch.randn(500, 8) * 100 + 1000
    dist, idx = VocabularyIndex(table).knn(table[[3, 77, 499]], k=2)
    assert idx[:, 0].tolist() == [3, 77, 499]
    assert torch.all(dist[:, 0] == 0)


def test_knn_half_precision_table():
    table = torch.randn(300, 8).bfloat16()
    pts = torch.randn(4, 8)
    _, idx = VocabularyIndex(table).knn(pts, k=3)
    ref = torch.cdist(pts, table.float()).topk(3, largest=False).indices
    assert torch.equal(idx, ref)


def test_cache_notices_training_updates():
    emb = torch.nn.Embedding(50, 4)
    index = VocabularyIndex.shared(emb)
    assert VocabularyIndex.shared(emb) is index
    q = torch.randn(2, 4)
    index.knn(q, 3)
    index.knn(q, 3)
    assert index.refreshes == 1
    opt = torch.optim.AdamW(emb.parameters(), lr=1.0)
    emb(torch.arange(50)).sum().backward()
    opt.step()  # in-place update: version counter bumps
    before = index.knn(emb.weight[:1].detach(), 1)[1]
    assert index.refreshes == 2
    assert before.item() == 0
    emb.weight.data.mul_(3.0)  # through .data: no version bump, the checksum notices
    index.knn(q, 3)
    assert index.refreshes == 3
    torch.testing.assert_close(index.squared_norms(), emb.weight.detach().pow(2).sum(-1))


def test_knn_errors():
    index = VocabularyIndex(torch.randn(10, 4))
    with pytest.raises(ValueError, match="dimensions"):
        index.knn(torch.randn(2, 5), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.knn(torch.randn(2, 4), 11)
    with pytest.raises(TypeError, match="Embedding or a"):
        VocabularyIndex(torch.nn.Linear(2, 2, bias=False).weight[0])


# ----------------------------------------------------------------------------- path properties
@pytest.mark.parametrize("strategy", ["greedy", "maxcount"])
@pytest.mark.parametrize("path", ["udig", "dig"])
def test_path_properties(gpt2_model, gpt2_tok, strategy, path):
    table = gpt2_model.get_input_embeddings().weight.detach()
    index = VocabularyIndex(table)
    ids = torch.tensor(gpt2_tok(TEXT)["input_ids"])
    base_id = gpt2_tok(" ...", add_special_tokens=False)["input_ids"][-1]
    x = table[ids]
    b = table[base_id].expand_as(x)
    a = 9
    pts, words = discretized_path(
        index,
        x,
        b,
        a,
        neighbors=10,
        strategy=strategy,
        path=path,
        input_ids=ids,
        exclude=torch.full((len(ids), 1), base_id),
    )
    assert pts.shape == (a + 2, len(ids), table.shape[1]) and words.shape == (a, len(ids))
    assert torch.equal(pts[0], b) and torch.equal(pts[-1], x)  # starts at the baseline, ends at the input
    lo, hi = torch.minimum(b, x), torch.maximum(b, x)
    assert torch.all((pts >= lo) & (pts <= hi))  # every point between baseline and input, per dimension
    for j in range(a + 1):  # and each coordinate moves monotonically from baseline to input
        lo_j, hi_j = torch.minimum(b, pts[j + 1]), torch.maximum(b, pts[j + 1])
        assert torch.all((pts[j] >= lo_j) & (pts[j] <= hi_j))
    for j in range(1, a + 1):
        w = words[j - 1]
        assert not torch.any(w == ids) and not torch.any(w == base_id)
        anchor = table[w]  # a real vocabulary embedding before monotonisation:
        lo_j, hi_j = torch.minimum(b, pts[j + 1]), torch.maximum(b, pts[j + 1])
        kept = (anchor >= lo_j) & (anchor <= hi_j)
        assert torch.equal(pts[j][kept], anchor[kept])  # its monotone dimensions are kept as they are
        # ... chosen among the k nearest words of the line point (UDIG) or of the previous word (DIG).
        query = b + (j / (a + 1)) * (x - b) if path == "udig" else table[words[j] if j < a else ids]
        assert torch.all((index.knn(query, 10)[1] == w[:, None]).any(-1))
    # The words on a token's path are distinct (as in the public code), as long as candidates remain.
    for t in range(len(ids)):
        assert len(set(words[:, t].tolist())) == a


def test_path_is_deterministic_and_strategy_matters(gpt2_model, gpt2_tok):
    table = gpt2_model.get_input_embeddings().weight.detach()
    ids = torch.tensor(gpt2_tok(TEXT)["input_ids"])
    b = torch.zeros_like(table[ids])
    run = lambda s: discretized_path(VocabularyIndex(table), table[ids], b, 6, strategy=s, input_ids=ids)[1]  # noqa: E731
    assert torch.equal(run("greedy"), run("greedy"))
    assert not torch.equal(run("greedy"), run("maxcount"))


def test_resample_path():
    pts = torch.tensor([[0.0, 0.0], [1.0, 3.0], [4.0, 4.0]])
    assert torch.equal(resample_path(pts, 2), pts)
    out = resample_path(pts, 6)
    assert out.shape == (7, 2)
    assert torch.equal(out[::3], pts)  # every anchor is kept
    torch.testing.assert_close(out[1], torch.tensor([1 / 3, 1.0]))
    out = resample_path(pts, 5)  # steps not a multiple of the segments: still from first to last
    assert torch.equal(out[0], pts[0]) and torch.equal(out[-1], pts[-1])
    with pytest.raises(ValueError, match="steps"):
        resample_path(pts, 0)


# ----------------------------------------------------------------------------- completeness
def _f_baseline(model, tok, a):
    """f(baseline input) computed independently: every text token replaced by the mean mask embedding."""
    f = a.features
    emb = model.get_input_embeddings()
    ids = torch.tensor([f.input_ids])
    with torch.no_grad():
        e = emb(ids).clone()
        for (s, t), sb in zip(f.spans, f.space_before, strict=False):
            mask_ids = list(Masker(tok).baseline_ids(sb))  # "..." under the default removal
            e[0, s:t] = emb(torch.tensor(mask_ids)).mean(0)
        logits = model(inputs_embeds=e).logits
    return float(torch.softmax(logits.double(), -1)[0, a.target])


def test_completeness_converges_with_steps(tiny):
    _arch, model, tok = tiny
    gaps = {}
    for steps in (8, 32, 128):
        [a] = UDIG(model, tok, budget=steps, anchors=7).attribute(TEXT, target=1)
        f_x = float(a.probs[1])
        assert a.base_value == pytest.approx(_f_baseline(model, tok, a), abs=1e-6)
        gap = float(a.scores.sum()) - (f_x - a.base_value)
        assert gap == pytest.approx(a.extras["completeness_gap"], abs=1e-9)
        gaps[steps] = abs(gap)
    # Left Riemann sum on a fixed piecewise-linear path: error ~ 1/steps.
    assert gaps[128] < gaps[32] / 2.5
    assert gaps[128] < 0.01


# ----------------------------------------------------------------------------- equals IG
@pytest.mark.parametrize("strategy,path", [("greedy", "udig"), ("maxcount", "udig"), ("greedy", "dig")])
def test_equals_straight_line_ig_when_vocabulary_holds_the_line(gpt2_tok, strategy, path):
    tok = gpt2_tok
    model = copy.deepcopy(tiny_classifier("gpt2", tokenizer=tok))
    steps = 6
    udig = UDIG(model, tok, budget=steps, strategy=strategy, path=path, output="logits")
    f = udig.featurize(TEXT)[0]
    emb = model.get_input_embeddings()
    ids = torch.tensor(f.input_ids)
    x = emb.weight.detach()[ids].clone()
    mask_rows = {sb: list(udig.masker.baseline_ids(sb)) for sb in (True, False)}
    owner = [i for i, (s, e) in enumerate(f.spans) for _ in range(s, e)]
    b = torch.stack([emb.weight.detach()[mask_rows[f.space_before[i]]].mean(0) for i in owner])
    # Write the straight-line points into rows of tokens the input does not use.
    used = set(f.input_ids) | set(mask_rows[True]) | set(mask_rows[False])
    free = [i for i in range(len(tok) - 1, -1, -1) if i not in used]
    with torch.no_grad():
        r = 0
        for t in range(len(ids)):
            for j in range(1, steps):
                emb.weight[free[r]] = b[t] + (j / steps) * (x[t] - b[t])
                r += 1
    [a] = udig.attribute(TEXT, target=1)

    def forward(e):
        logits = model(inputs_embeds=e).logits
        return logits[:, 1]

    ig = IntegratedGradients(forward).attribute(
        x[None], baselines=b[None], n_steps=steps, method="riemann_left", target=None
    )
    per_token = ig[0].double().sum(-1)
    expected = torch.stack([per_token[s:e].sum() for s, e in f.spans])
    torch.testing.assert_close(a.scores, expected, rtol=1e-4, atol=1e-5)
    assert set(a.extras["anchor_ids"].flatten().tolist()) <= set(free[:r])


# ----------------------------------------------------------------------------- the attributor
def test_registry_cost_and_batch(tiny):
    _arch, model, tok = tiny
    texts = ["a good movie", "boring plot, really dull acting."]
    udig = get_attributor("udig", model, tok)
    assert udig.cost == "2n" and UDIG.cost == "2n"
    out = udig.attribute(texts, target=[1, 0])
    assert [a.target for a in out] == [1, 0]
    for a, t in zip(out, texts, strict=False):
        assert a.method == "udig" and a.features.text == t
        assert a.forward_passes == 1 + 2 * a.features.n == 1 + udig.forward_equivalents(a.features.n)
        assert torch.isfinite(a.scores).all() and a.scores.abs().sum() > 0
    fixed = get_attributor("udig", model, tok, budget=5, neighbors=8, strategy="maxcount", path="dig")
    assert fixed.cost == "10x"
    [a] = fixed.attribute(texts[0], target="predicted")
    assert a.forward_passes == 11 and a.target == a.prediction


def test_model_state_restored_and_works_under_inference_mode(gpt2_model, gpt2_tok):
    gpt2_model.train()
    with torch.inference_mode():
        [a] = UDIG(gpt2_model, gpt2_tok, budget=3).attribute("a good movie", target=1)
    assert gpt2_model.training and all(m.training for m in gpt2_model.modules())
    assert all(p.grad is None and p.requires_grad for p in gpt2_model.parameters())
    assert torch.isfinite(a.scores).all()


def test_peft_wrapped_model(gpt2_tok):
    peft = pytest.importorskip("peft")
    base = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    [ref] = UDIG(base, gpt2_tok, budget=4).attribute(TEXT, target=1)
    wrapped = peft.get_peft_model(
        copy.deepcopy(base),
        peft.LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["c_attn"], modules_to_save=None),
    )
    # LoRA starts as the identity (B = 0), so the attributions equal the base model's.
    [a] = UDIG(wrapped, gpt2_tok, budget=4).attribute(TEXT, target=1)
    torch.testing.assert_close(a.scores, ref.scores, rtol=1e-4, atol=1e-6)


def test_bad_settings_have_clear_errors(gpt2_model, gpt2_tok):
    with pytest.raises(ValueError, match="strategy"):
        UDIG(gpt2_model, gpt2_tok, strategy="nearest")
    with pytest.raises(ValueError, match="path"):
        UDIG(gpt2_model, gpt2_tok, path="straight")
    with pytest.raises(ValueError, match="budget must be at least 1"):
        UDIG(gpt2_model, gpt2_tok, budget=0)
    with pytest.raises(ValueError, match="'steps' of method 'udig' is now called 'budget'"):
        UDIG(gpt2_model, gpt2_tok, steps=4)
    with pytest.raises(ValueError, match="anchors"):
        UDIG(gpt2_model, gpt2_tok, anchors=-1)
    with pytest.raises(ValueError, match="neighbors"):
        UDIG(gpt2_model, gpt2_tok, neighbors=0)
    with pytest.raises(ValueError, match="outside the embedding table"):
        UDIG(gpt2_model, gpt2_tok, baseline=10**6)
    with pytest.raises(ValueError, match="Unknown baseline"):
        UDIG(gpt2_model, gpt2_tok, baseline="random")


@pytest.mark.parametrize("baseline", ["pad", "zero", 5])
def test_other_baselines(gpt2_model, gpt2_tok, baseline):
    [a] = UDIG(gpt2_model, gpt2_tok, budget=64, anchors=3, baseline=baseline).attribute(TEXT, target=0)
    assert abs(a.extras["completeness_gap"]) < 0.02


# ----------------------------------------------------------------------------- callbacks
def test_runs_through_the_attribution_monitor(gpt2_tok):
    import lightning.pytorch as pl

    from pi_lightning.callbacks.attribution_monitor import AttributionMonitor

    tok = gpt2_tok
    texts = ["a good movie", "boring plot, dull.", "great fun", "awful script"]
    labels = [1, 0, 1, 0]

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = tiny_classifier("gpt2", tokenizer=tok).train()

        def _loss(self, batch):
            enc = tok(batch[0], return_tensors="pt", padding=True)
            return self.model(**enc, labels=batch[1]).loss

        def training_step(self, batch, _):
            return self._loss(batch)

        def validation_step(self, batch, _):
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    rows = list(zip(texts, labels, strict=False))
    data = torch.utils.data.DataLoader(
        rows, batch_size=2, collate_fn=lambda b: ([t for t, _ in b], torch.tensor([y for _, y in b]))
    )
    monitor = AttributionMonitor(
        tok,
        texts,
        method="udig",
        labels=labels,
        method_kwargs={"budget": 4},
        metrics=["log_odds", "comprehensiveness", "sufficiency"],
    )
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[monitor],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(Module(), train_dataloaders=data, val_dataloaders=data)
    assert len(monitor.evals) == 3  # the step-0 baseline and 2 validations
    for rec in monitor.evals:
        for m in ("log_odds", "comprehensiveness", "sufficiency"):
            assert torch.isfinite(torch.tensor(rec.metrics[m]))
        assert rec.metrics["forward_passes_per_example"] == 9.0
    # Training changed the embedding table between the evaluations; the index noticed.
    assert monitor.attributor.index.refreshes >= 2
    assert monitor.evals[1].scores != monitor.evals[2].scores
