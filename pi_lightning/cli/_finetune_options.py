"""What the ``finetune`` subcommand adds to LightningCLI: its help text, the package's default YAML
configs (package data, so a wheel works), the arguments put in front of the user's, and the W&B
config that records the whole parsed configuration."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from lightning.pytorch.cli import SaveConfigCallback

__all__ = ["DESCRIPTION", "FAST_HELP", "LogConfig", "config_file", "default_args"]

DESCRIPTION = (
    "Fine-tune a decoder-only transformer classifier (LoRA or full) with the pi_lightning callbacks: "
    "SP-PI on a held-out probe set before the first step (the baseline), at 4 more points (denser early) "
    "and MP-PI at the baseline and the end, the paired change of each example's faithfulness since the "
    "baseline with a verdict per method, free SP-PI over the validation set, faithfulness metrics (AS/IAS "
    "AUC, log-odds, comprehensiveness, sufficiency) logged to W&B (offline unless WANDB_MODE=online), an "
    "HTML report and a one-screen summary. Defaults: SmolLM2-135M-Instruct on Rotten Tomatoes, about 5 "
    "minutes on 2 idle CPU cores. Every option below can "
    "be given on the command line or in a YAML file (--config); the defaults come from the package's "
    "configs/default.yaml."
)
FAST_HELP = (
    "run the same job end to end on a tiny random model and a few examples, in seconds "
    "(adds the package's configs/fast.yaml; writes to outputs/fast)"
)


def config_file(name: str) -> Path:
    """Path of a YAML config shipped with the package (``"default"`` or ``"fast"``).

    Example:
        >>> config_file("fast").name
        'fast.yaml'
    """
    return Path(str(files("pi_lightning.cli") / "configs" / f"{name}.yaml"))


def default_args(argv: list[str]) -> list[str]:
    """The package's default config (and the fast one with ``--fast``) in front of the user's arguments."""
    fast = "--fast" in argv
    configs = ["--config", str(config_file("default"))]
    if fast:
        configs += ["--config", str(config_file("fast"))]
    # W&B's background service resolves a relative save_dir against the folder its first run started
    # in: make the default absolute (a later --trainer.logger... argument still wins).
    out = "outputs/fast" if fast else "outputs/finetune"
    configs += ["--trainer.logger.init_args.save_dir", os.path.abspath(out)]
    if os.environ.get("WANDB_MODE", "offline") == "online":
        argv = [*argv, "--trainer.logger.init_args.offline", "false"]
    return configs + argv


class LogConfig(SaveConfigCallback):
    """Writes ``config.yaml`` next to the logs (LightningCLI's default) and puts the whole parsed
    configuration (trainer, model and data settings) into every logger's hyperparameters, so the W&B
    run's config says how the run was made."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        cfg = self.config.clone().as_dict()
        for logger in trainer.loggers:
            logger.log_hyperparams(
                {k: cfg[k] for k in ("seed_everything", "trainer", "model", "data") if k in cfg}
            )
