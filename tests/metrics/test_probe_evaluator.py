"""ProbeEvaluator: the Trainer-free evaluation is the monitor's, and its figures have known answers."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from scipy import stats

from pi_lightning.attributors import get_attributor
from pi_lightning.callbacks import AttributionMonitor
from pi_lightning.callbacks._schedule import validation_follows
from pi_lightning.metrics import ProbeEvaluation, ProbeEvaluator, evaluate_faithfulness
from pi_lightning.testing import tiny_classifier, toy_sentiment
from pi_lightning.training import TextClassifier, TextDataModule

PROBE = toy_sentiment(7, seed=3)


def _fit(tok, tmp_path, callbacks, lr: float, **trainer_kw) -> TextClassifier:
    """Fit the tiny GPT-2 on 40 toy sentences (batches of 8; validation on 8) with ``callbacks``."""
    pl.seed_everything(0, verbose=False)
    module = TextClassifier(tiny_classifier("gpt2", tokenizer=tok, seed=0), lr=lr)
    dm = TextDataModule(tok, toy_sentiment(40, seed=1), toy_sentiment(8, seed=2), batch_size=8)
    trainer_kw = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, **trainer_kw}
    pl.Trainer(
        accelerator="cpu",
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **trainer_kw,
    ).fit(module, datamodule=dm)
    return module


def _t_interval(values) -> tuple[float, float]:
    """numpy/scipy reference: mean and the 95% Student-t half-width."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


@pytest.mark.parametrize("method", ["sp-pi", "mp-pi"])
def test_evaluator_alone_gives_the_monitors_record(gpt2_tok, tmp_path, method):
    """The same probe, method and weights: the monitor's last record and the evaluator's are equal."""
    kwargs = {"budget": 8, "seed": 0} if method == "mp-pi" else {}
    mon = AttributionMonitor(
        gpt2_tok, PROBE, method, method_kwargs=kwargs, every_n_val=None, baseline=False, at_end=True
    )
    module = _fit(gpt2_tok, tmp_path, [mon], lr=5e-3, max_steps=4)
    assert [e.step for e in mon.evals] == [4]
    want = mon.evals[-1]

    module.model.eval()
    ev = ProbeEvaluator.from_method(method, module.model, gpt2_tok, kwargs, target="label")
    ev.update(PROBE[0], PROBE[1])
    got = ev.compute(step=4, log_step=want.log_step)
    assert isinstance(got, ProbeEvaluation)
    assert len(got.scores) == len(want.scores) == len(PROBE[0])
    for a, b in zip(got.scores, want.scores, strict=True):
        assert a == pytest.approx(b, abs=1e-9)
    assert (got.targets, got.predictions) == (want.targets, want.predictions)
    for field in ("as_auc", "ias_auc", "gap"):
        assert getattr(got, field) == pytest.approx(getattr(want, field), abs=1e-9)
    assert got.curves.keys() == want.curves.keys() == {"as", "ias"}
    for k in got.curves:
        assert got.curves[k][1] == pytest.approx(want.curves[k][1], abs=1e-9)
    monitor_only = {"seconds"}
    assert set(got.metrics) == set(want.metrics) - monitor_only
    for k, v in got.metrics.items():
        assert v == pytest.approx(want.metrics[k], abs=1e-9), k


def test_figures_match_an_independent_reference(gpt2_model, gpt2_tok):
    """Means and half-widths against numpy/scipy on the per-example values of evaluate_faithfulness,
    and the same figures from two 'processes' (other chunkings) merged by gather."""
    texts, labels = PROBE
    sppi = get_attributor("sp-pi", gpt2_model, gpt2_tok)
    atts = sppi.attribute(texts, target=labels)
    res = evaluate_faithfulness(atts, sppi.adapter, sppi.masker)

    ev = ProbeEvaluator(sppi, chunk=3)
    ev.update(texts, labels)
    record = ev.compute()
    for name in ("as_auc", "ias_auc", "gap", "log_odds", "comprehensiveness", "sufficiency"):
        mean, half = _t_interval(getattr(res, name).numpy())
        # float32 model outputs, batched in other chunks: equal to float32 round-off, not to 1e-12
        assert record.metrics[name] == pytest.approx(mean, abs=1e-7), name
        assert record.metrics[f"{name}_ci"] == pytest.approx(half, abs=1e-6), name
    assert record.as_auc == pytest.approx(res.as_auc.tolist(), abs=1e-7)
    assert record.metrics["accuracy"] == pytest.approx(np.mean(res.predictions.numpy() == np.array(labels)))
    passes = [a.forward_passes for a in atts]
    assert record.metrics["forward_passes_per_example"] == pytest.approx(np.mean(passes))

    # two shards (ranks 0 and 1 of 2), merged in probe order: the one-process record
    shards = [ProbeEvaluator(sppi, chunk=1), ProbeEvaluator(sppi, chunk=8)]
    for rank, part in enumerate(shards):
        idx = list(range(rank, len(texts), 2))
        part.update([texts[i] for i in idx], [labels[i] for i in idx], index=idx)
    parts = [p.examples for p in shards]
    merged = shards[0].compute(gather=lambda local: parts)
    for a, b in zip(merged.scores, record.scores, strict=True):  # other batches: float32 round-off
        assert a == pytest.approx(b, abs=1e-6)
    for k, v in record.metrics.items():  # masked passes batched differently: float32 noise only
        assert merged.metrics[k] == pytest.approx(v, abs=1e-6), k


