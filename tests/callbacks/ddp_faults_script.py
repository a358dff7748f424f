"""Helper for test_faults.test_ddp_with_faults_matches_one_process: fit with 1 or 2 CPU processes (gloo)
with SP-PI and MP-PI monitors, free validation SP-PI over a validation set of 15 examples (not
divisible by 2), a checkpoint and the HTML report; optionally an SP-PI failure injected on the last
rank at the first evaluation. Each rank writes what it saw to ``<out>.rank<r>.json``.

The model does not train (lr=0) so that both runs see the same weights whatever the data sharding.
"""

import json
import sys
import warnings

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from pi_lightning.attributors.sppi import SPPI
from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ValidationSPPI
from pi_lightning.testing import exit_after_distributed_run, tiny_classifier, tiny_tokenizer, toy_sentiment
from pi_lightning.training import TextClassifier, TextDataModule


def main(devices: int, out: str, inject: bool) -> None:
    warnings.simplefilter("always")
    tok = tiny_tokenizer("gpt2")
    pl.seed_everything(0, verbose=False)
    if inject:
        original, calls = SPPI.attribute, {"n": 0}

        def flaky(self, texts, target="predicted"):
            import torch.distributed as dist

            calls["n"] += 1
            if calls["n"] == 1 and dist.is_initialized() and dist.get_rank() == dist.get_world_size() - 1:
                raise RuntimeError("injected failure on the last rank")
            return original(self, texts, target)

        SPPI.attribute = flaky
    module = TextClassifier(tiny_classifier("gpt2", tokenizer=tok), lr=0.0)
    dm = TextDataModule(tok, toy_sentiment(16, 1), toy_sentiment(15, 2), batch_size=4)
    probe = toy_sentiment(7, 3)
    sp = AttributionMonitor(tok, probe, "sp-pi")
    mp = AttributionMonitor(tok, probe, "mp-pi", method_kwargs={"budget": 6, "seed": 0}, metrics=["as_auc"])
    free = ValidationSPPI(tok, min_count=1, top_words=200)
    report = HTMLReport(path=f"{out}.report.html")
    trainer = pl.Trainer(
        max_steps=8 // devices,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[sp, mp, free, report, ModelCheckpoint(dirpath=f"{out}.ck", save_last=True)],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=dm)
    with open(f"{out}.rank{trainer.global_rank}.json", "w") as fh:
        json.dump(
            {
                "global_step": trainer.global_step,
                "max_steps": trainer.max_steps,
                "warnings": [str(w.message) for w in caught],
                "sp": [{"step": e.step, "as_auc": e.metrics["as_auc"], "scores": e.scores} for e in sp.evals],
                "mp": [{"step": e.step, "scores": e.scores} for e in mp.evals],
                "free": [{"metrics": e.metrics, "top_words": e.top_words} for e in free.evals],
                "report": str(report.written) if report.written else None,
            },
            fh,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "inject")
    exit_after_distributed_run()  # results written: skip the teardown that can abort (see its docstring)
