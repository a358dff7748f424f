"""ShortcutMonitor: catch a model that learns a spurious feature while it trains.

A shortcut is a feature that predicts the label in the training data but not in the world (a
watermark token, a source tag, a template word). Two signals give it away, and this callback
follows both from what the other pi_lightning callbacks already computed (it runs no model pass):

* **Attribution share of named features** (when you suspect a word): after each evaluation of
  the :class:`~pi_lightning.callbacks.AttributionMonitor` with the given ``method``, the share of
  the total absolute attribution of the probe texts holding a named word that falls on that
  word's features, logged as ``pi/shortcut/<word>/share``. When a share passes ``threshold`` it warns once
  and records the step and epoch. Put the word in (some of) the probe texts, independently of
  their labels: any attribution it then gets is reliance on a feature that carries no label
  information there.
* **Label-free detection** (when you do not know the word): the words ranked against a
  within-text permutation null (:func:`pi_lightning.jobs.mine_shortcuts`, the statistic of
  ``pi-lightning shortcuts``: a word's attribution toward the explained class against what a random
  word of the same text gets, significant words first, by z), either over the
  whole validation set (:class:`~pi_lightning.callbacks.ValidationSPPI`'s ``top_words``, accumulated
  during validation) or over the probe set (the monitor's method, logged as a
  ``pi/shortcut/probe_top_words`` table). Ranking by mean attribution puts function words first.
  The step and epoch at which ``detect`` first becomes the top-ranked word are kept as
  :attr:`detected_step` / :attr:`detected_epoch`.

Words are compared case-insensitively after stripping surrounding whitespace; with word-level
features a word is a run of letters and digits or one run of punctuation, so ``"zxq"`` matches
the feature of ``"... film. zxq"``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from pi_lightning.attributors.base import available_methods
from pi_lightning.callbacks.attribution_monitor import probe_histories
from pi_lightning.callbacks.validation_sppi import validation_evaluations
from pi_lightning.features import normalize_word
from pi_lightning.metrics.record import ProbeEvaluation, ProbeHistory, ValidationEvaluation
from pi_lightning.reporting.html import table_page
from pi_lightning.reporting.logging import log_rich, log_scalars

__all__ = ["ShortcutMonitor"]

DETECTORS = ("validation", "probe")


class ShortcutMonitor(Callback):
    """Track how much attribution named words get, and when a label-free detector ranks one first.

    Args:
        words: the suspected shortcut words (one or more).
        threshold: warn when a word's share of the absolute attribution of the probe texts that
            contain it reaches this fraction (0 < threshold <= 1).
        method: the method of the :class:`AttributionMonitor` on the same Trainer to read the probe
            attributions from; ``None`` reads none (then no share is computed).
        detector: ``"validation"`` (:class:`ValidationSPPI`'s permutation-null ranking over the
            validation set), ``"probe"`` (the same statistic over the probe set's attributions) or
            ``None``.
        detect: the word whose first top-1 rank is reported as :attr:`detected_step`; default the
            first of ``words``.
        min_count: a word must occur this many times in the probe set to be ranked there.
        top_words: rows of the logged probe ranking table.

    Attributes:
        detected_step, detected_epoch: when the detector first ranked ``detect`` first (or ``None``).
        first_over: per word, ``{"step", "epoch", "share"}`` of the first evaluation whose share
            reached ``threshold``.
        history: one record per processed evaluation (source, step, epoch, shares or ranks, top words).

    Example:
        >>> monitor = ShortcutMonitor(["zxq"], threshold=0.3)
        >>> monitor.state_key
        "ShortcutMonitor{'words': ('zxq',)}"
    """

    def __init__(
        self,
        words: Sequence[str],
        *,
        threshold: float = 0.25,
        method: str | None = "sp-pi",
        detector: str | None = "validation",
        detect: str | None = None,
        min_count: int = 2,
        top_words: int = 10,
    ) -> None:
        super().__init__()
        if isinstance(words, str):
            words = [words]
        words = list(words)
        if not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise ValueError(
                f"words must be a non-empty list of non-empty strings (e.g. ['zxq']), got {words!r}."
            )
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(
                f"threshold is a fraction of the total attribution in (0, 1], got {threshold!r}."
            )
        if method is not None and method not in available_methods():
            raise ValueError(
                f"Unknown attribution method {method!r}: expected None or one of "
                f"{', '.join(available_methods())} (the method of an AttributionMonitor on the Trainer)."
            )
        if detector is not None and detector not in DETECTORS:
            raise ValueError(f"detector must be None or one of {', '.join(DETECTORS)}, got {detector!r}.")
        if detector == "probe" and method is None:
            raise ValueError(
                "detector='probe' ranks the probe attributions of an AttributionMonitor: give its method=..."
            )
        if method is None and detector is None:
            raise ValueError(
                "Give method=... (share of the named words) or detector=... (label-free ranking), "
                "otherwise the monitor has nothing to read."
            )
        for name, v in (("min_count", min_count), ("top_words", top_words)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if detect is not None and (not isinstance(detect, str) or not detect.strip()):
            raise ValueError(f"detect must be a non-empty word, got {detect!r}.")
        self.words = tuple(normalize_word(w) for w in words)
        self.threshold = float(threshold)
        self.method = method
        self.detector = detector
        self.detect = normalize_word(detect) if detect is not None else self.words[0]
        self.min_count = min_count
        self.top_words = top_words
        self._absent_warned: set[str] = set()
        # --- state (saved in checkpoints) ---
        self.history: list[dict[str, Any]] = []
        self.first_over: dict[str, dict[str, Any]] = {}
        self.detected_step: int | None = None
        self.detected_epoch: int | None = None
        self.seen_probe = 0
        self.seen_val = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(words=self.words)

    # ------------------------------------------------------------------ sources
    def _probe_source(self, trainer) -> ProbeHistory | None:
        """The typed history of the AttributionMonitor with ``method`` (None without one)."""
        if self.method is None:
            return None
        return probe_histories(trainer).get(self.method)

    def _val_source(self, trainer) -> list[ValidationEvaluation] | None:
        """The ValidationSPPI records (None without one, or when the detector does not read them)."""
        if self.detector != "validation":
            return None
        return validation_evaluations(trainer)

    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.method is not None and self._probe_source(trainer) is None:
            raise ValueError(
                f"ShortcutMonitor(method={self.method!r}) found no AttributionMonitor with that method "
                "on the Trainer: add AttributionMonitor(method=...) to callbacks, or pass method=None."
            )
        if self.detector == "validation" and self._val_source(trainer) is None:
            raise ValueError(
                "ShortcutMonitor(detector='validation') found no ValidationSPPI on the Trainer: add "
                "ValidationSPPI() to callbacks, or use detector='probe' / None."
            )

    # ------------------------------------------------------------------ hooks: read new evaluations
    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.poll(trainer)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.poll(trainer)  # an AttributionMonitor may evaluate every N steps

    @override
    def on_fit_end(self, trainer, pl_module) -> None:
        self.poll(trainer)

    def poll(self, trainer) -> None:
        """Process every evaluation of the sources not seen yet (cheap when there is none)."""
        probe = self._probe_source(trainer)
        if probe is not None:
            for record in probe.evals[self.seen_probe :]:
                self._from_probe(trainer, probe, record)
            self.seen_probe = len(probe.evals)
        val = self._val_source(trainer)
        if val is not None:
            for record in val[self.seen_val :]:
                self._from_validation(trainer, record)
            self.seen_val = len(val)

    # ------------------------------------------------------------------ the figures
    def probe_figures(
        self, texts: Sequence[str], char_spans, scores, targets: Sequence[int] | None = None
    ) -> tuple[dict[str, float | None], list[dict]]:
        """Shares of the named words and the words ranked by mean absolute attribution.

        A word's share is the absolute attribution on its features divided by the total absolute
        attribution, both summed over the probe texts that contain the word (so it does not depend
        on how many probe texts hold it); ``None`` when no probe text contains it.

        Args:
            texts: the probe texts.
            char_spans: per text, the ``[start, end)`` character span of each feature.
            scores: per text, one attribution per feature.
            targets: the explained class of each text: the ranking is then the permutation-null one
                (:func:`~pi_lightning.jobs.mine_shortcuts`, rows also hold ``cls``, ``excess``, ``z``,
                ``q``, ``significant``); without them, by mean absolute attribution.

        Returns:
            ``({word: share}, [{"word", "mean_abs", "count"}, ...])``, the ranking best first, words
            seen fewer than ``min_count`` times left out.

        Example:
            >>> m = ShortcutMonitor(["zxq"], min_count=1)
            >>> spans = [[(0, 4), (5, 8)], [(0, 3)]]
            >>> shares, top = m.probe_figures(["good zxq", "bad"], spans, [[0.1, 0.3], [0.5]])
            >>> round(shares["zxq"], 3), top[0]["word"]
            (0.75, 'bad')
        """
        on_word = dict.fromkeys(self.words, 0.0)
        within = dict.fromkeys(self.words, 0.0)  # total |attribution| of the texts holding the word
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for text, spans, row in zip(texts, char_spans, scores, strict=False):
            words = [normalize_word(text[a:b]) for a, b in spans]
            values = [abs(float(s)) for s in row]
            total = sum(values)
            for w in set(words) & on_word.keys():
                within[w] += total
                on_word[w] += sum(v for x, v in zip(words, values, strict=False) if x == w)
            for w, v in zip(words, values, strict=False):
                sums[w] += v
                counts[w] += 1
        shares = {
            w: (on_word[w] / within[w] if within[w] > 0 else (0.0 if counts[w] else None)) for w in self.words
        }
        ranked = sorted(
            (w for w in sums if counts[w] >= self.min_count and w), key=lambda w: -sums[w] / counts[w]
        )
        top = [{"word": w, "mean_abs": sums[w] / counts[w], "count": counts[w]} for w in ranked]
        if targets is not None and len(texts):
            from pi_lightning.jobs.shortcuts import mine_shortcuts
            from pi_lightning.result import ExplainRow

            rows = [
                ExplainRow(
                    text=text,
                    features=[normalize_word(text[a:b]) for a, b in spans],
                    char_spans=[[a, b] for a, b in spans],
                    scores=[float(x) for x in row],
                    target=int(t),
                    probs=[0.0] * (max(targets) + 1),  # mining reads their length (the classes) only
                    output="unknown",  # no folding: only texts explained for a class count toward it
                )
                for text, spans, row, t in zip(texts, char_spans, scores, targets, strict=False)
            ]
            mined = mine_shortcuts(rows, min_count=self.min_count)
            top = [
                {
                    "word": r["word"],
                    "mean_abs": sums[r["word"]] / counts[r["word"]],
                    "count": r["count"],
                    **{k: r[k] for k in ("cls", "excess", "z", "q", "significant")},
                }
                for r in mined.rows
                if r["word"]
            ]
        return shares, top

    def _from_probe(self, trainer, probe: ProbeHistory, record: ProbeEvaluation) -> None:
        shares, top = self.probe_figures(probe.texts, probe.char_spans, record.scores, record.targets or None)
        step, epoch = record.step, record.epoch
        ranks = {w: next((i + 1 for i, t in enumerate(top) if t["word"] == w), None) for w in self.words}
        self.history.append(
            {
                "source": "probe",
                "step": step,
                "epoch": epoch,
                "shares": shares,
                "ranks": ranks,
                "top_words": top[: self.top_words],
            }
        )
        absent = [w for w, s in shares.items() if s is None and w not in self._absent_warned]
        if absent:
            self._absent_warned.update(absent)
            rank_zero_warn(
                f"ShortcutMonitor: no probe text contains {absent}, so their attribution share cannot be "
                "measured. Add the words to some probe texts (half of each class keeps them "
                "uncorrelated with the label), or rely on the label-free detector."
            )
        figures = {f"pi/shortcut/{w}/share": s for w, s in shares.items() if s is not None}
        figures.update({f"pi/shortcut/{w}/probe_rank": float(r) for w, r in ranks.items() if r is not None})
        log_scalars(trainer, figures, step=record.log_step)  # aligned with val/*
        for w, s in shares.items():
            if s is not None and s >= self.threshold and w not in self.first_over:
                self.first_over[w] = {"step": step, "epoch": epoch, "share": s}
                rank_zero_warn(
                    f"ShortcutMonitor: {s:.0%} of the {self.method} attribution of the probe texts holding "
                    f"{w!r} falls on it (threshold {self.threshold:.0%}) at step {step}, epoch {epoch}: the "
                    "model may rely on a shortcut. Check where this word occurs in the training data."
                )
        if self.detector == "probe":
            self._check_top(
                top[0]["word"] if top else None, step, epoch, "permutation-null rank over the probe set"
            )
        if trainer.is_global_zero and top:
            cols = ["rank", "word", "mean_abs", "count"]
            rows = [
                [r + 1, t["word"], t["mean_abs"], t["count"]] for r, t in enumerate(top[: self.top_words])
            ]
            log_rich(
                trainer,
                "pi/shortcut/probe_top_words",
                step,
                table=(cols, rows),
                html_page=table_page(
                    f"Words with the largest mean |{self.method}| on the probe set, step {step}", cols, rows
                ),
            )

    def _from_validation(self, trainer, record: ValidationEvaluation) -> None:
        top = record.top_words
        step, epoch = record.step, record.epoch
        ranks = {
            w: next((i + 1 for i, t in enumerate(top) if normalize_word(t["word"]) == w), None)
            for w in self.words
        }
        phis = {w: top[r - 1]["mean_phi"] for w, r in ranks.items() if r is not None}
        self.history.append(
            {
                "source": "validation",
                "step": step,
                "epoch": epoch,
                "ranks": ranks,
                "mean_phi": phis,
                "top_words": [dict(t) for t in top[: self.top_words]],
            }
        )
        figures = {f"pi/shortcut/{w}/val_rank": float(r) for w, r in ranks.items() if r is not None}
        figures.update({f"pi/shortcut/{w}/val_mean_phi": v for w, v in phis.items()})
        log_scalars(trainer, figures, step=record.log_step)  # aligned with val/*
        self._check_top(
            normalize_word(top[0]["word"]) if top else None,
            step,
            epoch,
            "permutation-null rank over the validation set",
        )

    def _check_top(self, first: str | None, step: int, epoch: int, what: str) -> None:
        if first == self.detect and self.detected_step is None:
            self.detected_step, self.detected_epoch = step, epoch
            rank_zero_warn(
                f"ShortcutMonitor: {self.detect!r} is now the word with the largest {what} "
                f"(step {step}, epoch {epoch}): a likely shortcut."
            )

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "words": list(self.words),
            "history": self.history,
            "first_over": self.first_over,
            "detected_step": self.detected_step,
            "detected_epoch": self.detected_epoch,
            "seen_probe": self.seen_probe,
            "seen_val": self.seen_val,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if tuple(state_dict.get("words", ())) != self.words:
            rank_zero_warn(
                f"ShortcutMonitor{self.words} got the state of words {state_dict.get('words')}; ignored."
            )
            return
        self.history = list(state_dict.get("history", []))
        self.first_over = dict(state_dict.get("first_over", {}))
        self.detected_step = state_dict.get("detected_step")
        self.detected_epoch = state_dict.get("detected_epoch")
        self.seen_probe = int(state_dict.get("seen_probe", 0))
        self.seen_val = int(state_dict.get("seen_val", 0))
