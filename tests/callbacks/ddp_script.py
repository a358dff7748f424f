"""Helper for test_callbacks.test_ddp_two_processes_match_single: fit with 1 or 2 CPU processes
(strategy="ddp", gloo) and write the AttributionMonitor's AUCs to a JSON file.

The model does not train (lr=0) so that both runs see the same weights whatever the data sharding;
what is tested is that sharding the probe set and syncing the metrics gives the single-process figures.
"""

import json
import sys

import lightning.pytorch as pl

from pi_lightning.callbacks import AttributionMonitor
from pi_lightning.testing import exit_after_distributed_run, tiny_classifier, tiny_tokenizer, toy_sentiment
from pi_lightning.training import TextClassifier, TextDataModule


def main(devices: int, out: str) -> None:
    tok = tiny_tokenizer("gpt2")
    pl.seed_everything(0, verbose=False)
    module = TextClassifier(tiny_classifier("gpt2", tokenizer=tok), lr=0.0)
    dm = TextDataModule(tok, toy_sentiment(16, 1), toy_sentiment(8, 2), batch_size=4)
    mon = AttributionMonitor(tok, toy_sentiment(7, 3), "sp-pi")
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[mon],
    )
    trainer.fit(module, datamodule=dm)
    if trainer.is_global_zero:
        with open(out, "w") as fh:
            json.dump(
                {
                    "steps": [e.step // 1 for e in mon.evals],
                    "as_auc": [e.metrics["as_auc"] for e in mon.evals],
                    "ias_auc": [e.metrics["ias_auc"] for e in mon.evals],
                    "gap_change": [e.metrics.get("gap_change") for e in mon.evals],
                    "gap_change_n": [e.metrics.get("gap_change_n") for e in mon.evals],
                },
                fh,
            )


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
    exit_after_distributed_run()  # results written: skip the teardown that can abort (see its docstring)
