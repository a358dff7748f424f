"""Fault injection: no probe text, fault or model variant stops training or yields a silent wrong number.

Each test injects one fault (a logger that raises, an unwritable report folder, an attributor that
raises once, NaN weights, an over-long text, out-of-range labels, a crafted checkpoint, a resume
from a checkpoint taken just before a validation, DDP with a validation set not divisible by the
number of processes) and checks that training reaches ``max_steps``, that a warning says what
failed and what was skipped, that the checkpoint and the report are written, and that no NaN
reaches a log or the report.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from pi_lightning.attributors import available_methods
from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ValidationSPPI
from pi_lightning.metrics.record import ValidationEvaluation
from pi_lightning.reporting import write_report_from_checkpoint
from pi_lightning.testing import tiny_classifier, tiny_tokenizer, toy_sentiment
from pi_lightning.training import TextClassifier, TextDataModule


class _RunsCode:
    """Unpickling this object would call ``Path.touch(target)`` (a stand-in for a shell command)."""

    def __init__(self, target) -> None:
        self.target = target

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.target),))


def test_report_from_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save(
        {"callbacks": {"AttributionMonitor{'method': 'sp-pi'}": {"evals": [], "x": _RunsCode(marker)}}}, ckpt
    )
    with pytest.raises(ValueError, match=r"safe loading \(torch.load\(weights_only=True\)\) refuses"):
        write_report_from_checkpoint(ckpt, tmp_path / "r.html")
    assert not marker.exists()


# --------------------------------------------------------------------------- training with injected faults
TRAIN = toy_sentiment(32, seed=1)
VAL = toy_sentiment(8, seed=2)
PROBE = toy_sentiment(4, seed=3)
MAX_STEPS = 6


def _run(tok, callbacks, tmp_path, model=None, logger=None, **trainer_kw):
    """Fit to MAX_STEPS with validation every 2 steps, a CSV logger, a checkpoint and the HTML report."""
    pl.seed_everything(0, verbose=False)
    model = model if model is not None else tiny_classifier("gpt2", tokenizer=tok)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    report = HTMLReport(path=trainer_kw.pop("report_path", tmp_path / "report.html"))
    logger = logger if logger is not None else CSVLogger(tmp_path)
    trainer = pl.Trainer(
        max_steps=MAX_STEPS,
        val_check_interval=2,
        accelerator="cpu",
        logger=logger,
        callbacks=[*callbacks, ckpt, report],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        **trainer_kw,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TextClassifier(model, lr=5e-3), datamodule=TextDataModule(tok, TRAIN, VAL, batch_size=4))
    return trainer, report, [str(w.message) for w in caught]


def _no_nan_anywhere(trainer, report, tmp_path):
    assert trainer.global_step == MAX_STEPS
    assert (tmp_path / "ck" / "last.ckpt").exists()
    if report.written is not None:
        html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", report.written.read_text())
        assert not re.search(r"\b(nan|inf)\b", html, re.IGNORECASE), "NaN in the report"
    for csv in Path(tmp_path).rglob("metrics.csv"):  # the callbacks' columns (the user's loss may be NaN)
        header, *lines = csv.read_text().splitlines()
        cols = [i for i, c in enumerate(header.split(",")) if c.startswith("pi/")]
        for line in lines:
            values = line.split(",")
            assert not any(values[i].strip().lower() in ("nan", "inf", "-inf") for i in cols), line
    for cb in trainer.callbacks:
        for e in getattr(cb, "evals", []):
            assert all(math.isfinite(v) for v in e.metrics.values()), e.metrics
            for row in getattr(e, "scores", []):
                assert all(math.isfinite(s) for s in row)


def test_attributor_that_raises_once_skips_one_evaluation(gpt2_tok, tmp_path, monkeypatch):
    from pi_lightning.attributors.sppi import SPPI

    calls = {"n": 0}
    original = SPPI.attribute

    def flaky(self, texts, target="predicted"):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure")
        return original(self, texts, target)

    monkeypatch.setattr(SPPI, "attribute", flaky)
    mon = AttributionMonitor(gpt2_tok, PROBE, "sp-pi")
    trainer, report, msgs = _run(gpt2_tok, [mon], tmp_path)
    assert any(
        "evaluation at step 0 failed on rank 0 (RuntimeError: injected failure)" in m and "skipped" in m
        for m in msgs
    ), msgs
    # the failed baseline is skipped; the first evaluation that ran is then the paired reference
    assert [e.step for e in mon.evals] == [2, 4, 6]
    assert "gap_change" not in mon.evals[0].metrics and "gap_change" in mon.evals[-1].metrics
    assert report.written is not None and report.written.exists()
    _no_nan_anywhere(trainer, report, tmp_path)


def test_logger_that_raises_and_unwritable_report_folder(gpt2_tok, tmp_path):
    class BrokenLogger(CSVLogger):
        def log_metrics(self, metrics, step=None):  # fails for the callbacks' figures (Lightning's own work)
            if any(k.startswith("pi/") for k in metrics):
                raise OSError("disk full")
            super().log_metrics(metrics, step)

    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the report folder should be")
    mon = AttributionMonitor(gpt2_tok, PROBE, "sp-pi")
    trainer, _, msgs = _run(
        gpt2_tok,
        [mon, ValidationSPPI(gpt2_tok)],
        tmp_path,
        logger=BrokenLogger(tmp_path),
        report_path=blocker / "report.html",
    )
    assert any("BrokenLogger failed to log scalars" in m and "training goes on" in m for m in msgs), msgs
    assert any("HTMLReport: writing" in m and "failed" in m for m in msgs), msgs
    assert [e.step for e in mon.evals] == [0, 2, 4, 6]
    assert trainer.global_step == MAX_STEPS and (tmp_path / "ck" / "last.ckpt").exists()


def test_nan_model_warns_and_logs_no_nan(gpt2_tok, tmp_path):
    model = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
    mons = [
        AttributionMonitor(gpt2_tok, PROBE, "sp-pi"),
        AttributionMonitor(gpt2_tok, PROBE, "mp-pi", method_kwargs={"budget": 4}, metrics=[]),
    ]
    free = ValidationSPPI(gpt2_tok, min_count=1)
    trainer, report, msgs = _run(gpt2_tok, [*mons, free], tmp_path, model=model)
    assert any("'sp-pi'" in m and "NaN or infinite" in m and "skipped" in m for m in msgs), msgs
    assert any("'mp-pi'" in m and "NaN or infinite" in m and "skipped" in m for m in msgs), msgs
    assert any("ValidationSPPI" in m and "NaN or infinite" in m and "skipped" in m for m in msgs), msgs
    assert all(not m.evals for m in mons) and not free.evals
    _no_nan_anywhere(trainer, report, tmp_path)


def test_out_of_range_probe_labels_are_skipped_with_a_clear_warning(gpt2_tok, tmp_path):
    for bad in (5, -1):
        mon = AttributionMonitor(gpt2_tok, (PROBE[0], [0, 1, bad, 0]), "sp-pi")
        trainer, report, caught = _run(gpt2_tok, [mon], tmp_path / str(bad))
        assert any(
            re.search(
                rf"probe label {bad} of example 2 .* num_labels=2 \(classes 0..1\).* those examples "
                r"are skipped \(3 left\)",
                m,
            )
            for m in caught
        ), caught
        assert mon.texts == [PROBE[0][j] for j in (0, 1, 3)]
        assert mon.evals and all(len(e.scores) == 3 for e in mon.evals)
        _no_nan_anywhere(trainer, report, tmp_path / str(bad))
    # every label out of range: the monitor evaluates nothing, training still reaches max_steps
    mon = AttributionMonitor(gpt2_tok, (PROBE[0], [7] * len(PROBE[0])), "sp-pi")
    trainer, _, caught = _run(gpt2_tok, [mon], tmp_path / "all")
    assert any("this monitor evaluates nothing" in m for m in caught), caught
    assert trainer.global_step == MAX_STEPS and mon.evals == []


# --------------------------------------------------------------------------- the library on NaN models
@pytest.mark.parametrize("method", ["sp-pi", "mp-pi", "ig"])
def test_nan_model_raises_a_clear_error(gpt2_tok, method):
    from pi_lightning import get_attributor

    model = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    with torch.no_grad():
        model.score.weight[0, 0] = float("nan")
    kw = {"mp-pi": {"budget": 4, "seed": 0}, "ig": {"budget": 2}}.get(method, {})
    with pytest.raises(FloatingPointError, match=r"NaN or infinite values .* weights are probably NaN"):
        get_attributor(method, model, gpt2_tok, **kw).attribute(["a good movie", "bad"], target=1)


# --------------------------------------------------------------------------- one definition of a word
WORDY = "a shoot-'em-up, don't miss\tit: self-indulgent fun"


def _free_words(validate_once, tok, model, text):
    free = ValidationSPPI(tok, min_count=1, top_words=100)
    validate_once(TextClassifier(model), TextDataModule(tok, ([text], [1]), ([text], [1])), [free])
    return {w["word"]: w["mean_phi"] for w in free.evals[-1].top_words}


def test_free_validation_and_featurizer_share_one_word_definition(tiny, validate_once):
    from pi_lightning import SPPI

    _, model, tok = tiny
    [ref] = SPPI(model, tok).attribute(WORDY, target=1)
    assert ref.features.texts == (
        "a",
        "shoot-'em-up",
        ",",
        "don't",
        "miss",
        "it",
        ":",
        "self-indulgent",
        "fun",
    )
    got = _free_words(validate_once, tok, model, WORDY)
    # Every word is scored as in SP-PI: against the BOS (llama), or the anchor token alone (gpt2).
    want = dict(zip(ref.features.texts, ref.scores.tolist(), strict=True))
    assert set(got) == set(want)
    for w, v in want.items():
        assert got[w] == pytest.approx(v, abs=1e-5), w


# --------------------------------------------------------------------------- over-long texts
LONG = " ".join(["a good movie, really"] * 150)  # ~750 words: far beyond the tiny models' 512 positions


def test_over_long_text_fits_the_model_even_fully_masked(gpt2_tok):
    from pi_lightning import get_attributor

    model = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    # the paper's mask: a masked word takes 3 tokens, so the fully masked input is the longest one
    mp = get_attributor("mp-pi", model, gpt2_tok, budget=4, seed=0, mask="...")
    with pytest.warns(UserWarning, match="every feature is masked by 3 tokens: the text is truncated"):
        [f] = mp.featurize(LONG)
    for z in (torch.zeros(1, f.n, dtype=torch.bool), torch.ones(1, f.n, dtype=torch.bool)):
        (seq,), _ = mp.masker(f, z)
        assert len(seq) <= 512
    [a] = get_attributor("sp-pi", model, gpt2_tok, mask="...").attribute(
        LONG, target=1
    )  # reads the fully masked input
    assert torch.isfinite(a.scores).all() and a.features.n == f.n
    [b] = mp.attribute(LONG, target=1)
    assert torch.isfinite(b.scores).all()


def test_over_long_probe_text_through_the_monitor(gpt2_tok, tmp_path):
    mon = AttributionMonitor(gpt2_tok, ([LONG, *PROBE[0]], [1, *PROBE[1]]), "sp-pi", metrics=[])
    trainer, report, _ = _run(gpt2_tok, [mon], tmp_path)
    assert [e.step for e in mon.evals] == [0, 2, 4, 6]
    # the long text is kept (truncated, not dropped): explained at every evaluation, first in the probe
    assert mon.texts[0] == LONG and len(mon.texts) == 1 + len(PROBE[0])
    n = len(mon.char_spans[0])
    assert 0 < n < len(LONG.split()) and mon.char_spans[0][-1][1] < len(LONG)
    for e in mon.evals:
        assert len(e.scores) == len(mon.texts) and len(e.scores[0]) == n
        assert all(math.isfinite(s) for s in e.scores[0]) and any(s != 0 for s in e.scores[0])
    _no_nan_anywhere(trainer, report, tmp_path)


# --------------------------------------------------------------------------- model variants
def _prefix_logits(model, ids):
    """Reference: the model's own (pooled) prediction on every prefix of ``ids``, one call per prefix."""
    out = []
    with torch.no_grad():
        for t in range(1, len(ids) + 1):
            x = torch.tensor([ids[:t]])
            out.append(model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0])
    return torch.stack(out)


