"""When Lightning validates, read from the Trainer's public settings (no private loop API).

The callbacks that keep a record per validation need to know, at the end of a training batch,
whether a validation follows it: a checkpoint written then is taken before that validation, which
Lightning does not run again on resume.
"""

from __future__ import annotations

__all__ = ["validation_follows"]


def validation_follows(trainer, batch_idx: int) -> bool:
    """Whether Lightning validates right after this training batch, from the Trainer's public settings
    (``check_val_every_n_epoch``, ``val_check_batch``, ``num_training_batches``, ...); False when it
    cannot be told (a time-based ``val_check_interval``)."""
    try:
        every = trainer.check_val_every_n_epoch
        if not trainer.enable_validation or (every is not None and (trainer.current_epoch + 1) % every):
            return False
        if (
            trainer.should_stop
            and trainer.global_step >= (trainer.min_steps or 0)
            and trainer.current_epoch >= (trainer.min_epochs or 0)
        ):
            return True  # stopping early (e.g. EarlyStopping): Lightning validates once more
        check = trainer.val_check_batch
        if not isinstance(trainer.val_check_interval, (int, float)) or check is None:
            return False
        if check == float("inf"):  # a dataset without a length: validation after its last batch only
            limit = trainer.limit_train_batches
            return isinstance(limit, int) and (batch_idx + 1) % limit == 0
        current = trainer.fit_loop.total_batch_idx if every is None else batch_idx
        return (current + 1) % int(check) == 0
    except Exception:
        return False
