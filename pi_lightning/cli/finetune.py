"""``pi-lightning finetune``: fine-tune a decoder-only classifier and watch its explanations while it trains.

Defaults (``pi_lightning/cli/configs/default.yaml``, shipped with the package): SmolLM2-135M-Instruct
(embedded, no network), Rotten Tomatoes sentences, LoRA, word-level features, SP-PI on a held-out
probe set at every validation, MP-PI every second validation, free SP-PI over the validation set,
W&B offline, an HTML report, and a one-screen summary at the end. It is a LightningCLI, so every
option comes from the command line or YAML:

    pi-lightning finetune                                        # the default run
    pi-lightning finetune --fast                                 # tiny random model, seconds
    pi-lightning finetune --data.dataset imdb --data.max_length 512 --config my_callbacks.yaml
    pi-lightning finetune --model.model_name gpt2 --model.finetune full    # any hub id / folder
    pi-lightning finetune --data.dataset my.csv --data.text_column review --data.label_column stars
    pi-lightning finetune --trainer.accelerator gpu --trainer.precision bf16-mixed

The model name and the data file are checked before anything is loaded, so a typo fails in a
second with one line that says what was tried. W&B logs offline unless ``WANDB_MODE=online`` is set;
the run's config holds the whole parsed configuration (trainer, model, data).
"""

from __future__ import annotations

import os
import sys
import time
from importlib.resources import files
from pathlib import Path

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from pi_lightning.callbacks import AttributionMonitor, HTMLReport, ValidationSPPI
from pi_lightning.modules import FinetuneClassifier, ReviewDataModule

__all__ = ["FinetuneCLI", "run", "main", "config_file"]

DESCRIPTION = (
    "Fine-tune a decoder-only transformer classifier (LoRA or full) with the pi_lightning callbacks: "
    "SP-PI on a held-out probe set at every validation, MP-PI every second one, free SP-PI over the "
    "validation set, faithfulness metrics (AS/IAS AUC, log-odds, comprehensiveness, sufficiency) logged "
    "to W&B (offline unless WANDB_MODE=online), an HTML report and a one-screen summary. Defaults: "
    "SmolLM2-135M-Instruct on Rotten Tomatoes, under 10 minutes on 2 CPU cores. Every option below can "
    "be given on the command line or in a YAML file (--config); the defaults come from the package's "
    "configs/default.yaml."
)
FAST_HELP = ("run the same job end to end on a tiny random model and a few examples, in seconds "
             "(adds the package's configs/fast.yaml; writes to outputs/fast)")


def config_file(name: str) -> Path:
    """Path of a YAML config shipped with the package (``"default"`` or ``"fast"``)."""
    return Path(str(files("pi_lightning.cli") / "configs" / f"{name}.yaml"))


class _LogConfig(SaveConfigCallback):
    """Writes ``config.yaml`` next to the logs (LightningCLI's default) and puts the whole parsed
    configuration (trainer, model and data settings) into every logger's hyperparameters, so the W&B
    run's config says how the run was made."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        cfg = self.config.clone().as_dict()
        cfg.pop("config", None)
        for logger in trainer.loggers:
            logger.log_hyperparams({k: cfg[k] for k in ("seed_everything", "trainer", "model", "data") if k in cfg})


class FinetuneCLI(LightningCLI):
    """LightningCLI for :class:`FinetuneClassifier` and :class:`ReviewDataModule`, with ``--fast``,
    the model's tokenizer linked to the model, and the model name and data file checked first."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name", "data.tokenizer_name")
        parser.add_argument("--fast", action="store_true", help=FAST_HELP)

    def parse_arguments(self, parser, args) -> None:
        # args always come from main() (the console command's own argv), so LightningCLI's warning about
        # giving both args and sys.argv does not apply.
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        from pi_lightning.data import check_data_source, resolve_model_name

        resolve_model_name(self.config["model.model_name"])
        check_data_source(self.config["data.dataset"], self.config["data.text_column"],
                          self.config["data.label_column"])


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


def _args(argv: list[str]) -> list[str]:
    """The package's default config (and fast config with ``--fast``) in front of the user's arguments."""
    fast = "--fast" in argv
    configs = ["--config", str(config_file("default"))]
    if fast:
        configs += ["--config", str(config_file("fast"))]
    # W&B's background service resolves a relative save_dir against the folder its first run started
    # in: make the default absolute (a later --trainer.logger... argument still wins).
    out = "outputs/fast" if fast else "outputs/finetune"
    configs += ["--trainer.logger.init_args.save_dir", os.path.abspath(out)]
    if os.environ.get("WANDB_MODE", "offline") == "online":
        argv = argv + ["--trainer.logger.init_args.offline", "false"]
    return configs + argv


def run(argv: list[str] | None = None) -> FinetuneCLI:
    """Parse ``argv``, fit, print the summary; returns the CLI (``.trainer``, ``.model``, ``.datamodule``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    cli = FinetuneCLI(FinetuneClassifier, ReviewDataModule, run=False, args=_args(argv),
                      save_config_callback=_LogConfig, save_config_kwargs={"overwrite": True},
                      parser_kwargs={"prog": "pi-lightning finetune", "description": DESCRIPTION})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    print(summary(cli.trainer, time.perf_counter() - t0))
    return cli


def main(argv: list[str] | None = None) -> int:
    """``pi-lightning finetune``: returns 0 on success; a bad model name or data file is one line on
    stderr and exit status 2."""
    from pi_lightning.data import DataSourceError, ModelNotFoundError

    try:
        run(argv)
    except (ModelNotFoundError, DataSourceError) as e:
        print(f"pi-lightning finetune: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
