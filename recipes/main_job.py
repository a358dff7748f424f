"""The main job as a script: the same code as the ``pi-lightning finetune`` console command.

    python recipes/main_job.py            # = pi-lightning finetune
    python recipes/main_job.py --fast     # = pi-lightning finetune --fast (tiny random model, seconds)
    python recipes/main_job.py --help     # every option (LightningCLI): --model.*, --data.*, --trainer.*

The job itself lives in :mod:`pi_lightning.cli.finetune` (shipped with the package, with its default
YAML configs in ``pi_lightning/cli/configs/``); to change it, pass options or your own YAML
(``--config my.yaml``), or build on :class:`pi_lightning.cli.finetune.FinetuneCLI`:

    from pi_lightning.cli.finetune import run
    cli = run(["--fast", "--model.lr", "1e-3"])     # returns the LightningCLI after fit
    cli.trainer.callbacks, cli.model, cli.datamodule
"""

import sys

from pi_lightning.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
