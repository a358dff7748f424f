"""The main job: fine-tune a decoder-only classifier and watch its explanations while it trains.

Defaults (``cli/configs/default.yaml``, package data): SmolLM2-135M-Instruct (embedded, no network), Rotten
Tomatoes sentences, LoRA, word-level features, SP-PI and MP-PI on a held-out probe set from a step-0
baseline on (``pi-lightning finetune --help`` prints the schedule the config runs), free SP-PI over the
validation set, W&B offline, an HTML report, and a one-screen summary at the end with a verdict per
method (the paired change of the explanations' faithfulness since the baseline). It is a LightningCLI,
so every option comes from the command line or YAML (``--help``: the options a user changes, with the
values the job runs; ``--help-all``: LightningCLI's full list):

    pi-lightning finetune                                   # the default run
    pi-lightning finetune --fast                            # tiny random model, seconds
    pi-lightning finetune --data.dataset imdb --data.max_length 512 \\
        --trainer.callbacks+=... (or a YAML with granularity: sentence)
    pi-lightning finetune --model.model_name gpt2 --model.finetune full    # any hub id / folder
    pi-lightning finetune --data.dataset my.csv --data.text_column review --data.label_column stars
    pi-lightning finetune --trainer.accelerator gpu --trainer.precision bf16-mixed

The model name and the data file are checked before anything loads (one line on a typo). W&B logs
offline unless ``WANDB_MODE=online`` is set; the run's config holds the trainer, model and data settings.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from pi_lightning.callbacks import HTMLReport, StepProgressBar, probe_histories, validation_evaluations
from pi_lightning.cli._finetune_options import LogConfig, default_args
from pi_lightning.cli._job_help import DESCRIPTION, FAST_HELP, finetune_help, job_config, schedule_lines
from pi_lightning.metrics import ProbeHistory
from pi_lightning.metrics.functional.stats import wilson_interval
from pi_lightning.reporting import explained_method
from pi_lightning.reporting.change import change_since_baseline, verdict_line, words_line
from pi_lightning.reporting.shortcuts import significant_words_lines
from pi_lightning.training import FinetuneClassifier, ReviewDataModule, adapter_settings_path

__all__ = ["FinetuneCLI", "main", "run", "summary"]


class FinetuneCLI(LightningCLI):
    """LightningCLI with ``--fast``, the tokenizer linked to the model, and the model name and data
    file checked before anything is instantiated."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name", "data.tokenizer_name")
        parser.add_argument("--fast", action="store_true", help=FAST_HELP)

    def parse_arguments(self, parser, args) -> None:
        # args always come from main() (the command's own argv): LightningCLI's args-and-sys.argv warning
        # does not apply.
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        from pi_lightning.data import check_data_source, load_examples
        from pi_lightning.models import resolve_model_name

        c = self.config
        resolve_model_name(c["model.model_name"])
        for path in (c["data.dataset"], c.get("data.val_dataset"), c.get("data.test_dataset")):
            if (
                path is not None
                and check_data_source(path, c["data.text_column"], c["data.label_column"]) == "file"
            ):
                # every row's text and label, read as training will read them, before the model loads
                load_examples(
                    path,
                    text_column=c["data.text_column"],
                    label_column=c["data.label_column"],
                    label_names=c.get("data.label_names"),
                ).dataset()


def explained_examples(history: ProbeHistory, count: int = 3) -> list[str]:
    """The last evaluation's word attributions of the first ``count`` probe examples, one line each."""
    last = history.evals[-1]
    names = history.label_names or []
    lines = []
    for i in range(min(count, len(history.texts))):
        text, spans, scores = history.texts[i], history.char_spans[i], last.scores[i]
        words = " ".join(f"{text[a:b]}({s:+.2f})" for (a, b), s in zip(spans, scores, strict=False))
        label = names[history.labels[i]] if history.labels and history.labels[i] < len(names) else ""
        lines.append(f"    [{label}] {words}")
    return lines


