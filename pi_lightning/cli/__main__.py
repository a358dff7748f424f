"""``python -m pi_lightning.cli``: the same as the ``pi-lightning`` console command."""

import sys

from pi_lightning.cli import main

sys.exit(main())
