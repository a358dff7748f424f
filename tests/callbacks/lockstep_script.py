"""Helper for test_explain_job.test_equal_forward_passes_per_rank: 2 CPU processes (DDP, gloo) evaluate
AttributionMonitors on probe sets of 1, 7 and 8 texts of different lengths, counting each rank's forward
passes during each evaluation; every rank writes its counts to OUT_DIR/rank{r}.json.

    python tests/callbacks/lockstep_script.py OUT_DIR

Besides all forward passes (``calls``), it records the real ones (``real``: without the padding, the counts
the ranks would have issued).
"""

import contextlib
import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

import pi_lightning.callbacks.attribution_monitor as am
from pi_lightning.callbacks import AttributionMonitor
from pi_lightning.testing import exit_after_distributed_run, tiny_classifier, tiny_tokenizer, toy_sentiment
from pi_lightning.training import TextClassifier, TextDataModule

SIZES = (1, 7, 8)
METHODS = {"sp-pi": {}, "mp-pi": {"budget": 12, "seed": 0}}


class Probes(pl.Callback):
    """Runs the monitors' evaluations at the end of validation, counting forward passes per evaluation."""

    def __init__(self, tok):
        # lengths 3..17 words: shards of equal size still batch and mask differently
        texts, labels = toy_sentiment(8, seed=4, length=(2, 16))
        self.monitors = {
            (m, n): AttributionMonitor(
                tok, (texts[:n], labels[:n]), m, method_kwargs={**kw, "max_tokens": 48}, log_examples=0
            )
            for m, kw in METHODS.items()
            for n in SIZES
        }
        self.counts, self.real = {}, {}

    def on_validation_epoch_end(self, trainer, pl_module):
        calls = []
        handle = pl_module.model.register_forward_hook(lambda *a: calls.append(1))
        try:
            for (m, n), mon in self.monitors.items():
                mon.setup(trainer, pl_module, "validate")
                calls.clear()
                with recording() as seen:
                    mon.evaluate(trainer, pl_module)
                self.counts[f"{m}/{n}"] = len(calls)
                self.real[f"{m}/{n}"] = seen[0]["real"]
        finally:
            handle.remove()


_original = am.equal_forward_passes
_seen: list = []


@contextlib.contextmanager
def _recorded(*args, **kwargs):
    with _original(*args, **kwargs) as counts:
        _seen.append(counts)
        yield counts


@contextlib.contextmanager
def recording():
    _seen.clear()
    yield _seen


def main(out: str) -> None:
    torch.set_num_threads(1)
    am.equal_forward_passes = _recorded
    tok = tiny_tokenizer("gpt2")
    module = TextClassifier(tiny_classifier("gpt2", tokenizer=tok), lr=0.0)
    dm = TextDataModule(tok, toy_sentiment(8, 1), toy_sentiment(4, 2), batch_size=2)
    probes = Probes(tok)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probes],
    )
    trainer.validate(module, datamodule=dm, verbose=False)
    Path(out, f"rank{trainer.global_rank}.json").write_text(
        json.dumps({"calls": probes.counts, "real": probes.real})
    )


if __name__ == "__main__":
    main(sys.argv[1])
    exit_after_distributed_run()  # results written: skip the teardown that can abort (see its docstring)
