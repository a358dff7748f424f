"""The main job: fine-tune a decoder-only classifier and watch its explanations while it trains.

Defaults (``recipes/configs/default.yaml``): SmolLM2-135M-Instruct (embedded, no network), Rotten
Tomatoes sentences, LoRA, word-level features, SP-PI on a held-out probe set at every validation,
MP-PI every second validation, free SP-PI over the validation set, W&B offline, an HTML report, and
a one-screen summary at the end. It is a LightningCLI, so every option comes from the command line or
YAML:

    python recipes/finetune.py                                   # the default run
    python recipes/finetune.py --fast                            # tiny random model, seconds
    python recipes/finetune.py --data.dataset imdb --data.max_length 512 \\
        --trainer.callbacks+=... (or a YAML with granularity: sentence)
    python recipes/finetune.py --model.model_name gpt2 --model.finetune full    # any hub id / folder
    python recipes/finetune.py --data.dataset my.csv --data.text_column review --data.label_column stars
    python recipes/finetune.py --trainer.accelerator gpu --trainer.precision bf16-mixed

W&B logs offline unless ``WANDB_MODE=online`` is set (or you are logged in and set it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ValidationSPPI
from pi_lightning.modules import FinetuneClassifier, ReviewDataModule

HERE = Path(__file__).resolve().parent


class FinetuneCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name", "data.tokenizer_name")


def explained_examples(monitor: AttributionMonitor, count: int = 3) -> list[str]:
    """The last evaluation's word attributions of the first ``count`` probe examples, one line each."""
    last = monitor.evals[-1]
    names = monitor.label_names or []
    lines = []
    for i in range(min(count, len(monitor.texts))):
        text, spans, scores = monitor.texts[i], monitor.char_spans[i], last["scores"][i]
        words = " ".join(f"{text[a:b]}({s:+.2f})" for (a, b), s in zip(spans, scores))
        label = names[monitor.labels[i]] if monitor.labels and monitor.labels[i] < len(names) else ""
        lines.append(f"    [{label}] {words}")
    return lines


def summary(trainer, seconds: float) -> str:
    """One screen: accuracy and AS/IAS AUC per method, first vs last evaluation, and a few explained
    probe sentences."""
    lines = [f"pi_lightning run finished in {seconds:.0f} s "
             f"({trainer.global_step} steps, device {trainer.strategy.root_device})"]
    acc = trainer.callback_metrics.get("val/acc")
    if acc is not None:
        lines.append(f"  validation accuracy (last): {float(acc):.3f}")
    lines.append(f"  {'method':<10}{'evals':>6}  {'probe acc':>15}  {'AS AUC (higher better)':>24}  "
                 f"{'IAS AUC (lower better)':>24}")
    for cb in trainer.callbacks:
        if isinstance(cb, AttributionMonitor) and cb.evals:
            f, last = cb.evals[0]["metrics"], cb.evals[-1]["metrics"]

            def fl(k, f=f, last=last):
                return f"{f[k]:.3f} -> {last[k]:.3f}" if k in f and k in last else "-"

            lines.append(f"  {cb.method:<10}{len(cb.evals):>6}  {fl('accuracy'):>15}  {fl('as_auc'):>24}  "
                         f"{fl('ias_auc'):>24}")
        if isinstance(cb, ValidationSPPI) and cb.evals:
            words = ", ".join(f"{w['word']} ({w['mean_phi']:+.3f})" for w in cb.evals[-1]["top_words"][:6])
            lines.append(f"  top words by mean SP-PI over the validation set: {words}")
        if isinstance(cb, HTMLReport) and cb.written:
            lines.append(f"  HTML report: {cb.written}")
    sp = next((c for c in trainer.callbacks if isinstance(c, AttributionMonitor) and c.evals), None)
    if sp is not None:
        lines.append(f"  {sp.method} word attributions at the last evaluation (toward the true class):")
        lines.extend(explained_examples(sp))
    for logger in trainer.loggers:
        d = getattr(getattr(logger, "experiment", None), "dir", None)
        if d:
            lines.append(f"  W&B run files: {Path(d).parent}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> FinetuneCLI:
    argv = list(sys.argv[1:] if argv is None else argv)
    configs = ["--config", str(HERE / "configs" / "default.yaml")]
    out = "outputs/finetune"
    if "--fast" in argv:
        argv.remove("--fast")
        configs += ["--config", str(HERE / "configs" / "fast.yaml")]
        out = "outputs/fast"
    # W&B's background service resolves a relative save_dir against the folder its first run started
    # in: make the default absolute (a later --trainer.logger... argument still wins).
    configs += ["--trainer.logger.init_args.save_dir", os.path.abspath(out)]
    if os.environ.get("WANDB_MODE", "offline") == "online":
        argv += ["--trainer.logger.init_args.offline", "false"]
    t0 = time.perf_counter()
    cli = FinetuneCLI(FinetuneClassifier, ReviewDataModule, run=False, args=configs + argv,
                      save_config_kwargs={"overwrite": True})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    print(summary(cli.trainer, time.perf_counter() - t0))
    return cli


if __name__ == "__main__":
    main()
