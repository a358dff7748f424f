"""AttributionMonitor: explain a held-out probe set with any method, on a schedule, and track how
faithful the explanations are while the model trains.

Add one per method to the Trainer: SP-PI at every validation (it costs one forward pass per probe
example), MP-PI every few epochs or every N steps with its budget, or any baseline by name. Each
evaluation runs the one Trainer-free evaluation, :class:`~pi_lightning.metrics.ProbeEvaluator`
(attribute the probe set, run the activation and inverse-activation studies and UDIG's removal
metrics, aggregate) on each rank's shard of the probe set, merges the shards, and logs
``pi/<method>/<metric>`` scalars, a table of highlighted examples and the mean AS/IAS curves. Every
figure, and the probe attributions themselves, is kept in the callback state, saved in checkpoints
and restored on resume.

The headline figure is ``pi/<method>/gap`` with ``pi/<method>/gap_ci``: the mean over probe examples
of the paired AS - IAS gap and its 95% half-width (:class:`~pi_lightning.metrics.ActivationGap`; 0
for random attributions). ``points=11`` evaluates the curves at 11 fixed fractions of the
features instead of every step, so a larger probe set fits in the same time.

**Baseline and paired change.** Each monitor evaluates once before the first optimizer step (step
0, ``baseline=True``; a resumed run does not repeat it), so every later figure has a reference.
The probe examples are the same at every evaluation, so each example's change of gap, AS and IAS
AUC between two evaluations is paired: ``pi/<method>/gap_change`` (since the baseline) and
``gap_change_prev`` (since the previous evaluation), each with ``_ci`` (95% half-width) and ``_p``
(Wilcoxon signed-rank), from :class:`~pi_lightning.metrics.PairedChange` on the merged shards. The verdict
line (more / less faithful or no detectable change since the baseline) and the words whose
attribution moved most go to the W&B run summary.

**What stays here.** The schedule (validations, steps, fractions of ``max_steps``, baseline, end;
read from the Trainer's public settings), the distribution (sharding, agreeing on a failure, merging
the shards) and the logging; everything an evaluation computes is the evaluator's.

**Steps.** Figures are logged at the logger step Lightning gives the validation they follow
(``trainer.global_step - 1`` during fit: Lightning logs the metrics of the batch that triggered a
validation, and the validation's own ``val/*``, before it counts that batch), so ``pi/*`` and
``val/*`` of one validation share a step; the record's ``step`` stays the number of optimizer steps
done (the report's x axis), logged with every figure as ``pi/step``, which W&B charts of ``pi/*``
use as their x axis, so W&B and the report show the same step numbers.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from pi_lightning._renamed import renamed
from pi_lightning.attributors.base import available_methods, check_method_kwargs, get_attributor
from pi_lightning.callbacks._distributed import equal_forward_passes, gather_objects
from pi_lightning.callbacks._model import resolve_model
from pi_lightning.callbacks._schedule import validation_follows
from pi_lightning.data import normalize_probe
from pi_lightning.inference import model_mode
from pi_lightning.metrics import ProbeEvaluation, ProbeEvaluator, ProbeHistory
from pi_lightning.reporting.change import change_since_baseline, verdict_line, words_line
from pi_lightning.reporting.html import HtmlCell, highlight_panel, table_page, word_rows
from pi_lightning.reporting.logging import define_step_metric, log_rich, log_scalars, log_summary, logger_step
from pi_lightning.reporting.page import label_name

__all__ = ["AttributionMonitor", "probe_histories"]


class AttributionMonitor(Callback):
    """Attribute a probe set with one method on a schedule and track faithfulness.

    Args:
        tokenizer: the model's fast tokenizer; ``None`` takes ``pl_module.tokenizer``.
        probe: held-out examples: texts (labels via ``labels``), ``(text, label)`` pairs,
            ``{"text", "label"}`` rows, or an object with ``.texts`` and ``.labels``
            (e.g. :func:`pi_lightning.data.load_movie_reviews`); ``None`` takes
            ``trainer.datamodule.probe`` (and the datamodule's ``template`` and ``label_names``
            unless given), which lets a YAML config describe the whole run.
        method: a registered attribution method (``"sp-pi"``, ``"mp-pi"``, ``"ig"``, ...).
        labels: labels for a list of texts.
        probe_size: explain only the first ``probe_size`` examples of the probe set (``None``: all),
            e.g. a costly method on part of the probe that a free one explains whole.
        model: where the Hugging Face model lives in the LightningModule: an attribute path
            (default ``"model"``) or a getter ``lambda module: module.net``.
        every_n_val: evaluate after every n-th validation loop (``None``: never at validation).
        every_n_steps: evaluate every N optimizer steps instead/as well (``None``: never).
        baseline: evaluate once before the first optimizer step (at ``on_train_start``, step 0), the
            reference of every paired change (``gap_change``); a run resumed from a checkpoint never
            repeats it. ``False`` turns it off (the first evaluation is then the reference).
        at_steps: evaluate after these optimizer steps as well (e.g. ``[5, 10, 20, 40]``: denser
            where the model changes most).
        at_fractions: evaluate after these fractions of ``trainer.max_steps`` as well (e.g.
            ``[0.1, 0.25, 0.5]``; step ``max(1, floor(f * max_steps + 0.5))``), so the schedule follows
            ``--trainer.max_steps``; ignored without ``max_steps``.
        at_end: evaluate when training ends (``on_train_end``), unless the last evaluation already
            ran at the last step.
        target: ``"label"`` (default: the true class; needs labels) or ``"predicted"``. The default
            differs from the attributors' and the explain job's ``"predicted"`` on purpose: the
            monitor compares each example across checkpoints (drift, the paired change since the
            baseline), which needs the same explained class at every evaluation, and the predicted
            class changes as the model trains.
        method_kwargs: settings for the method (``granularity``, ``template``, ``mask``, ``budget``...).
        metrics: which of ``as_auc``, ``ias_auc``, ``log_odds``, ``comprehensiveness``, ``sufficiency``
            (default: all); an empty list logs the attributions only (no masked passes).
        top_k: percentage of features for UDIG's metrics.
        label_names: class names for tables and the report.
        log_examples: how many probe examples go into the logged table (``None``: all).
        curve_points: grid size of the mean AS/IAS curves.
        points: ``None`` to evaluate the AS/IAS curves at every step (``n + 1`` masked passes per
            study), or the number of points (fixed fractions of the features) to evaluate them at (``11``:
            ``x = 0, 0.1, ..., 1``; see :func:`~pi_lightning.metrics.functional.activation_steps`).
        progress_chunk: examples per progress-bar update (attribution of costly methods, and metrics).
        refit_from: for methods that learn from ablations (AT2): the method of another monitor on the
            same Trainer (e.g. ``"mp-pi"``) whose masked passes to train from at each of its
            evaluations ("training data for free"). Without it (or before that monitor has run), the
            method refits from its own random ablations at every evaluation, so its weights follow the
            model as it trains. Put the source monitor before this one in the callback list.

    Attributes:
        evals: one :class:`~pi_lightning.metrics.ProbeEvaluation` per evaluation, oldest first (saved
            in checkpoints under :attr:`state_key`; :meth:`history` adds the probe set, and
            :func:`probe_histories` reads every monitor of a Trainer).

    Example:
        >>> monitor = AttributionMonitor(probe=["a fine film"], method="sp-pi", target="predicted")
        >>> monitor.state_key
        "AttributionMonitor{'method': 'sp-pi'}"
    """

    @renamed(fractions="points")
    def __init__(
        self,
        tokenizer=None,
        probe=None,
        method: str = "sp-pi",
        *,
        labels: Sequence[int] | None = None,
        probe_size: int | None = None,
        model: str | Callable | None = "model",
        every_n_val: int | None = 1,
        every_n_steps: int | None = None,
        baseline: bool = True,
        at_steps: Sequence[int] | None = None,
        at_fractions: Sequence[float] | None = None,
        at_end: bool = False,
        target: str = "label",
        method_kwargs: Mapping[str, Any] | None = None,
        metrics: Sequence[str] | None = None,
        top_k: float = 20.0,
        label_names: Sequence[str] | None = None,
        log_examples: int | None = None,
        curve_points: int = 21,
        points: int | None = None,
        progress_chunk: int = 8,
        refit_from: str | None = None,
    ) -> None:
        super().__init__()
        methods = available_methods()
        if method not in methods:
            raise ValueError(f"Unknown attribution method {method!r}: expected one of {', '.join(methods)}.")
        for name, v in (("every_n_val", every_n_val), ("every_n_steps", every_n_steps)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None or a positive int, got {v!r}.")
        for name, v in (("baseline", baseline), ("at_end", at_end)):
            if not isinstance(v, bool):
                raise ValueError(f"{name} must be True or False, got {v!r}.")
        if at_steps is not None and (
            isinstance(at_steps, (str, bytes))
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in at_steps)
        ):
            raise ValueError(
                f"at_steps must be a list of optimizer steps (ints >= 1), e.g. [5, 10, 20], got {at_steps!r}."
            )
        if at_fractions is not None and (
            isinstance(at_fractions, (str, bytes))
            or not all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in at_fractions
            )
        ):
            raise ValueError(
                f"at_fractions must be a list of fractions of max_steps in (0, 1], e.g. [0.1, 0.25, 0.5], "
                f"got {at_fractions!r}."
            )
        if (
            every_n_val is None
            and every_n_steps is None
            and not at_steps
            and not at_fractions
            and not at_end
            and not baseline
        ):
            raise ValueError(
                "Give every_n_val, every_n_steps, at_steps, at_end or baseline: "
                "otherwise the monitor never runs."
            )
        check_method_kwargs(method, method_kwargs or {})  # a misspelled setting fails here, not at setup
        if target not in ("label", "predicted"):
            raise ValueError(f"target must be 'label' or 'predicted', got {target!r}.")
        if probe_size is not None and (
            isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 1
        ):
            raise ValueError(
                f"probe_size must be None or a positive int (examples to explain), got {probe_size!r}."
            )
        self.probe_size = probe_size
        self.texts, self.labels = normalize_probe(probe, labels) if probe is not None else (None, None)
        if probe is not None:
            self._check_labels(target)
            self._limit_probe()
        for name, v in (
            ("log_examples", 0 if log_examples is None else log_examples),
            ("progress_chunk", progress_chunk),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}.")
        # the evaluator's settings, checked now (the evaluator itself is built at setup, with the model)
        self._evaluator_settings = ProbeEvaluator.check_settings(
            target=target,
            metrics=metrics,
            top_k=top_k,
            curve_points=curve_points,
            points=points,
            chunk=max(progress_chunk, 1),
        )
        self.points = self._evaluator_settings["points"]
        self.tokenizer = tokenizer
        self.method = method
        self.model_ref = model
        self.every_n_val = every_n_val
        self.every_n_steps = every_n_steps
        self.baseline = baseline
        self.at_steps = sorted(set(at_steps or ()))
        self.at_fractions = [float(f) for f in at_fractions or ()]
        self.at_end = at_end
        self.target = target
        self.method_kwargs = dict(method_kwargs or {})
        self.metrics = self._evaluator_settings["metrics"]
        self.top_k = float(top_k)
        self.label_names = list(label_names) if label_names is not None else None
        self.log_examples = log_examples
        self.curve_points = curve_points
        self.progress_chunk = max(progress_chunk, 1)
        self.refit_from = refit_from
        self.last_attributions: list | None = None  # this rank's latest results (for refit_from users)
        self.attributor = None
        self.evaluator: ProbeEvaluator | None = None
        self._model = None
        # --- state (saved in checkpoints) ---
        self.evals: list[ProbeEvaluation] = []
        self.val_count = 0
        self.char_spans: list[list[list[int]]] | None = None
        self._validation_due: int | None = None  # step whose validation has not run yet (set at batch end)
        self._pending_validation: int | None = None  # restored: a validation the checkpoint was taken before
        self._pair_start = 0  # evals before this index were made on another probe set (not paired with)
        # Wall time of this process's evaluations, (seconds, during a validation loop): for the progress
        # bar's ETA and the job's evaluation share (not saved: a resumed process times its own).
        self.wall_seconds: list[tuple[float, bool]] = []
        self._trainer = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(method=self.method)

    def _check_labels(self, target: str) -> None:
        if target == "label" and self.labels is None:
            raise ValueError(
                "target='label' needs labels: pass labels=[...] or a labelled probe set, "
                "or use target='predicted'."
            )

    def _limit_probe(self) -> None:
        """Keep the first ``probe_size`` probe examples."""
        if self.probe_size is not None and self.texts is not None:
            self.texts = self.texts[: self.probe_size]
            self.labels = None if self.labels is None else self.labels[: self.probe_size]

    def _drop_out_of_range_labels(self) -> None:
        """Probe labels must be class indices of the model (checked at setup, before any training step).
        Examples with another label are dropped from the probe set with a warning (a probe problem never
        stops training); with none left, the monitor evaluates nothing."""
        bad = self.evaluator.out_of_range(self.labels)
        if not bad:
            return
        i, y = bad[0]
        num_labels = self.attributor.adapter.num_labels
        keep = [j for j, y_ in enumerate(self.labels) if 0 <= y_ < num_labels]
        rank_zero_warn(
            f"AttributionMonitor({self.method!r}): probe label {y} of example {i} ({self.texts[i][:40]!r}) "
            f"is not a class of the model, which has num_labels={num_labels} (classes 0..{num_labels - 1}); "
            f"{len(bad)} of {len(self.labels)} probe labels are out of range, and those examples are skipped "
            f"({len(keep)} left{'' if keep else ': this monitor evaluates nothing'}). Fix the probe labels, "
            "or load the model with num_labels matching the data."
        )
        self.texts = [self.texts[j] for j in keep]
        self.labels = [self.labels[j] for j in keep]
        self.char_spans = None

    # ------------------------------------------------------------------ lifecycle
    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer
        self._model = resolve_model(pl_module, self.model_ref)
        if self.tokenizer is None:
            self.tokenizer = getattr(pl_module, "tokenizer", None)
            if self.tokenizer is None:
                raise ValueError(
                    "AttributionMonitor needs the model's tokenizer: pass tokenizer=... or give the "
                    "LightningModule a `tokenizer` attribute."
                )
        if self.texts is None:
            dm = getattr(trainer, "datamodule", None)
            if dm is None or getattr(dm, "probe", None) is None:
                raise ValueError(
                    "AttributionMonitor got no probe set: pass probe=... or use a datamodule with a "
                    "`probe` attribute (texts with labels)."
                )
            self.texts, self.labels = normalize_probe(dm.probe)
            self._check_labels(self.target)
            self._limit_probe()
            if "template" not in self.method_kwargs and getattr(dm, "template", None):
                self.method_kwargs["template"] = dm.template
            if self.label_names is None and getattr(dm, "label_names", None):
                self.label_names = list(dm.label_names)
        self.attributor = get_attributor(self.method, self._model, self.tokenizer, **self.method_kwargs)
        self.evaluator = ProbeEvaluator(
            self.attributor,
            progress=lambda desc, total: self._bar(trainer, total, desc),
            **self._evaluator_settings,
        )
        self._drop_out_of_range_labels()
        if self.char_spans is None:
            feats = self.attributor.featurize(self.texts)
            self.char_spans = [[list(s) for s in f.char_spans] for f in feats]

    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.every_n_val is None:
            return
        self.val_count += 1
        if self.val_count % self.every_n_val == 0 and not self._evaluated_at(trainer.global_step):
            self.evaluate(trainer, pl_module)

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        # A checkpoint written in on_train_batch_end right before a validation: Lightning does not run that
        # validation again on resume, so run its evaluation now (the weights are the ones it would have seen).
        pending, self._pending_validation = self._pending_validation, None
        if pending is not None and pending == trainer.global_step and self.every_n_val is not None:
            self.val_count += 1
            if self.val_count % self.every_n_val == 0 and not self._evaluated_at(pending):
                self.evaluate(trainer, pl_module)
        # The baseline: before the first optimizer step of a fresh run only (a resumed run has steps done,
        # or, resumed from a step-0 checkpoint, the baseline in its history).
        if self.baseline and trainer.global_step == 0 and not self._evaluated_at(0):
            self.evaluate(trainer, pl_module)

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end and not self._evaluated_at(trainer.global_step):
            self.evaluate(trainer, pl_module)

    @override
    def on_validation_start(self, trainer, pl_module) -> None:
        self._validation_due = None

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_val is not None and not trainer.sanity_checking:
            self._validation_due = step if validation_follows(trainer, batch_idx) else None
        due = step in self._scheduled_steps(trainer) or (
            self.every_n_steps is not None and step > 0 and step % self.every_n_steps == 0
        )
        if not due or self._evaluated_at(step):
            return  # already evaluated at this step (e.g. gradient accumulation)
        self.evaluate(trainer, pl_module)

    def _scheduled_steps(self, trainer) -> set[int]:
        """``at_steps`` and the steps of ``at_fractions`` (of ``trainer.max_steps``)."""
        steps = set(self.at_steps)
        last = trainer.max_steps
        if self.at_fractions and last is not None and last > 0:
            steps.update(max(1, math.floor(f * last + 0.5)) for f in self.at_fractions)
        return steps

    def _evaluated_at(self, step: int) -> bool:
        """One record per training step: a validation on the step of an ``every_n_steps`` evaluation (or
        the reverse) reuses it."""
        return bool(self.evals) and self.evals[-1].step == step

    @override
    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer", None)
        pending = (
            self._validation_due
            if trainer is not None and self._validation_due == trainer.global_step
            else None
        )
        # Flat: the history's plain-type layout (pi_lightning.metrics.ProbeHistory) and two counters.
        return {**self.history().state_dict(), "val_count": self.val_count, "pending_validation": pending}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("method") != self.method:
            rank_zero_warn(
                f"AttributionMonitor({self.method!r}) got the state of {state_dict.get('method')!r}; ignored."
            )
            return
        if state_dict.get("texts") != self.texts:
            rank_zero_warn(
                "AttributionMonitor: the checkpoint was made with another probe set; its history "
                "is kept but new evaluations use the current probe."
            )
        self.evals = ProbeHistory.from_state_dict(state_dict).evals
        self._pair_start = len(self.evals) if state_dict.get("texts") != self.texts else 0
        self.val_count = int(state_dict.get("val_count", 0))
        self._pending_validation = state_dict.get("pending_validation")

    def history(self) -> ProbeHistory:
        """The probe set and every evaluation so far, typed (what the report, the CLI and
        :class:`~pi_lightning.callbacks.ShortcutMonitor` read)."""
        return ProbeHistory(
            method=self.method,
            texts=self.texts,
            labels=self.labels,
            label_names=self.label_names,
            char_spans=self.char_spans,
            evals=list(self.evals),
        )

    # ------------------------------------------------------------------ the work
    def _bar(self, trainer, total: int, desc: str):
        """A Lightning-style tqdm bar on rank zero, when the Trainer shows a progress bar; else None."""
        if trainer.progress_bar_callback is None or not trainer.is_global_zero or total <= 1:
            return None
        from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

        return Tqdm(
            total=total,
            desc=desc,
            leave=False,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=None,
        )

    def _refit_source(self, trainer) -> list | None:
        """The latest attributions of the monitor named by ``refit_from`` (for AT2's refit), if any."""
        if not self.refit_from:
            return None
        source = next(
            (
                c
                for c in trainer.callbacks
                if isinstance(c, AttributionMonitor) and c is not self and c.method == self.refit_from
            ),
            None,
        )
        return source.last_attributions if source is not None else None

    def evaluate(self, trainer, pl_module) -> dict[str, float] | None:
        """Run one evaluation now; returns the logged figures, or ``None`` when it was skipped.

        A failure never stops training: any exception while attributing or scoring (a method error,
        non-finite outputs from a diverged model, ...) is caught, a warning names what failed and
        that this evaluation is skipped, and nothing of it is logged or stored. Under DDP the ranks
        first agree on whether any of them failed (one boolean all-reduce, before any other
        collective), so that a failure on one rank never leaves the others waiting.
        """
        t0 = time.perf_counter()
        try:
            return self._evaluate(trainer, pl_module)
        finally:
            self.wall_seconds.append((time.perf_counter() - t0, bool(trainer.validating)))

    def evaluation_steps_left(self, trainer, validation_steps: Sequence[int]) -> list[int]:
        """The optimizer steps at which this monitor will still evaluate in this fit, given those of the
        validations still to come (what :class:`~pi_lightning.callbacks.StepProgressBar` asks for its ETA)."""
        step, last = int(trainer.global_step), trainer.max_steps
        if last is None or last < 0:
            return []
        at: set[int] = set()
        if self.every_n_val is not None:
            for j, v in enumerate(sorted(validation_steps), start=1):
                if (self.val_count + j) % self.every_n_val == 0:
                    at.add(int(v))
        at.update(s for s in self._scheduled_steps(trainer) if step < s <= last)
        if self.every_n_steps is not None:
            at.update(
                range((step // self.every_n_steps + 1) * self.every_n_steps, last + 1, self.every_n_steps)
            )
        if self.at_end:
            at.add(int(last))
        if self.baseline and step == 0 and not self._evaluated_at(0):
            at.add(0)
        return sorted(s for s in at if s > step or (s == 0 == step))

    def _evaluate(self, trainer, pl_module) -> dict[str, float] | None:
        step = int(trainer.global_step)
        if not self.texts:
            return None  # every probe example was dropped at setup (warned there)
        rank, size = trainer.global_rank, trainer.world_size
        try:
            local, error = self._evaluate_local(trainer, pl_module), None
        except Exception as e:
            local, error = None, e
        any_failed = (
            trainer.strategy.reduce_boolean_decision(error is not None, all=False)
            if size > 1
            else (error is not None)
        )
        if error is not None:
            warnings.warn(
                f"AttributionMonitor({self.method!r}): the evaluation at step {step} failed on rank {rank} "
                f"({type(error).__name__}: {error}). This evaluation is skipped (nothing logged or stored "
                "for it); training goes on.",
                UserWarning,
                stacklevel=2,
            )
            return None
        if any_failed:
            warnings.warn(
                f"AttributionMonitor({self.method!r}): the evaluation at step {step} failed on another "
                "rank; it is skipped on every rank (nothing logged or stored); training goes on.",
                UserWarning,
                stacklevel=2,
            )
            return None
        return self._evaluate_reduce(trainer, step, local)

    def _evaluate_local(self, trainer, pl_module) -> float:
        """This rank's share of an evaluation (its shard of the probe set through the evaluator), with no
        collective; returns its seconds. Raises on any failure, including non-finite scores or AUCs."""
        model = resolve_model(pl_module, self.model_ref)
        if model is not self._model:
            self.setup(trainer, pl_module, "fit")
        rank, size = trainer.global_rank, trainer.world_size
        idx = list(range(rank, len(self.texts), size))
        t0 = time.perf_counter()
        self.evaluator.reset()
        # Every rank issues the same number of forward passes, whatever its shard (FSDP / ZeRO-3 need it).
        with (
            model_mode(model, "keep", isolate=True, context=trainer.precision_plugin.forward_context()),
            equal_forward_passes(model, self.attributor.adapter.pad_token_id),
        ):
            if idx:
                self.last_attributions = self.evaluator.update(
                    [self.texts[i] for i in idx],
                    None if self.labels is None else [self.labels[i] for i in idx],
                    index=idx,
                    refit_from=self._refit_source(trainer),
                )
        return time.perf_counter() - t0

    def _evaluate_reduce(self, trainer, step: int, seconds: float) -> dict[str, float]:
        """Merge this evaluation across ranks (every rank calls it), store the record and log it."""
        record = self.evaluator.compute(
            history=self.evals[self._pair_start :],
            gather=lambda examples: gather_objects(trainer, examples),
            step=step,
            log_step=logger_step(trainer),
            epoch=int(trainer.current_epoch),
        )
        figures = dict(record.metrics)
        figures["seconds"] = max(gather_objects(trainer, seconds))
        record.metrics = figures
        self.evals.append(record)
        self._log(trainer, record)
        return figures

    def _label(self, i: int | None) -> str:
        return label_name(i, self.label_names)

    def _log(self, trainer, record: ProbeEvaluation) -> None:
        key = f"pi/{self.method}"
        step = record.log_step
        # "pi/step" (optimizer steps done, the report's x axis) goes with every figure; W&B plots pi/*
        # against it, so W&B and the report show the same step numbers.
        scalars = {f"{key}/{k}": v for k, v in record.metrics.items()}
        define_step_metric(trainer, scalars, "pi/step")
        log_scalars(trainer, {**scalars, "pi/step": record.step}, step=step)
        if not trainer.is_global_zero or self.log_examples == 0:
            return
        try:
            history = self.history()
            change = change_since_baseline(history)
            if change is not None:
                log_summary(
                    trainer,
                    {f"{key}/verdict": verdict_line(change), f"{key}/word_changes": words_line(change)},
                )
            cols = ["text", "label", "prediction", "explained", "as_auc", "ias_auc", "gap", "example", "step"]
            rows = []
            count = len(self.texts) if self.log_examples is None else min(self.log_examples, len(self.texts))
            for i in range(count):
                label = self._label(self.labels[i] if self.labels else None)
                rows.append(
                    [
                        HtmlCell(
                            highlight_panel(
                                self.texts[i],
                                self.char_spans[i],
                                record.scores[i],
                                label=label,
                                prediction=self._label(record.predictions[i]),
                                explained=self._label(record.targets[i]),
                                step=record.step,
                            ),
                            self.texts[i],
                        ),
                        label,
                        self._label(record.predictions[i]),
                        self._label(record.targets[i]),
                        record.as_auc[i],
                        record.ias_auc[i],
                        record.gap[i] if record.gap else None,
                        i,
                        record.step,
                    ]
                )
            title = f"{self.method} on the probe set, step {record.step}"
            log_rich(
                trainer,
                key,
                step,
                table=(cols, rows),
                curves=record.curves,
                html_page=table_page(title, cols, rows),
                words=word_rows(history, self._label),
            )
        except Exception as e:
            rank_zero_warn(
                f"pi_lightning: building the {self.method} table failed ({e!r}); training goes on."
            )


def probe_histories(trainer) -> dict[str, ProbeHistory]:
    """The typed history of every :class:`AttributionMonitor` on the Trainer, by method (in callback order).

    The one in-process way to read the monitors' evaluations (the report, the CLI summary and
    :class:`~pi_lightning.callbacks.ShortcutMonitor` use it); from a checkpoint use
    :func:`pi_lightning.metrics.histories_from_checkpoint`.
    """
    return {c.method: c.history() for c in trainer.callbacks if isinstance(c, AttributionMonitor)}
