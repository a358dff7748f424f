"""Spurious-feature debugging: plant a shortcut in the training data and watch pi_lightning catch it.

A rare token (``zxq``) is appended to 90% of the positive TRAINING sentences (and, with the same
correlation, to the validation sentences, which the label-free detector reads). The model
fine-tunes on the poisoned data and soon predicts "positive" from the token alone. Two callbacks
watch it happen, without being told which examples were poisoned:

* the shortcut monitor: the share of the total SP-PI attribution over a held-out probe set that
  falls on the named token. In the probe set the token is appended to half of each class, so it
  carries no label information there: any attribution it gets is reliance on the shortcut. A
  warning fires once the share passes ``--threshold``.
* the label-free detector: the words with the largest mean SP-PI over the whole validation set
  (free: computed from the validation loop's own forward pass), logged as a W&B table at every
  evaluation. It is told nothing; the recipe reports when the planted token becomes word #1.

    python recipes/shortcut.py           # SmolLM2-135M-Instruct + LoRA on Rotten Tomatoes, a few CPU minutes
    python recipes/shortcut.py --fast    # a tiny random model on synthetic reviews, seconds

W&B logs offline under ``outputs/shortcut[-fast]/`` unless ``WANDB_MODE=online`` is set.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Sequence

import lightning.pytorch as pl
import torch

from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ShortcutMonitor, ValidationSPPI
from pi_lightning.data import load_movie_reviews
from pi_lightning.features import Featurizer
from pi_lightning.testing import toy_sentiment
from pi_lightning.training import FinetuneClassifier, TextDataModule

# Settings per mode: the default is sized to finish in a few minutes on a 2-core CPU.
PRESETS = {
    "default": {
        "model": "smollm2-135m-instruct",
        "finetune": "lora",
        "n_train": 640,
        "n_val": 32,
        "n_probe": 8,
        "steps": 18,
        "val_every": 6,
        "batch_size": 16,
        "lr": 2e-3,
        "max_length": 64,
        "noise": 0.0,
        "out": "outputs/shortcut",
    },
    "fast": {
        "model": "testing:gpt2",
        "finetune": "full",
        "n_train": 512,
        "n_val": 48,
        "n_probe": 8,
        "steps": 64,
        "val_every": 8,
        "batch_size": 16,
        "lr": 1e-2,
        "max_length": 32,
        "noise": 0.3,
        "out": "outputs/shortcut-fast",
    },
}


def inject(
    texts: Sequence[str], labels: Sequence[int], token: str, cls: int, rate: float, seed: int
) -> list[str]:
    """Append `` token`` to a ``rate`` fraction of the texts of class ``cls`` (chosen with ``seed``).

    Example:
        >>> inject(["good", "bad", "fine"], [1, 0, 1], "zxq", cls=1, rate=1.0, seed=0)
        ['good zxq', 'bad', 'fine zxq']
    """
    members = [i for i, y in enumerate(labels) if y == cls]
    chosen = set(random.Random(seed).sample(members, round(rate * len(members))))
    return [f"{t} {token}" if i in chosen else t for i, t in enumerate(texts)]


def uncorrelated(texts: Sequence[str], labels: Sequence[int], token: str) -> list[str]:
    """Append `` token`` to every other text of each class, so it says nothing about the label.

    Example:
        >>> uncorrelated(["a", "b", "c", "d"], [0, 0, 1, 1], "zxq")
        ['a zxq', 'b', 'c zxq', 'd']
    """
    seen: dict[int, int] = {}
    out = []
    for t, y in zip(texts, labels, strict=False):
        seen[y] = seen.get(y, 0) + 1
        out.append(f"{t} {token}" if seen[y] % 2 == 1 else t)
    return out


def flip(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Flip a ``fraction`` of binary labels (chosen with ``seed``).

    Example:
        >>> flip([0, 1, 0, 1], 0.5, seed=0)
        [0, 0, 0, 0]
    """
    chosen = set(random.Random(seed).sample(range(len(labels)), round(fraction * len(labels))))
    return [1 - y if i in chosen else y for i, y in enumerate(labels)]


def check_token(tokenizer, token: str, texts: Sequence[str]) -> None:
    """The token must be one word feature when appended, and rare in the clean data."""
    words = Featurizer(tokenizer, granularity="word")(f"a fine film. {token}").texts
    if words[-1] != token:
        raise ValueError(
            f"The shortcut token {token!r} does not form one word feature (got {words}): use a "
            "single run of letters such as 'zxq'."
        )
    present = sum(token.lower() in t.lower().split() for t in texts)
    if present:
        raise ValueError(
            f"The shortcut token {token!r} already occurs in {present} clean training texts: pick a "
            "rarer token (--token)."
        )