PEFT_CONFIGS = {
    "lora": lambda peft: peft.LoraConfig(
        task_type="SEQ_CLS", r=4, target_modules=["c_attn"], fan_in_fan_out=True
    ),
    "dora": lambda peft: peft.LoraConfig(
        task_type="SEQ_CLS", r=4, target_modules=["c_attn"], fan_in_fan_out=True, use_dora=True
    ),
    "ia3": lambda peft: peft.IA3Config(
        task_type="SEQ_CLS",
        target_modules=["c_attn", "mlp.c_proj"],
        feedforward_modules=["mlp.c_proj"],
        fan_in_fan_out=True,
    ),
    "prefix": lambda peft: peft.PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4),
    "prompt": lambda peft: peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=5),
}


@pytest.mark.parametrize("kind", list(PEFT_CONFIGS))
def test_peft_variants_give_the_models_own_intermediate_predictions(gpt2_tok, kind):
    """SP-PI reads the head at each word end: it must equal the peft model's prediction on that prefix."""
    peft = pytest.importorskip("peft")
    from pi_lightning import SPPI
    from pi_lightning.inference import class_probs

    base = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    torch.manual_seed(0)
    model = peft.get_peft_model(base, PEFT_CONFIGS[kind](peft)).eval()
    with torch.no_grad():  # make the adapter matter (LoRA B and IA3 start as the identity)
        for n, p in model.named_parameters():
            if p.requires_grad and ("lora_B" in n or "ia3" in n or "prompt" in n or "magnitude" in n):
                p.add_(0.3 * torch.randn_like(p))
    [a] = SPPI(model, gpt2_tok).attribute("a good movie, really fun", target=1)
    ref = _prefix_logits(model, list(a.features.input_ids))
    want = class_probs(ref[list(a.features.ends)])[:, 1]
    assert torch.allclose(a.extras["intermediate"], want, atol=1e-5), (a.extras["intermediate"], want)
    assert torch.allclose(a.probs, class_probs(ref[-1]), atol=1e-5)


