"""StepProgressBar: Lightning's tqdm bar, counting the batches that will actually run.

With ``max_steps`` shorter than an epoch (the main job: 30 steps of a 427-batch epoch), Lightning's
bar counts to the epoch's length and its ETA is the time to finish an epoch that will never finish.
This bar's total is the number of batches this epoch will run before ``max_steps`` is reached
(``(max_steps - global_step) x accumulate_grad_batches``, capped by the epoch), so its count and ETA
are those of the run. The ETA is tqdm's average rate since the epoch started (Lightning's
``smoothing=0``), which includes the time spent in validations and callbacks so far. The
callbacks' own long work (attribution, masked passes) shows its own bar beneath it.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override

__all__ = ["StepProgressBar"]


class StepProgressBar(TQDMProgressBar):
    """A ``TQDMProgressBar`` whose training total is the number of batches that will run.

    Args: as ``lightning.pytorch.callbacks.TQDMProgressBar`` (``refresh_rate``, ``process_position``,
    ``leave``).

    Example:
        >>> bar = StepProgressBar(refresh_rate=1)
        >>> bar.refresh_rate
        1
    """

    @override
    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        bar = self.train_progress_bar
        if bar is None or trainer.max_steps is None or trainer.max_steps < 0:
            return
        left = max(trainer.max_steps - trainer.global_step, 0) * max(int(trainer.accumulate_grad_batches), 1)
        if bar.total is None or left < bar.total:
            bar.total = left
            bar.refresh()