def test_paired_change_and_drift_against_history(gpt2_model, gpt2_tok):
    texts, labels = PROBE
    ev = ProbeEvaluator.from_method("sp-pi", gpt2_model, gpt2_tok)
    ev.update(texts, labels)
    now = ev.compute()
    # a made-up earlier record of the same examples: the change is the mean of the differences
    before = ProbeEvaluation(
        step=0,
        log_step=0,
        epoch=0,
        metrics={},
        scores=[list(reversed(s)) for s in now.scores],
        targets=now.targets,
        predictions=now.predictions,
        as_auc=[a - 0.1 * i for i, a in enumerate(now.as_auc)],
        ias_auc=list(now.ias_auc),
        gap=[g - 0.05 for g in now.gap],
    )
    again = ev.compute(history=[before])
    diffs = [0.1 * i for i in range(len(texts))]
    mean, half = _t_interval(diffs)
    assert again.metrics["as_auc_change"] == pytest.approx(mean, abs=1e-9)
    assert again.metrics["as_auc_change_ci"] == pytest.approx(half, abs=1e-9)
    assert again.metrics["gap_change"] == pytest.approx(0.05, abs=1e-9)
    assert again.metrics["as_auc_change_n"] == len(texts)
    rho = [
        stats.spearmanr(a, b).statistic
        for a, b in zip(now.scores, before.scores, strict=True)
        if len(a) > 1 and np.ptp(a) > 0
    ]
    assert again.metrics["drift_rank_corr"] == pytest.approx(np.mean(rho), abs=1e-9)


def test_settings_are_checked_at_construction(gpt2_model, gpt2_tok):
    sppi = get_attributor("sp-pi", gpt2_model, gpt2_tok)
    with pytest.raises(ValueError, match=r"target must be 'label', 'predicted' or a class index, got 'gold'"):
        ProbeEvaluator(sppi, target="gold")
    with pytest.raises(ValueError, match="metrics must be None"):
        ProbeEvaluator(sppi, metrics=["aopc"])
    with pytest.raises(TypeError, match="attributor must be a pi_lightning attributor, got str"):
        ProbeEvaluator("sp-pi")
    ev = ProbeEvaluator(sppi)
    with pytest.raises(ValueError, match="target='label' needs labels"):
        ev.update(["a good movie"])
    with pytest.raises(ValueError, match="takes texts to attribute, or attributions"):
        ev.update()
    # no metrics: attributions and predictions only, no masked passes
    ev = ProbeEvaluator(sppi, metrics=[], target="predicted")
    ev.update(["a good movie", "dull"])
    record = ev.compute()
    assert record.curves == {} and record.as_auc == [None, None]
    assert not any(k.startswith(("as_", "ias_", "gap")) for k in record.metrics)
    assert torch.tensor(record.scores[0]).numel() == 3


class _Compare(pl.Callback):
    """Records, after each training batch, the monitor's public-attribute reading of "a validation
    follows" and Lightning's own decision (its private method: the reference, in this test only)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.pairs: list[tuple[bool, bool]] = []
        self.stop_at = stop_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            trainer.should_stop = True  # what EarlyStopping does
        loop = trainer.fit_loop.epoch_loop
        truth = bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
        self.pairs.append((validation_follows(trainer, batch_idx), truth))


@pytest.mark.parametrize(
    "schedule",
    [
        {},
        {"check_val_every_n_epoch": 2},
        {"val_check_interval": 0.5},
        {"val_check_interval": 3, "check_val_every_n_epoch": None},
        {"limit_train_batches": 3},
        {"limit_val_batches": 0},
        {"stop_at": 2},
        {"stop_at": 2, "min_epochs": 2},
    ],
)
def test_validation_follows_agrees_with_lightning(gpt2_tok, tmp_path, schedule):
    schedule = dict(schedule)
    cmp = _Compare(schedule.pop("stop_at", None))
    _fit(gpt2_tok, tmp_path, [cmp], lr=0.0, max_epochs=3, num_sanity_val_steps=0, **schedule)
    assert len(cmp.pairs) >= (2 if cmp.stop_at else 9)
    assert [a for a, _ in cmp.pairs] == [b for _, b in cmp.pairs]
    assert any(b for _, b in cmp.pairs) == (schedule.get("limit_val_batches") != 0)