def test_head_found_by_what_it_does_not_by_name(gpt2_tok):
    """A per-position head called `classifier` works (and equals the same weights under `score`)."""
    from transformers import GPT2Config, GPT2Model, GPT2PreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutput

    from pi_lightning import SPPI

    class PerPositionClassifier(GPT2PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.transformer = GPT2Model(config)
            self.classifier = torch.nn.Linear(config.n_embd, config.num_labels, bias=False)

        def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, **_):
            h = self.transformer(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
            ).last_hidden_state
            logits = self.classifier(h)  # (B, T, C): every position
            last = attention_mask.sum(-1) - 1
            return SequenceClassifierOutput(logits=logits[torch.arange(len(logits)), last])

    ref = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    custom = PerPositionClassifier(GPT2Config(**ref.config.to_dict())).eval()
    custom.transformer.load_state_dict(ref.transformer.state_dict())
    custom.classifier.weight.data.copy_(ref.score.weight.data)
    [a] = SPPI(custom, gpt2_tok).attribute("a good movie", target=1)
    [b] = SPPI(ref, gpt2_tok).attribute("a good movie", target=1)
    assert torch.allclose(a.scores, b.scores, atol=1e-6)


def test_pooled_head_is_rejected_with_what_was_found(gpt2_tok):
    from transformers import GPT2Config, GPT2Model, GPT2PreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutput

    from pi_lightning import SPPI

    class Pooled(GPT2PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.transformer = GPT2Model(config)
            self.classifier = torch.nn.Linear(config.n_embd, config.num_labels)

        def forward(self, input_ids=None, attention_mask=None, **_):
            h = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return SequenceClassifierOutput(logits=self.classifier(h.mean(1)))

    model = Pooled(GPT2Config(**tiny_classifier("gpt2", tokenizer=gpt2_tok).config.to_dict())).eval()
    with pytest.raises(
        TypeError, match=r"classifier head applied to a pooled output \(`classifier` -> \(1, 2\)\)"
    ):
        SPPI(model, gpt2_tok)


def test_single_logit_probs_use_the_sigmoid_of_the_scores(gpt2_tok):
    from pi_lightning import SPPI

    model = tiny_classifier("gpt2", num_labels=1, tokenizer=gpt2_tok)
    [a] = SPPI(model, gpt2_tok).attribute("a good movie", target=0)
    p_final = a.base_value + float(a.scores.sum())  # sigmoid of the final logit (local accuracy)
    assert a.probs.shape == (1,) and float(a.probs[0]) == pytest.approx(p_final, abs=1e-9)
    assert float(a.probs[0]) != 1.0


# --------------------------------------------------------------------------- schedules
def test_one_record_per_step_when_step_and_validation_schedules_meet(gpt2_tok, tmp_path):
    mon = AttributionMonitor(gpt2_tok, PROBE, "sp-pi", every_n_val=1, every_n_steps=2, metrics=[])
    trainer, report, _ = _run(gpt2_tok, [mon], tmp_path)  # validation every 2 steps too
    assert [e.step for e in mon.evals] == [0, 2, 4, 6]
    _no_nan_anywhere(trainer, report, tmp_path)


# --------------------------------------------------------------------------- left padding, absolute positions
class _LeftPadded(TextDataModule):
    def _collate(self, rows):
        batch = super()._collate(rows)
        lengths = batch["attention_mask"].sum(1)
        for r, n in enumerate(lengths.tolist()):  # (B, T) right-padded -> left-padded
            for key in ("input_ids", "attention_mask"):
                batch[key][r] = torch.roll(batch[key][r], int(batch[key].shape[1] - n))
        return batch


def test_left_padding_with_absolute_positions_warns(gpt2_tok, tmp_path):
    texts = (["a good movie", "bad", "the plot was really very dull"], [1, 0, 0])
    free = ValidationSPPI(gpt2_tok, min_count=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[free],
        default_root_dir=tmp_path,
    )
    with pytest.warns(
        UserWarning,
        match="left-padded validation batches run through "
        "GPT2ForSequenceClassification, which has absolute position embeddings",
    ):
        trainer.validate(
            TextClassifier(tiny_classifier("gpt2", tokenizer=gpt2_tok)),
            datamodule=_LeftPadded(gpt2_tok, texts, texts, batch_size=3),
            verbose=False,
        )
    assert free.evals[-1].metrics["n_examples"] == 3  # "bad" is one word, scored against the anchor


# --------------------------------------------------------------------------- DDP (2 processes, gloo, CPU)
def _faults_script(processes: int, out: Path, *extra: str) -> None:
    """Run ddp_faults_script.py on ``processes`` gloo processes, writing ``out.rank<r>.json``."""
    import os
    import subprocess
    import sys

    script = Path(__file__).parent / "ddp_faults_script.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(script), str(processes), str(out), *extra], check=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> dict:
    """The one-process reference run of ddp_faults_script.py, run once for both DDP comparisons."""
    import json

    out = tmp_path_factory.mktemp("faults_one") / "one"
    _faults_script(1, out)
    return json.loads(out.with_name("one.rank0.json").read_text())


@pytest.mark.slow
def test_ddp_with_faults_matches_one_process(tmp_path, one_process_run):
    import json

    _faults_script(2, tmp_path / "ddp", "inject")
    one = one_process_run
    ranks = [json.loads((tmp_path / f"ddp.rank{r}.json").read_text()) for r in (0, 1)]
    for run in (one, *ranks):
        assert run["global_step"] == run["max_steps"]
    # the failure on rank 1 is named there, rank 0 says it skipped too, and nobody hung
    assert any(
        "failed on rank 1 (RuntimeError: injected failure on the last rank)" in w
        for w in ranks[1]["warnings"]
    )
    assert any("failed on another rank" in w for w in ranks[0]["warnings"])
    ddp = ranks[0]
    # the first evaluation (the step-0 baseline) was skipped on every rank
    assert [e["step"] for e in ddp["sp"]] == [2, 4]
    assert ddp["report"] and Path(ddp["report"]).exists() and (tmp_path / "ddp.ck" / "last.ckpt").exists()
    # what is computed equals one process: SP-PI, free validation SP-PI (15 examples, no repeats counted)
    assert ddp["sp"][-1]["as_auc"] == pytest.approx(one["sp"][-1]["as_auc"], abs=1e-6)
    assert len(ddp["sp"][-1]["scores"]) == len(one["sp"][-1]["scores"]) > 0
    for a, b in zip(ddp["sp"][-1]["scores"], one["sp"][-1]["scores"], strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    f1, f2 = one["free"][-1], ddp["free"][-1]
    assert f1["metrics"]["n_examples"] == f2["metrics"]["n_examples"] == 15
    assert f1["metrics"]["n_words"] == f2["metrics"]["n_words"]
    # float32 attributions summed in a different order across ranks: agree to round-off, not bit for bit.
    assert f1["metrics"]["top20_share"] == pytest.approx(f2["metrics"]["top20_share"], abs=1e-6)
    assert {w["word"]: w["count"] for w in f1["top_words"]} == {
        w["word"]: w["count"] for w in f2["top_words"]
    }
    assert len(ddp["mp"]) == len(one["mp"]) == 3  # the step-0 baseline and 2 evaluations


@pytest.mark.slow
def test_ddp_mppi_matches_one_process(tmp_path, one_process_run):
    import json

    _faults_script(2, tmp_path / "ddp")
    one = one_process_run
    ddp = json.loads((tmp_path / "ddp.rank0.json").read_text())
    # the same masks on both sides (a different draw moves scores by ~0.1); float32 batching noise ~1e-7
    assert len(ddp["mp"][-1]["scores"]) == len(one["mp"][-1]["scores"]) > 0
    for a, b in zip(ddp["mp"][-1]["scores"], one["mp"][-1]["scores"], strict=True):
        assert a == pytest.approx(b, abs=1e-6)


# --------------------------------------------------------------------------- batching invariance
_FAST = {
    "mp-pi": {"budget": 6, "seed": 0},
    "kernel-shap": {"budget": 8, "seed": 0},
    "ig": {"budget": 4},
    "udig": {"budget": 4},
    "at2": {"budget": 8, "num_iterations": 20},
    "random": {"seed": 0},
}
_BATCH_TEXTS = ["a good movie, really", "the plot was dull", "fun", "not so bad at all, just too long"]


@pytest.mark.parametrize("method", available_methods())
def test_attributions_do_not_depend_on_batching(gpt2_tok, method):
    """A text's attribution is the same alone, in a batch, and with a tiny token budget (many chunks)."""
    import inspect

    from pi_lightning import get_attributor
    from pi_lightning.attributors.base import _REGISTRY

    model = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    params = inspect.signature(_REGISTRY[method].__init__).parameters
    kw = {k: v for k, v in _FAST.get(method, {}).items() if k in params or "kwargs" in params}
    att = get_attributor(method, model, gpt2_tok, **kw)
    if hasattr(att, "fit"):  # AT2: fitted once, then a fixed linear map
        att.fit(_BATCH_TEXTS, target=1)
    together = att.attribute(_BATCH_TEXTS, target=1)
    alone = [att.attribute([t], target=1)[0] for t in reversed(_BATCH_TEXTS)][
        ::-1
    ]  # other calls, other order
    att.adapter.max_tokens = 16  # many small forward batches
    chunked = att.attribute(_BATCH_TEXTS, target=1)
    for a, b, c in zip(together, chunked, alone, strict=True):
        assert torch.allclose(a.scores, c.scores, atol=1e-5), (method, a.scores, c.scores)
        assert torch.allclose(a.scores, b.scores, atol=1e-5), (method, a.scores, b.scores)


def _fit_steps(tok, callbacks, root, max_steps, ckpt_path=None):
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        max_steps=max_steps,
        val_check_interval=2,
        accelerator="cpu",
        logger=False,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(
        TextClassifier(tiny_classifier("gpt2", tokenizer=tok), lr=5e-3),
        datamodule=TextDataModule(tok, TRAIN, VAL, batch_size=4, shuffle=False),
        ckpt_path=ckpt_path,
    )
    return trainer


def test_resume_from_a_checkpoint_taken_just_before_a_validation(gpt2_tok, tmp_path):
    def monitors():
        return [
            AttributionMonitor(gpt2_tok, PROBE, "sp-pi", metrics=[]),
            AttributionMonitor(gpt2_tok, PROBE, "random", every_n_val=2, metrics=[]),
            ValidationSPPI(gpt2_tok, min_count=1),
        ]

    full = monitors()
    _fit_steps(gpt2_tok, full, tmp_path / "full", 8)
    assert [e.step for e in full[0].evals] == [0, 2, 4, 6, 8] and [e.step for e in full[1].evals] == [0, 4, 8]
    assert [e.step for e in full[2].evals] == [2, 4, 6, 8]
    # a checkpoint written in on_train_batch_end at step 4, before that step's validation
    ck = ModelCheckpoint(
        dirpath=tmp_path / "ck",
        every_n_train_steps=4,
        save_top_k=-1,
        filename="s{step}",
        auto_insert_metric_name=False,
    )
    _fit_steps(gpt2_tok, [*monitors(), ck], tmp_path / "first", 5)
    resumed = monitors()
    with pytest.warns(UserWarning, match="ValidationSPPI: the checkpoint was written at step 4, just before"):
        trainer = _fit_steps(
            gpt2_tok, resumed, tmp_path / "second", 8, ckpt_path=str(tmp_path / "ck" / "s4.ckpt")
        )
    assert trainer.global_step == 8
    # free SP-PI comes from the validation loop's own forward pass: the validation Lightning does not run
    # again on resume (step 4) has no record, and says so; every other one is there
    assert [e.step for e in resumed[2].evals] == [2, 6, 8]
    resumed[2].evals.insert(1, full[2].evals[1])
    for got, want in zip(resumed, full, strict=True):
        # the monitors' step-0 baseline came back with the checkpoint and is not repeated
        assert [e.step for e in got.evals] == [e.step for e in want.evals]
        # up to the checkpoint the weights are the same (after it, a non-stateful DataLoader restarts the
        # epoch on resume, which is Lightning's business, not the callback's)
        for a, b in zip(got.evals, want.evals, strict=True):
            if a.step > 4:
                continue
            if isinstance(a, ValidationEvaluation):  # the free validation SP-PI, restored from the checkpoint
                assert a.metrics == pytest.approx(b.metrics, abs=1e-9) and a.top_words == b.top_words
                continue
            assert len(a.scores) == len(b.scores) == len(PROBE[0])
            for sa, sb in zip(a.scores, b.scores, strict=True):
                assert sa == pytest.approx(sb, abs=1e-6)


def test_free_validation_words_of_texts_cut_mid_word(gpt2_tok, tmp_path):
    """Truncation can cut a character's bytes so that the tokens no longer round-trip through the
    tokenizer: the words are still found (from the decoded prefixes), none is skipped."""
    model = tiny_classifier("gpt2", tokenizer=gpt2_tok)
    text = "it was fun and Café crème"
    ids = gpt2_tok(text)["input_ids"]
    cut = 16  # ... "Ġc", "r", "Ã": the last token is the first byte of "è"
    assert gpt2_tok(gpt2_tok.decode(ids[:cut]))["input_ids"] != ids[:cut]
    free = ValidationSPPI(gpt2_tok, min_count=1, top_words=100)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[free],
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(
            TextClassifier(model),
            datamodule=TextDataModule(gpt2_tok, ([text], [1]), ([text], [1]), max_length=cut),
            verbose=False,
        )
    assert not any("skipped" in str(w.message) for w in caught)
    assert free.evals[-1].metrics["n_examples"] == 1
    assert {w["word"] for w in free.evals[-1].top_words} == {
        "it",
        "was",
        "fun",
        "and",
        "café",  # the detector ranks normalised words (mine_shortcuts: case-folded)
        "cr",
        "\ufffd",
    }


# --------------------------------------------------------------------------- seams (issue 25)
# Faults found where two parts meet: unreadable validation batches, an explain run killed mid-write or
# run twice into one folder, a crafted value in a checkpoint.
QUIET = {"enable_progress_bar": False, "accelerator": "cpu"}
TEXTS = ["a good movie.", ".great fun", "it was.great", "Don't miss it!\nReally."]


def _reviews(n, seed=0):
    return toy_sentiment(n, seed=seed, length=(2, 4))[0]


def test_validation_sppi_names_the_batches_it_skips(validate_once):
    from pi_lightning.callbacks import ValidationSPPI
    from pi_lightning.training import TextClassifier

    tok = tiny_tokenizer("gpt2")
    model = tiny_classifier("gpt2", tokenizer=tok)
    dm = TextDataModule(tok, (TEXTS, [0, 1, 1, 0]), (TEXTS, [0, 1, 1, 0]), batch_size=2)

    class TupleModule(TextClassifier):
        def validation_step(self, batch, batch_idx):
            ids, mask, y = batch
            return super().validation_step({"input_ids": ids, "attention_mask": mask, "labels": y}, batch_idx)

    tuples = torch.utils.data.DataLoader(
        [(b["input_ids"], b["attention_mask"], b["labels"]) for b in dm.val_dataloader()], batch_size=None
    )
    cb = ValidationSPPI(tok)
    expected = r"skipped 2 validation batches.*batches 0, 1 \(2\): it is a (tuple|list), not a mapping"
    with pytest.warns(UserWarning, match=expected):
        validate_once(TupleModule(model).eval(), tuples, [cb])
    assert [b["batch_idx"] for b in cb.skipped_batches] == [0, 1]
    assert all("not a mapping" in b["reason"] for b in cb.skipped_batches)
    assert cb.evals == []


def test_explain_job_cleans_temporary_files_and_refuses_a_concurrent_run(tmp_path, gpt2_model, gpt2_tok):
    import json
    import os
    import socket
    import subprocess
    import sys

    from pi_lightning.jobs import explain_dataset, load_results

    texts = _reviews(4)
    explain_dataset(gpt2_model, gpt2_tok, texts, tmp_path, **QUIET)
    left = [tmp_path / ".explanations.jsonl.4242.tmp", tmp_path / "shards" / ".shard-x.jsonl.4242.tmp"]
    for p in left:  # what a killed run leaves behind
        p.write_text("half a file")
    assert not (tmp_path / ".lock").exists()  # released after the run
    # a live run holds the folder: refused, in one clear sentence
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    with pytest.raises(FileExistsError, match=r"Another explain run \(process \d+ .*\) is writing into"):
        explain_dataset(gpt2_model, gpt2_tok, texts, tmp_path, **QUIET)
    # a lock left by a killed run is taken over
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    assert explain_dataset(gpt2_model, gpt2_tok, texts, tmp_path, **QUIET).skipped == 1
    assert not any(p.exists() for p in left) and not (tmp_path / ".lock").exists()
    assert [r.text for r in load_results(tmp_path)] == texts


def test_write_atomic_leaves_the_old_file_whole_when_a_write_fails(tmp_path):
    from pi_lightning.jobs.explain import write_atomic

    path = tmp_path / "explanations.jsonl"
    write_atomic(path, "old\n")

    def half(p):
        p.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["explanations.jsonl"]


def test_a_checkpoint_value_never_reaches_the_html_unescaped(tmp_path):
    from pi_lightning.metrics.record import ProbeEvaluation, ProbeHistory
    from pi_lightning.reporting import write_report_from_checkpoint

    ev = ProbeEvaluation(step=3, log_step=3, epoch=0, metrics={"gap": 0.1}, scores=[[0.5]], targets=[1])
    ev.predictions, ev.as_auc, ev.ias_auc, ev.gap = [1], [0.6], [0.5], [0.1]
    state = ProbeHistory("sp-pi", ["good"], [1], None, [[[0, 4]]], [ev]).state_dict()
    state["evals"][0]["step"] = "<script>alert(1)</script>"
    ckpt = tmp_path / "bad.ckpt"
    torch.save({"callbacks": {"AttributionMonitor": state}}, ckpt)
    with pytest.raises(ValueError, match=r"ProbeEvaluation has step='<script>.*expected an int"):
        write_report_from_checkpoint(ckpt, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