def summary(trainer, seconds: float) -> str:
    """One screen: validation accuracy with its 95% CI, the share of the run spent evaluating, per
    method a verdict (more / less faithful or no detectable change since the baseline, from the
    paired change of the gap) and the words whose attribution rose or fell most, the headline AS - IAS
    gap with its 95% CI (and AS, IAS, probe accuracy), first vs last evaluation, and a few probe
    sentences explained by the best method that ran (MP-PI, else SP-PI)."""
    lines = [
        f"pi_lightning run finished in {seconds:.0f} s "
        f"({trainer.global_step} steps, device {trainer.strategy.root_device})"
    ]
    acc = trainer.callback_metrics.get("val/acc")
    if acc is not None:
        n = _validation_size(trainer)
        lines.append(
            f"  validation accuracy (last): {float(acc):.3f}" + (_accuracy_ci(float(acc), n) if n else "")
        )
    share = evaluation_share(trainer, seconds)
    if share is not None:
        lines.append(
            f"  evaluation (baseline, validations, probe explanations): {share[0]:.0f} s of {seconds:.0f} s "
            f"({100 * share[0] / seconds:.0f}% of the run)"
        )
    monitors = [h for h in probe_histories(trainer).values() if h.evals]
    changes = [c for c in (change_since_baseline(h) for h in monitors) if c is not None]
    if changes:
        lines.append(
            "  verdict: did the explanations become more faithful? (paired change of the per-example "
            "AS - IAS gap since the baseline, mean ± 95% CI, Wilcoxon signed-rank p; p < 0.05 counts)"
        )
        for c in changes:
            lines.append(f"    {verdict_line(c)}")
        for c in changes:
            lines.append(
                f"    {c.method} word attributions, step {c.first.step} -> {c.last.step}: {words_line(c)}"
            )
    if monitors:
        lines.append(
            "  explanation faithfulness on the probe set, first -> last evaluation "
            "(gap = AS - IAS AUC per example, mean ± 95% CI; random = 0, higher is better):"
        )
        lines.append(
            f"  {'method':<8}{'evals':>6}{'probe':>6}  {'gap ± CI':>35}  {'AS AUC':>14}  "
            f"{'IAS AUC':>14}  {'probe acc':>13}"
        )
    for h in monitors:
        f, last = h.evals[0].metrics, h.evals[-1].metrics

        def fl(k, f=f, last=last):
            return f"{f[k]:.3f} -> {last[k]:.3f}" if k in f and k in last else "-"

        def ci(m):
            return f"{m['gap']:+.3f} ± {m.get('gap_ci', float('nan')):.3f}" if "gap" in m else "-"

        lines.append(
            f"  {h.method:<8}{len(h.evals):>6}{len(h.texts):>6}  {ci(f) + ' -> ' + ci(last):>35}  "
            f"{fl('as_auc'):>14}  {fl('ias_auc'):>14}  {fl('accuracy'):>13}"
        )
    lines.extend(significant_words_lines(validation_evaluations(trainer) or [], _label_names(trainer)))
    saved = adapter_settings_path(getattr(trainer, "lightning_module", None))
    if saved is not None:
        lines.append(
            f"  fine-tuned weights: {saved.parent} (settings: {saved.name}; pass --adapter to explain)"
        )
    for cb in trainer.callbacks:
        if isinstance(cb, HTMLReport) and cb.written:
            lines.append(f"  HTML report: {cb.written}")
    shown = explained_method([m.method for m in monitors])
    ex = next((m for m in monitors if m.method == shown), None)
    if ex is not None:
        lines.append(
            f"  {ex.method} word attributions at the last evaluation (step {ex.evals[-1].step}, "
            "toward the true class):"
        )
        lines.extend(explained_examples(ex))
    for logger in trainer.loggers:
        d = getattr(getattr(logger, "experiment", None), "dir", None)
        if d:
            lines.append(f"  W&B run files: {Path(d).parent}")
    return "\n".join(lines)


def _label_names(trainer) -> list[str] | None:
    names = getattr(getattr(trainer, "datamodule", None), "label_names", None)
    return list(names) if names is not None else None


def _validation_size(trainer) -> int | None:
    """Examples in the validation set (the datamodule's ``val_set``), or None when unknown."""
    val = getattr(getattr(trainer, "datamodule", None), "val_set", None)
    try:
        return len(val) if val is not None else None
    except TypeError:
        return None


def _accuracy_ci(acc: float, n: int) -> str:
    """``" (95% CI 0.66-0.87, 64 examples)"``: the Wilson score interval of an accuracy on n examples."""
    low, high = wilson_interval(acc, n)
    return f" (95% CI {low:.2f}-{high:.2f}, {n} examples)"


def evaluation_share(trainer, seconds: float) -> tuple[float, float] | None:
    """Seconds of the run spent evaluating (validation loops, with the monitors' evaluations in them,
    and the monitors' evaluations outside validation: baseline, ``at_steps``, ``at_end``) and that
    share of ``seconds``, as timed by :class:`~pi_lightning.callbacks.StepProgressBar`; None without it."""
    bar = next((c for c in trainer.callbacks if isinstance(c, StepProgressBar)), None)
    if bar is None or seconds <= 0:
        return None
    spent = bar.evaluation_seconds(trainer)
    return spent, spent / seconds


def run(argv: list[str] | None = None) -> FinetuneCLI:
    """Parse, fit and print the summary; returns the CLI (``.trainer``, ``.model``, ``.datamodule``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    description = DESCRIPTION + " What the job runs: " + "; ".join(schedule_lines(job_config(argv))) + "."
    argv = ["--help" if a == "--help-all" else a for a in argv]
    cli = FinetuneCLI(
        FinetuneClassifier,
        ReviewDataModule,
        run=False,
        args=default_args(argv),
        save_config_callback=LogConfig,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "pi-lightning finetune", "description": description},
    )
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        print(summary(cli.trainer, time.perf_counter() - t0))
    finally:
        _finish_wandb_runs(cli.trainer)
    return cli


def _finish_wandb_runs(trainer) -> None:
    """Close the W&B runs the job's loggers opened, so its files are complete when ``run`` returns and
    a later W&B logger in the same process starts a run of its own instead of reusing this one."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.finish()
            except Exception as e:  # the job's result is already written: a closing failure only warns
                warnings.warn(f"pi-lightning finetune: closing the W&B run failed ({e!r}).", stacklevel=2)


def main(argv: list[str] | None = None) -> int:
    """``pi-lightning finetune``: 0 on success; a bad model name or data file is one line on stderr,
    status 2."""
    from pi_lightning.data import DataSourceError
    from pi_lightning.models import ModelNotFoundError

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(finetune_help(argv))
        return 0
    try:
        run(argv)
    except (ModelNotFoundError, DataSourceError) as e:
        print(f"pi-lightning finetune: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
