"""Plugging pi_lightning into a recipe that was written without it.

Everything outside the two ``pi_lightning`` marker comments is an ordinary fine-tuning script: a plain
Hugging Face ``AutoModelForSequenceClassification`` inside a LightningModule, a Dataset and a
collate function. The lines between the markers are all it takes to watch the model's
explanations while it trains: SP-PI on a few held-out examples with its faithfulness (AS/IAS AUC),
free SP-PI over the whole validation set, and an HTML report at the end.

The callbacks find the Hugging Face model at ``module.model`` (else pass ``model="attr.path"``)
and read validation batches with ``input_ids``, ``attention_mask`` and ``labels``.

    python recipes/plug_in.py           # SmolLM2-135M-Instruct (embedded), full fine-tuning, CPU minutes
    python recipes/plug_in.py --fast    # a tiny random model, seconds
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class PlainClassifier(pl.LightningModule):
    """An ordinary LightningModule around a Hugging Face sequence classifier."""

    def __init__(self, model: torch.nn.Module, lr: float = 5e-5) -> None:
        super().__init__()
        self.model = model
        self.lr = lr

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        out = self.model(**batch)
        self.log("val_loss", out.loss, prog_bar=True)
        self.log("val_acc", (out.logits.argmax(-1) == batch["labels"]).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def make_loader(
    tokenizer, texts: Sequence[str], labels: Sequence[int], batch_size: int, shuffle: bool
) -> DataLoader:
    """Batches of ``{"input_ids", "attention_mask", "labels"}`` (dynamic padding)."""

    def collate(rows):
        enc = tokenizer(
            [t for t, _ in rows], padding=True, truncation=True, max_length=64, return_tensors="pt"
        )
        return {**enc, "labels": torch.tensor([y for _, y in rows])}

    return DataLoader(
        list(zip(texts, labels, strict=False)), batch_size=batch_size, shuffle=shuffle, collate_fn=collate
    )


def load(fast: bool):
    """(model, tokenizer, train, val, probe): the embedded SmolLM2 and Rotten Tomatoes, or tiny ones."""
    if fast:
        from pi_lightning.testing import tiny_classifier, tiny_tokenizer, toy_sentiment

        tokenizer = tiny_tokenizer("gpt2")
        model = tiny_classifier("gpt2", tokenizer=tokenizer).train()
        return (
            model,
            tokenizer,
            toy_sentiment(96, seed=1),
            toy_sentiment(32, seed=2),
            toy_sentiment(4, seed=3),
        )
    from pi_lightning.data import load_movie_reviews
    from pi_lightning.models import default_model_dir, load_tokenizer

    load_tokenizer()  # converts the embedded GGUF into an ordinary model folder on first use (no network)
    folder = (
        default_model_dir()
    )  # with a network, any hub id works here, e.g. "HuggingFaceTB/SmolLM2-135M-Instruct"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2, pad_token_id=tokenizer.pad_token_id
    )

    def split(name, n, max_words=None):
        d = load_movie_reviews("rotten_tomatoes", name)
        keep = [i for i, t in enumerate(d.texts) if max_words is None or len(t.split()) <= max_words][:n]
        return [d.texts[i] for i in keep], [d.labels[i] for i in keep]

    return model, tokenizer, split("train", 256), split("val", 48), split("test", 6, max_words=14)


def main(argv: Sequence[str] | None = None) -> pl.Trainer:
    p = argparse.ArgumentParser(description="An ordinary fine-tuning script, plus pi_lightning's callbacks.")
    p.add_argument("--fast", action="store_true", help="tiny random model on synthetic data (seconds)")
    p.add_argument("--steps", type=int, help="training steps (default 32; 16 with --fast)")
    p.add_argument("--out", default="outputs/plug_in", help="output folder")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    steps = args.steps or (16 if args.fast else 32)
    if args.fast:
        torch.set_num_threads(1)  # a tiny model gains nothing from threads; on a busy CPU they cost
    pl.seed_everything(0, verbose=False)
    model, tokenizer, train, val, probe = load(args.fast)
    module = PlainClassifier(model, lr=5e-3 if args.fast else 5e-5)
    logger = WandbLogger(
        project="pi-lightning-plug-in",
        save_dir=os.path.abspath(args.out),
        offline=os.environ.get("WANDB_MODE", "offline") != "online",
    )

    # --- pi_lightning ---
    from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ValidationSPPI

    callbacks = [AttributionMonitor(tokenizer, probe, "sp-pi"), ValidationSPPI(tokenizer), HTMLReport()]
    # --- pi_lightning ---

    trainer = pl.Trainer(
        max_steps=steps,
        val_check_interval=steps // 4,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=not args.fast,
        default_root_dir=args.out,
        log_every_n_steps=4,
    )
    trainer.fit(
        module,
        make_loader(tokenizer, *train, batch_size=16, shuffle=True),
        make_loader(tokenizer, *val, batch_size=16, shuffle=False),
    )

    sp, free, report = (
        next(c for c in trainer.callbacks if isinstance(c, t))
        for t in (AttributionMonitor, ValidationSPPI, HTMLReport)
    )
    first, last = sp.evals[0].metrics, sp.evals[-1].metrics
    print(f"plug-in recipe: {trainer.global_step} steps, {len(sp.evals)} SP-PI evaluations")
    print(f"  sp-pi AS AUC (higher better): {first['as_auc']:.3f} -> {last['as_auc']:.3f}")
    print(f"  sp-pi IAS AUC (lower better): {first['ias_auc']:.3f} -> {last['ias_auc']:.3f}")
    print("  top validation words: " + ", ".join(w["word"] for w in free.evals[-1].top_words[:8]))
    print(f"  HTML report: {report.written}")
    print(f"  W&B run files: {os.path.dirname(logger.experiment.dir)}")
    logger.experiment.finish()
    return trainer


if __name__ == "__main__":
    main()
