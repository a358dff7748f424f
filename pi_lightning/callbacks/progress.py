"""StepProgressBar: Lightning's tqdm bar, counting the batches that will actually run, with an ETA that
includes the evaluations still to come.

With ``max_steps`` shorter than an epoch (the main job), Lightning's bar counts to the epoch's
length and its ETA is the time to finish an epoch that will never finish. This bar's total is the
number of batches this epoch will run before ``max_steps`` is reached (``(max_steps - global_step)
x accumulate_grad_batches``, capped by the epoch).

Its time left (``left`` in the postfix; tqdm's own ``remaining``, which knows only batches, is not
shown) is the training batches still to run at the measured time per batch, plus the validations
still to come at the measured time of a validation loop, plus each
:class:`~pi_lightning.callbacks.AttributionMonitor`'s evaluations still to come
(:meth:`~pi_lightning.callbacks.AttributionMonitor.evaluation_steps_left`) at that monitor's measured
time per evaluation (its baseline gives the first measure before step 1). A 30-step run whose
validations take minutes says so at step 1, not at step 15. The callbacks' own long work
(attribution, masked passes) shows its own bar beneath it.

The bar also times what the job spends evaluating (:meth:`evaluation_seconds`: the validation loops,
with the monitors' evaluations in them, and the monitors' evaluations outside validation), which the
``pi-lightning finetune`` summary reports as a share of the run.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override

__all__ = ["StepProgressBar"]


def _clock(seconds: float) -> str:
    """``"1:05"`` / ``"1:02:05"``."""
    s = round(max(seconds, 0.0))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class StepProgressBar(TQDMProgressBar):
    """A ``TQDMProgressBar`` whose training total is the number of batches that will run and whose
    time left includes the evaluations to come.

    Args: as ``lightning.pytorch.callbacks.TQDMProgressBar`` (``refresh_rate``, ``process_position``,
    ``leave``).

    Example:
        >>> bar = StepProgressBar(refresh_rate=1)
        >>> bar.refresh_rate
        1
    """

    #: Lightning's format without tqdm's ``remaining`` (the postfix's ``left`` replaces it).
    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_noinv_fmt}{postfix}]"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fit_start: float | None = None
        self._val_start: float | None = None
        self._val_monitor_mark = 0.0
        self.validation_seconds: list[float] = []  # whole validation loops (monitors' evaluations included)
        self._validation_plain: list[float] = []  # the same without the monitors' evaluations

    @staticmethod
    def _monitors(trainer) -> list:
        from pi_lightning.callbacks.attribution_monitor import AttributionMonitor

        return [c for c in trainer.callbacks if isinstance(c, AttributionMonitor)]

    def _monitor_seconds(self, trainer, in_validation: bool) -> float:
        return sum(s for m in self._monitors(trainer) for s, v in m.wall_seconds if v == in_validation)

    def evaluation_seconds(self, trainer) -> float:
        """Seconds this process spent evaluating during fit: validation loops (the monitors' evaluations in
        them included) and the monitors' evaluations outside validation (baseline, ``at_steps``,
        ``at_end``)."""
        return sum(self.validation_seconds) + self._monitor_seconds(trainer, False)

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self._fit_start is None:
            self._fit_start = time.perf_counter()

    @override
    def on_validation_start(self, trainer, pl_module) -> None:
        super().on_validation_start(trainer, pl_module)
        if not trainer.sanity_checking:
            self._val_start = time.perf_counter()
            self._val_monitor_mark = self._monitor_seconds(trainer, True)

    @override
    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._val_start is not None and not trainer.sanity_checking:
            total = time.perf_counter() - self._val_start
            self.validation_seconds.append(total)
            self._validation_plain.append(
                max(total - (self._monitor_seconds(trainer, True) - self._val_monitor_mark), 0.0)
            )
            self._val_start = None

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

    def future_validation_steps(self, trainer) -> list[int]:
        """Optimizer steps after which Lightning will still validate in this fit (``val_check_interval``
        in batches, ``check_val_every_n_epoch``, ``max_steps``); empty when that cannot be told."""
        try:
            vcb = trainer.val_check_batch
            nb = int(trainer.num_training_batches)
            accum = max(int(trainer.accumulate_grad_batches), 1)
            last = int(trainer.max_steps)
            if not trainer.enable_validation or vcb is None or vcb == float("inf") or nb <= 0 or last < 0:
                return []
            vcb, per_epoch = int(vcb), nb // accum
            every = int(trainer.check_val_every_n_epoch or 1)
            max_epochs = (
                trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else 10**6
            )
            steps, epoch = [], int(trainer.current_epoch)
            while epoch < max_epochs and epoch * per_epoch < last:
                if (epoch + 1) % every == 0:
                    for b in range(vcb, nb + 1, vcb):
                        s = epoch * per_epoch + b // accum
                        if trainer.global_step < s <= last:
                            steps.append(s)
                epoch += 1
            return steps
        except Exception:
            return []

    def time_left(self, trainer) -> tuple[float, int] | None:
        """Estimated seconds left in this fit and the number of steps with an evaluation still to come (a
        validation or a monitor's evaluation); None before any batch was timed."""
        if self._fit_start is None or trainer.max_steps is None or trainer.max_steps < 0:
            return None
        accum = max(int(trainer.accumulate_grad_batches), 1)
        done = self.train_progress_bar.n if self.train_progress_bar is not None else 0
        if done <= 0:
            return None
        elapsed = time.perf_counter() - self._fit_start
        per_batch = max(elapsed - self.evaluation_seconds(trainer), 0.0) / done
        batches_left = max(trainer.max_steps - trainer.global_step, 0) * accum
        vals = self.future_validation_steps(trainer)
        # Until a validation was timed, one costs at most its batches at the training batch time.
        per_val = (
            sum(self._validation_plain) / len(self._validation_plain)
            if self._validation_plain
            else per_batch * _val_batches(trainer)
        )
        left, steps = batches_left * per_batch + len(vals) * per_val, set(vals)
        for m in self._monitors(trainer):
            mine = m.evaluation_steps_left(trainer, vals)
            if mine and m.wall_seconds:
                left += len(mine) * sum(s for s, _ in m.wall_seconds) / len(m.wall_seconds)
            steps.update(mine)
        return left, len(steps)

    @override
    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        est = self.time_left(trainer)
        if est is not None:
            items = {"left": f"{_clock(est[0])} incl. {est[1]} evals", **items}
        return items


def _val_batches(trainer) -> int:
    """Validation batches per validation loop (0 when unknown)."""
    try:
        n = trainer.num_val_batches
        return int(sum(n)) if isinstance(n, list) else int(n)
    except Exception:
        return 0
