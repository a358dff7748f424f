"""What the ``finetune`` subcommand adds to LightningCLI: the arguments put in front of the user's (the
package's default YAML configs, see :mod:`pi_lightning.cli._job_help`) and the W&B config that records
the whole parsed configuration."""

from __future__ import annotations

import os

from lightning.pytorch.cli import SaveConfigCallback

from pi_lightning.cli._job_help import config_file

__all__ = ["LogConfig", "default_args"]


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