def load_data(args) -> tuple[tuple[list[str], list[int]], ...]:
    """(train, val, probe) as (texts, labels), clean."""
    if args.fast:
        return (
            toy_sentiment(args.n_train, seed=args.seed + 1),
            toy_sentiment(args.n_val, seed=args.seed + 2),
            toy_sentiment(args.n_probe, seed=args.seed + 3),
        )
    train = load_movie_reviews("rotten_tomatoes", "train", seed=args.seed).subset(args.n_train)
    val = load_movie_reviews("rotten_tomatoes", "val", seed=args.seed).subset(args.n_val)
    test = load_movie_reviews("rotten_tomatoes", "test", seed=args.seed)
    keep = [i for i, t in enumerate(test.texts) if len(t.split()) <= 16][: args.n_probe]  # short: cheap SP-PI
    return (
        (list(train.texts), list(train.labels)),
        (list(val.texts), list(val.labels)),
        ([test.texts[i] for i in keep], [test.labels[i] for i in keep]),
    )


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fast", action="store_true", help="tiny random model on synthetic reviews (seconds)")
    p.add_argument("--model", help="smollm2-135m-instruct, a hub id, a local folder or testing:gpt2")
    p.add_argument("--finetune", choices=["lora", "full"])
    p.add_argument("--token", default="zxq", help="the planted shortcut token")
    p.add_argument("--shortcut-class", type=int, default=1, help="the class whose texts get the token")
    p.add_argument("--rate", type=float, default=0.9, help="fraction of that class's training texts poisoned")
    p.add_argument(
        "--threshold", type=float, default=0.25, help="warn when the token's attribution share passes it"
    )
    for name in ("n_train", "n_val", "n_probe", "steps", "val_every", "batch_size", "max_length"):
        p.add_argument("--" + name.replace("_", "-"), type=int)
    p.add_argument("--lr", type=float)
    p.add_argument(
        "--noise",
        type=float,
        help="fraction of training/validation labels flipped before the token is "
        "planted (default 0; 0.3 with --fast, where the synthetic sentiment words are otherwise a perfect "
        "signal and the 90%% shortcut would be the weaker one)",
    )
    p.add_argument("--out", help="output folder (W&B files, HTML report)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for k, v in PRESETS["fast" if args.fast else "default"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not 0 <= args.noise < 0.5:
        p.error(f"--noise is a fraction of flipped labels in [0, 0.5), got {args.noise}.")
    if not 0 < args.rate <= 1:
        p.error(f"--rate is a fraction in (0, 1], got {args.rate}.")
    if args.n_probe < 2:
        p.error("--n-probe needs at least 2 examples (the token goes on half of them).")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the recipe; returns when the shortcut was detected, with the callbacks (for tests)."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.fast:
        torch.set_num_threads(1)  # a tiny model gains nothing from threads; on a busy CPU they cost
    t0 = time.perf_counter()
    pl.seed_everything(args.seed, verbose=False)
    module = FinetuneClassifier(args.model, finetune=args.finetune, lr=args.lr, seed=args.seed)
    tok = module.tokenizer
    (train_x, train_y), (val_x, val_y), (probe_x, probe_y) = load_data(args)
    check_token(tok, args.token, train_x)
    train_y, val_y = flip(train_y, args.noise, args.seed), flip(val_y, args.noise, args.seed + 1)
    train_x = inject(train_x, train_y, args.token, args.shortcut_class, args.rate, args.seed)
    val_x = inject(val_x, val_y, args.token, args.shortcut_class, args.rate, args.seed + 1)
    probe_x = uncorrelated(probe_x, probe_y, args.token)
    data = TextDataModule(
        tok,
        (train_x, train_y),
        (val_x, val_y),
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
    )

    sp = AttributionMonitor(
        probe=(probe_x, probe_y),
        method="sp-pi",
        method_kwargs={"granularity": "word"},
        metrics=["as_auc", "ias_auc"],
        label_names=["negative", "positive"],
    )
    free = ValidationSPPI(min_count=3)
    shortcut = ShortcutMonitor([args.token], threshold=args.threshold, method="sp-pi", detector="validation")
    report = HTMLReport(title=f"pi_lightning: catching the planted shortcut {args.token!r}")
    logger = _logger(args.out)
    trainer = pl.Trainer(
        max_steps=args.steps,
        max_epochs=-1,
        val_check_interval=args.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accelerator="auto",
        devices=1,
        logger=logger,
        callbacks=[sp, free, shortcut, report],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not args.fast,
        log_every_n_steps=4,
        default_root_dir=args.out,
    )
    trainer.validate(module, datamodule=data, verbose=False)  # a baseline row at step 0, before any training
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - t0
    print(summary(args, trainer, sp, free, shortcut, report, probe_x, probe_y, seconds))
    if logger:
        logger.experiment.finish()
    return {
        "share_step": shortcut.first_over.get(args.token, {}).get("step"),
        "share_epoch": shortcut.first_over.get(args.token, {}).get("epoch"),
        "detected_step": shortcut.detected_step,
        "detected_epoch": shortcut.detected_epoch,
        "seconds": seconds,
        "shortcut": shortcut,
        "monitor": sp,
        "validation": free,
        "report": report.written,
    }


def _logger(out: str):
    from lightning.pytorch.loggers import WandbLogger

    online = os.environ.get("WANDB_MODE", "offline") == "online"
    # an absolute folder: W&B's service process may not share this process's working directory
    return WandbLogger(project="pi-lightning-shortcut", save_dir=os.path.abspath(out), offline=not online)


def summary(args, trainer, sp, free, shortcut, report, probe_x, probe_y, seconds: float) -> str:
    """One screen: the token's share and ranks per evaluation, and when each signal caught it."""
    tok = args.token
    lines = [
        (
            f"shortcut recipe finished in {seconds:.0f} s ({trainer.global_step} steps, model {args.model}, "
            f"{args.finetune}); {tok!r} appended to {args.rate:.0%} of class {args.shortcut_class}'s "
            "training texts"
        ),
        (
            f"  share: {tok!r}'s share of |SP-PI| in the probe texts holding it; ranks: by mean |SP-PI| on "
            "the probe set and by mean SP-PI over the validation set (label-free); accuracy on the probe "
            "texts"
        ),
        (
            f"  {'step':>5} {'epoch':>5}  {'share':>9}  {'probe rank':>10}  {'val rank':>8}  "
            f"{'top val word':<12}  {'acc w/ tok':>10}  {'acc w/o tok':>10}"
        ),
    ]
    with_tok = [t.endswith(" " + tok) for t in probe_x]

    def acc(preds, flag):
        idx = [i for i, w in enumerate(with_tok) if w == flag]
        return sum(preds[i] == probe_y[i] for i in idx) / max(len(idx), 1)

    probe_rows = [h for h in shortcut.history if h["source"] == "probe"]
    val_rows = {h["step"]: h for h in shortcut.history if h["source"] == "validation"}
    for h, e in zip(probe_rows, sp.evals, strict=False):
        v = val_rows.get(h["step"])
        vr = v["ranks"][tok] if v else None
        top = v["top_words"][0]["word"] if v and v["top_words"] else "-"
        share = "-" if h["shares"][tok] is None else f"{h['shares'][tok]:.3f}"
        lines.append(
            f"  {h['step']:>5} {h['epoch']:>5}  {share:>9}  {h['ranks'][tok] or '-':>10}  {vr or '-':>8}  "
            f"{top:<12}  {acc(e.predictions, True):>10.2f}  {acc(e.predictions, False):>10.2f}"
        )
    if sp.evals:
        f, last = sp.evals[0].metrics, sp.evals[-1].metrics
        for k, name in (("as_auc", "AS AUC (higher better)"), ("ias_auc", "IAS AUC (lower better)")):
            if k in f and k in last:
                lines.append(
                    f"  sp-pi {name} on the probe set: {f[k]:.3f} -> {last[k]:.3f} (first -> last evaluation)"
                )
    over = shortcut.first_over.get(tok)
    if probe_rows and probe_rows[0]["step"] == 0 and probe_rows[0]["shares"][tok] is not None:
        lines.append(
            f"  share before any training (step 0): {probe_rows[0]['shares'][tok]:.2f}, the weight of the "
            "token's position alone; compare the later rows with it"
        )
    lines.append(
        f"  share monitor: {tok!r} passed {args.threshold:.0%} of the attribution at step {over['step']} "
        f"(epoch {over['epoch']}, share {over['share']:.2f})"
        if over
        else f"  share monitor: {tok!r} never passed {args.threshold:.0%} of the attribution"
    )
    lines.append(
        f"  label-free detector: {tok!r} ranked first over the validation set at step "
        f"{shortcut.detected_step} (epoch {shortcut.detected_epoch})"
        if shortcut.detected_step is not None
        else f"  label-free detector: {tok!r} never ranked first over the validation set"
    )
    if report.written:
        lines.append(f"  HTML report: {report.written}")
    d = getattr(getattr(trainer.logger, "experiment", None), "dir", None)
    if d:
        lines.append(f"  W&B run files: {os.path.dirname(d)}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
