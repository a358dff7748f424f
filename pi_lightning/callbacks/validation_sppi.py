"""ValidationSPPI: word-level SP-PI over the whole validation set, for free.

The user's ``validation_step`` already runs the classifier on every validation batch, and the
head ``score`` already computes its output at every position. A forward hook on the head keeps
that ``(B, T, C)`` tensor, so SP-PI of every validation example costs no extra forward pass over
the validation set: only a few vectorised tensor operations per batch (and, when no token precedes
the texts, one one-token pass per validation for the reference p_0).

What the LightningModule must expose:
  * the Hugging Face model as an attribute (``model="model"`` by default) or through a getter;
  * validation batches as mappings with ``input_ids`` and ``attention_mask`` (left or right
    padding), and optionally ``labels`` (otherwise the predicted class is explained);
  * a ``validation_step`` that calls that model's forward once per batch.

Words are the ones every attributor uses: each sequence's real tokens go through
:meth:`pi_lightning.features.Featurizer.from_token_ids`, the library's one segmentation (the text
tokens are decoded, re-tokenized for their character offsets and grouped into words). Every word is
scored exactly as :class:`~pi_lightning.SPPI` does (with its default removal masking), for every
tokenizer family: special tokens before the text (a BOS), or the template's context (``template=``,
the one the batches were encoded with, :meth:`~pi_lightning.features.Featurizer.encode`), are fixed
context whose last token is the reference p_0; a row with no context before its text (a tokenizer
that adds no BOS, GPT-2's or Qwen's) takes p_0 from the model's output on the anchor token alone (BOS,
else EOS: SP-PI's fully masked input), one one-token pass per validation. Every word gets
phi = p(end of word) - p(end of previous word), computed by
:func:`pi_lightning.attributors.sppi.progressive_differences`, the same function SP-PI uses.
Examples whose outputs are not finite (a diverged model) or that hold no text, and those that
``DistributedSampler`` repeats to even out the shards, are left out (the first two with a warning).
A batch it cannot read (a tuple instead of a mapping, a missing key) is skipped and named, with the
reason, in :attr:`ValidationSPPI.skipped_batches` and one warning per validation.

Per evaluation it logs ``pi/val-sp-pi/top20_share`` (the share of total |phi| carried by the top
20% of words, a concentration index), ``pi/val-sp-pi/mean_abs`` and a label-free shortcut detector:
the words ranked by :func:`pi_lightning.jobs.mine_shortcuts`, the statistic the offline
``pi-lightning shortcuts`` uses. Each word's attribution is compared with a within-text permutation
null (what a random word of the same validation text gets), with Benjamini-Hochberg q values; the
significant words come first, most significant (largest z) first. Ranking by mean
attribution instead puts the function words that sit where predictions move most (``but``,
``about``) on top. Online there is no masking check behind the ranking, so it uses
:data:`pi_lightning.jobs.shortcuts.ONLINE`: a word's score includes the next word's (its lasting
change: a function word's is often a transient the next word takes back) and the typical score of
its place (first to fourth word, later) is taken out first (the first words move the prediction most
whatever they are). On the planted-cue benchmark (benchmarks/results/RESULTS.md, issue 24) the
clean run's significant words went from function words (``a``, ``:``, ``of``, ``for``, ``and``) to
none, and the poisoned runs' are the cue's words (``marcus``, ``says``, ``--``, ``simply``; ``[``,
``by``, ``]``, ``large``) with one ``the``. It stays a ranking of attributions, not of reliance: a
word it lists is checked causally by ``pi-lightning shortcuts``. The significant words of each
evaluation are kept (``pi/val-sp-pi/n_significant``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from pi_lightning._renamed import renamed
from pi_lightning.attributors.sppi import progressive_differences
from pi_lightning.callbacks._distributed import gather_objects
from pi_lightning.callbacks._model import resolve_model
from pi_lightning.callbacks._schedule import validation_follows
from pi_lightning.features import Featurizer, check_template, normalize_word
from pi_lightning.inference import (
    OUTPUTS,
    ClassifierAdapter,
    resolve_classifier,
    transform_outputs,
    virtual_tokens,
)
from pi_lightning.masking import Masker
from pi_lightning.metrics.record import ValidationEvaluation
from pi_lightning.reporting.html import table_page
from pi_lightning.reporting.logging import log_rich, log_scalars, logger_step

__all__ = ["ValidationSPPI", "validation_evaluations"]


def _absolute_positions(hf_model) -> bool:
    """Whether the model adds learned absolute position embeddings (GPT-2 style), which make its
    outputs depend on where left padding puts the text unless position ids are passed."""
    max_pos = getattr(hf_model.config, "max_position_embeddings", None) or getattr(
        hf_model.config, "n_positions", None
    )
    for name, m in hf_model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if isinstance(m, torch.nn.Embedding) and last in ("wpe", "embed_positions", "position_embeddings"):
            return max_pos is None or m.num_embeddings >= max_pos
    return False


class _RankTable(NamedTuple):
    """One rank's words of a validation, gathered to every rank.

    Attributes:
        sums, counts: per word, its summed phi and its occurrences.
        stats: ``(4,)`` sums over the rank's attributed examples: top-20% share, mean ``|phi|``,
            examples, words (all zero when nothing was attributed).
        skipped: examples skipped, by reason.
        examples: per attributed example ``(words, phis, target)`` (what the permutation null needs).
    """

    sums: dict[str, float]
    counts: dict[str, int]
    stats: torch.Tensor
    skipped: dict[str, int]
    examples: list[tuple[list[str], list[float], int]]

    @property
    def n_examples(self) -> float:
        return float(self.stats[2])


class ValidationSPPI(Callback):
    """Free word-level SP-PI over every validation example, from the validation loop's own forward.

    Args:
        tokenizer: the model's fast tokenizer (to find the words); ``None`` takes ``pl_module.tokenizer``.
        model: attribute path or getter of the Hugging Face model in the LightningModule.
        input_key, attention_mask_key, label_key: batch keys.
        output: ``"prob"`` (default), ``"logits"`` or ``"log_odds"``.
        top_words: how many words the shortcut table shows.
        min_count: a word must occur this many times to be ranked.
        template: the template the validation texts were encoded with (by
            :meth:`~pi_lightning.features.Featurizer.encode`, as
            :class:`~pi_lightning.training.TextDataModule` does): its context is not attributed, as in
            :class:`~pi_lightning.SPPI` with that template. ``None``: the datamodule's ``template``
            attribute when it has one (as :class:`~pi_lightning.callbacks.AttributionMonitor` reads it),
            else ``"{text}"``.
        alpha: false discovery rate of the significant words.

    Attributes:
        evals: one :class:`~pi_lightning.metrics.ValidationEvaluation` per validation, oldest first
            (saved in checkpoints; :func:`validation_evaluations` reads them from a Trainer).
        skipped_batches: the batches of the last validation that could not be read, as
            ``{"dataloader_idx", "batch_idx", "reason"}`` rows.
    """

    @renamed(mask_key="attention_mask_key")
    def __init__(
        self,
        tokenizer=None,
        *,
        model: str | Callable | None = "model",
        input_key: str = "input_ids",
        attention_mask_key: str = "attention_mask",
        label_key: str = "labels",
        output: str = "prob",
        top_words: int = 20,
        min_count: int = 3,
        template: str | None = None,
        alpha: float = 0.05,
    ) -> None:
        super().__init__()
        if template is not None:
            check_template(template)
        if output not in OUTPUTS:
            raise ValueError(f"Unknown output {output!r}: expected one of {', '.join(OUTPUTS)}.")
        for name, v in (("top_words", top_words), ("min_count", min_count)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise ValueError(f"alpha is a false discovery rate in (0, 1), got {alpha!r}.")
        self.alpha = float(alpha)
        self.tokenizer = tokenizer
        self.model_ref = model
        self.input_key, self.attention_mask_key, self.label_key = input_key, attention_mask_key, label_key
        self.output = output
        self.top_words = top_words
        self.min_count = min_count
        self.template = template
        self.skipped_batches: list[dict[str, Any]] = []
        self._model = None
        self._anchor: int | None = None
        self._anchor_values: torch.Tensor | None = None
        self._head = None
        self._hf = None
        self._handles: list = []
        self._captured: list[torch.Tensor] = []
        self._position_ids_passed: bool | None = None
        self._in_batch = False
        self._featurizer: Featurizer | None = None
        self._absolute = False
        self._virtual = 0
        self._warned_padding = False
        self._validation_due: int | None = None  # a validation follows the last training batch
        self._pending_validation: int | None = None  # restored: a validation the checkpoint was taken before
        self._reset()
        # --- state ---
        self.evals: list[ValidationEvaluation] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(output=self.output)

    def _reset(self) -> None:
        self._words: list[str] = []  # each attributed word, in the order of ``self._phis``
        self._phis: list[torch.Tensor] = []  # per batch (N,) device tensor: each word's phi
        self._stats: torch.Tensor | None = None  # (4,) summed: top-20% share, mean |phi|, examples, words
        self._example_words: list[int] = []  # per attributed example, its number of scored words
        self._targets: list[int] = []  # per attributed example, the explained class
        self._num_classes = 0
        self._skipped = {"non-finite": 0, "no text": 0}
        self._seen: dict[int, int] = {}  # examples seen per dataloader (to drop DistributedSampler's repeats)
        self._first_repeat: dict[int, int | None] = {}
        self.skipped_batches = []
        self._anchor_values = None  # (C,) outputs on the anchor token alone, once per validation

    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        model = resolve_model(pl_module, self.model_ref)
        self._model = model
        self._hf, self._head = resolve_classifier(model)
        self._virtual = virtual_tokens(model)
        if self.tokenizer is None:
            self.tokenizer = getattr(pl_module, "tokenizer", None)
            if self.tokenizer is None:
                raise ValueError(
                    "ValidationSPPI needs the model's tokenizer to find word boundaries: pass "
                    "tokenizer=... or give the LightningModule a `tokenizer` attribute."
                )
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(
                f"ValidationSPPI needs a fast tokenizer (offset mappings), got "
                f"{type(self.tokenizer).__name__}. Load it with AutoTokenizer.from_pretrained(..., "
                "use_fast=True)."
            )
        template = (
            self.template or getattr(getattr(trainer, "datamodule", None), "template", None) or "{text}"
        )
        self._featurizer = Featurizer(self.tokenizer, "word", template=template)
        self._anchor = Masker(self.tokenizer).anchor_id  # SP-PI's fully masked input (removal)
        self._absolute = _absolute_positions(self._hf)

    @override
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._validation_due = None  # the validation that follows the last training batch is running
        self._reset()
        if self._anchor is not None and not self._featurizer.prefix_ids:
            # no token precedes the texts: p_0 is the anchor's output. Computed here, on every rank at the
            # same point (a sharded model's forward is collective), not when the first batch needs it.
            try:
                self._anchor_outputs("cpu")
            except Exception as e:  # never stop training for it: those rows are skipped instead
                rank_zero_warn(f"ValidationSPPI could not run the model on the anchor token ({e!r}).")
                self._anchor_values = torch.full((1,), float("nan"), dtype=torch.float64)
        if not self._handles:
            self._handles = [
                self._head.register_forward_hook(self._hook),
                self._hf.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
            ]

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre_hook(self, module, args, kwargs) -> None:
        if self._in_batch:
            self._position_ids_passed = kwargs.get("position_ids") is not None

    def _hook(self, module, inputs, output) -> None:
        if not self._in_batch:  # e.g. another callback's attribution passes
            return
        out = output[0] if isinstance(output, tuple) else output
        self._captured.append(out.detach())

    def _repeats_from(self, trainer, dataloader_idx: int) -> int | None:
        """Local index of the first example that ``DistributedSampler`` repeats to even out the shards."""
        if dataloader_idx not in self._first_repeat:
            first = None
            loaders = getattr(trainer, "val_dataloaders", None)
            loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
            sampler = getattr(loader, "sampler", None)
            batch_sampler = getattr(loader, "batch_sampler", None)
            if not isinstance(sampler, torch.utils.data.DistributedSampler):
                sampler = getattr(batch_sampler, "sampler", None)
            if isinstance(sampler, torch.utils.data.DistributedSampler) and not sampler.drop_last:
                n, size, rank = len(sampler.dataset), sampler.num_replicas, sampler.rank
                if sampler.total_size > n:  # padded global index k * size + rank >= n is a repeat
                    first = max(0, math.ceil((n - rank) / size))
            self._first_repeat[dataloader_idx] = first
        return self._first_repeat[dataloader_idx]

    @override
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._captured.clear()
        self._position_ids_passed = None
        self._in_batch = True

    @override
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._in_batch = False
        try:
            reason = self._unreadable(batch)
            if reason is not None:
                self.skipped_batches.append(
                    {"dataloader_idx": int(dataloader_idx), "batch_idx": int(batch_idx), "reason": reason}
                )
                return
            ids = batch[self.input_key]
            seen = self._seen.get(dataloader_idx, 0)
            self._seen[dataloader_idx] = seen + len(ids)
            first_repeat = self._repeats_from(trainer, dataloader_idx)
            if self._captured:
                keep = None
                if first_repeat is not None:
                    keep = torch.arange(seen, seen + len(ids)) < first_repeat  # (B,) not a repeated example
                self._accumulate(batch, self._captured[-1], keep)
        except Exception as e:
            self.skipped_batches.append(
                {"dataloader_idx": int(dataloader_idx), "batch_idx": int(batch_idx), "reason": repr(e)}
            )
        finally:
            self._captured.clear()

    def _unreadable(self, batch) -> str | None:
        """Why a batch cannot be read (``None`` when it can)."""
        if not isinstance(batch, Mapping):
            return (
                f"it is a {type(batch).__name__}, not a mapping with {self.input_key!r} and "
                f"{self.attention_mask_key!r} (make the collate function return a dict)"
            )
        missing = [k for k in (self.input_key, self.attention_mask_key) if k not in batch]
        if missing:
            return f"it has no {missing} key(s); its keys are {sorted(map(str, batch))}"
        return None

    def _warn_skipped(self, step: int) -> None:
        if not self.skipped_batches:
            return
        by_reason: dict[str, list[str]] = {}
        for b in self.skipped_batches:
            where = (
                f"{b['batch_idx']}" if b["dataloader_idx"] == 0 else f"{b['dataloader_idx']}:{b['batch_idx']}"
            )
            by_reason.setdefault(b["reason"], []).append(where)
        parts = [
            f"batches {', '.join(w[:10])}{' ...' if len(w) > 10 else ''} ({len(w)}): {r}"
            for r, w in by_reason.items()
        ]
        rank_zero_warn(
            f"ValidationSPPI skipped {len(self.skipped_batches)} validation batches at step {step}, so "
            f"their examples have no attribution: {'; '.join(parts)}."
        )

    def _anchor_outputs(self, device) -> torch.Tensor | None:
        """``(C,)`` the model's outputs on the anchor token alone (SP-PI's p_0 when nothing precedes the
        text), one one-token pass per validation (the weights do not change within one); ``None`` when
        they are not finite (a diverged model: those rows are skipped as non-finite, training goes on)."""
        if self._anchor_values is None:
            try:
                [lg] = ClassifierAdapter(self._model).forward_positions([[self._anchor]], [[0]])  # (1, C)
                self._anchor_values = transform_outputs(lg[0].float(), self.output)
            except FloatingPointError:  # the adapter's "non-finite outputs" error
                self._anchor_values = torch.full((1,), float("nan"), dtype=torch.float64)
        if not bool(torch.isfinite(self._anchor_values).all()):
            return None
        return self._anchor_values.to(device)

    def _check_padding(self, mask: torch.Tensor) -> None:
        if self._warned_padding or not self._absolute or self._position_ids_passed:
            return
        if bool((~mask[:, 0] & mask[:, -1]).any()):
            self._warned_padding = True
            rank_zero_warn(
                f"ValidationSPPI: left-padded validation batches run through {type(self._hf).__name__}, "
                "which has absolute position embeddings, without position_ids: the model reads the text at "
                "shifted positions, so its outputs (validation loss included) and these figures depend on "
                "the padding side. "
                "Pad on the right, or pass position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0) to the "
                "model in validation_step (as pi_lightning's attributors do)."
            )

    def _segment(
        self, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[list[str]], torch.Tensor]:
        """Word ends, on the host, with the library's one word segmentation
        (:meth:`~pi_lightning.features.Featurizer.from_token_ids`, what every attributor's features use).

        Returns ``(is_end, ok, words, first_end)``: ``(B, T)`` bool, True at the reference position (the
        last context token before the text, if any) and at every word's end; ``(B,)`` bool, False for rows
        with no text or gaps in the mask; per row the text of each scored word; ``(B,)`` the column of the
        first word's end in rows with no context (its p_0 is the anchor's output), -1 elsewhere.
        """
        B, T = ids.shape
        rows = ids.tolist()
        real = mask.tolist()
        # per row the batch column of each real token (padding removed)
        cols = [[t for t in range(T) if real[r][t]] for r in range(B)]
        feats = self._featurizer.from_token_ids([[rows[r][t] for t in cols[r]] for r in range(B)])
        is_end = torch.zeros(B, T, dtype=torch.bool)
        ok = torch.ones(B, dtype=torch.bool)
        first_end = torch.full((B,), -1, dtype=torch.long)
        words: list[list[str]] = []
        for r, f in enumerate(feats):
            row_words: list[str] = []
            words.append(row_words)
            if f is None:
                ok[r] = False
                continue
            col = cols[r]
            a, b = f.context_end, f.suffix_start
            if col[b - 1] - col[a] != b - 1 - a:  # a gap in the mask inside the text
                ok[r] = False
                continue
            if a > 0:  # context before the text: its last token is the reference p_0
                is_end[r, col[a - 1]] = True
                scored = f.texts
            elif self._anchor is not None and f.n:  # p_0: the anchor token alone, as SP-PI reads it
                first_end[r] = col[f.ends[0]]
                scored = f.texts
            else:  # no anchor token in this tokenizer: the first word is the reference
                scored = f.texts[1:]
            for e in f.ends:
                is_end[r, col[e]] = True
            row_words.extend(scored)
        return is_end, ok, words, first_end

    @torch.no_grad()
    def _accumulate(
        self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor, keep: torch.Tensor | None = None
    ) -> None:
        ids = batch[self.input_key]
        mask = batch[self.attention_mask_key].bool()
        if logits.dim() == 3 and logits.shape[1] == ids.shape[1] + self._virtual:
            logits = logits[:, self._virtual :]  # (B, virtual + T, C) -> (B, T, C): peft prompt tuning
        if logits.dim() != 3 or logits.shape[:2] != ids.shape:
            raise RuntimeError(
                f"the head's output {tuple(logits.shape)} does not match the batch's "
                f"{tuple(ids.shape)} tokens"
            )
        self._check_padding(mask)
        dev = ids.device
        B, T = ids.shape
        is_end, ok, words, first_end = self._segment(ids.cpu(), mask.cpu())
        self._skipped["no text"] += int((~ok & mask.cpu().any(1)).sum())
        pos = torch.arange(T, device=dev).expand(B, T)
        last = torch.where(mask, pos, -1).max(1).values  # (B,)
        labels = batch.get(self.label_key) if isinstance(batch, Mapping) else None
        if torch.is_tensor(labels) and labels.dim() == 1 and not torch.is_floating_point(labels):
            target = labels.to(dev)
        else:
            target = logits[torch.arange(B, device=dev), last.clamp(min=0)].argmax(-1)
        values = transform_outputs(logits.float(), self.output)  # (B, T, C) float64
        finite = (torch.isfinite(values).all(-1) | ~mask).all(1)  # (B,)
        first_end = first_end.to(dev)
        anchor = None
        if bool((first_end >= 0).any()):
            anchor = self._anchor_outputs(dev)
            if anchor is None:  # rows scored against a non-finite anchor output are non-finite too
                finite &= first_end < 0
        use = ok.to(dev) & finite
        if keep is not None:
            use &= keep.to(dev)
            finite |= ~keep.to(dev)  # repeated examples are not counted as failures
        fin_host = finite.cpu()  # (B,) one small host copy per batch
        self._skipped["non-finite"] += int((~fin_host).sum())
        use_host = use.cpu()
        p = values.gather(2, target.view(B, 1, 1).expand(B, T, 1)).squeeze(2)  # (B, T)
        p = torch.where(use[:, None] & mask, p, torch.zeros_like(p))  # no NaN beyond this point
        phi, scored = progressive_differences(p, is_end.to(dev) & use[:, None])
        anchored = use & (first_end >= 0)  # (B,) rows whose first word is scored against the anchor
        if anchor is not None and bool(anchored.any()):
            p0 = anchor[target]  # (B,)
            rows = torch.arange(B, device=dev)
            col = first_end.clamp(min=0)
            phi[rows, col] = torch.where(anchored, p[rows, col] - p0, phi[rows, col])
            scored[rows, col] |= anchored
        self._num_classes = int(logits.shape[-1])
        target_host = target.cpu().tolist()
        for r in range(B):
            if use_host[r]:
                self._words.extend(words[r])
                self._example_words.append(len(words[r]))
                self._targets.append(int(target_host[r]))
        # concentration: share of sum|phi| carried by the top 20% of words, per example
        absphi = phi.abs()
        n_words = scored.sum(1)  # (B,)
        k = torch.round(0.2 * n_words.double()).long().clamp(min=1)
        cum = absphi.sort(1, descending=True).values.cumsum(1)  # (B, T)
        total = cum[:, -1]
        top = cum.gather(1, (k - 1).clamp(max=T - 1)[:, None]).squeeze(1)
        has = (n_words > 0) & (total > 0)
        share = torch.where(has, top / total.clamp(min=1e-300), torch.zeros_like(total))
        mean_abs = torch.where(n_words > 0, absphi.sum(1) / n_words.clamp(min=1), torch.zeros_like(total))
        stats = torch.stack(
            [share.sum(), mean_abs.sum(), (n_words > 0).sum().double(), n_words.sum().double()]
        )
        self._stats = stats if self._stats is None else self._stats + stats
        self._phis.append(phi[scored])  # row-major, the order of ``self._words``

    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._remove_hooks()
        self._warn_skipped(int(trainer.global_step))
        if trainer.sanity_checking:
            return
        parts = gather_objects(trainer, self._local_table())
        step = int(trainer.global_step)
        skipped = {k: sum(p_.skipped[k] for p_ in parts if p_ is not None) for k in self._skipped}
        if skipped["non-finite"]:
            rank_zero_warn(
                f"ValidationSPPI: the model's outputs are NaN or infinite on {skipped['non-finite']} "
                f"validation examples at step {step} (diverged weights or an overflow); those examples "
                "are skipped (no attribution is computed from a non-finite output)."
            )
        if skipped["no text"]:
            rank_zero_warn(
                f"ValidationSPPI: {skipped['no text']} validation examples at step {step} are skipped: "
                "they hold no text tokens (only special tokens) or gaps in their attention mask."
            )
        parts = [p_ for p_ in parts if p_ is not None and p_.n_examples > 0]
        if not parts:
            return
        merged_sum: dict[str, float] = {}
        merged_cnt: dict[str, int] = {}
        for part in parts:
            for w, v in part.sums.items():
                merged_sum[w] = merged_sum.get(w, 0.0) + v
                merged_cnt[w] = merged_cnt.get(w, 0) + part.counts[w]
        stats = sum(p_.stats for p_ in parts)
        top, significant = self._detector([e for p_ in parts for e in p_.examples], merged_sum, merged_cnt)
        share, absm, n_ex, n_words = (float(x) for x in stats)
        figures = {
            "top20_share": share / n_ex,
            "mean_abs": absm / n_ex,
            "n_examples": float(n_ex),
            "n_words": float(n_words),
            "n_significant": float(len(significant)),
        }
        record = ValidationEvaluation(
            step=step,
            log_step=logger_step(trainer),
            epoch=int(trainer.current_epoch),
            metrics=figures,
            top_words=top,
            significant_words=significant,
        )
        self.evals.append(record)
        log_step = record.log_step  # the step of this validation's val/* (record.step: optimizer steps)
        log_scalars(trainer, {f"pi/val-sp-pi/{k}": v for k, v in figures.items()}, step=log_step)
        if trainer.is_global_zero:
            cols = ["rank", "word", "class", "mean_phi", "excess", "z", "q", "significant", "count"]
            rows = [
                [
                    r + 1,
                    t["word"],
                    t["cls"],
                    t["mean_phi"],
                    t["excess"],
                    t["z"],
                    t["q"],
                    t["significant"],
                    t["count"],
                ]
                for r, t in enumerate(top)
            ]
            log_rich(
                trainer,
                "pi/val-sp-pi/top_words",
                log_step,
                table=(cols, rows),
                html_page=table_page(
                    f"Words ranked against the permutation null (significant first), step {record.step}",
                    cols,
                    rows,
                ),
            )

    def _detector(
        self,
        examples: list[tuple[list[str], list[float], int]],
        sums: dict[str, float],
        counts: dict[str, int],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The label-free detector: the top rows of :func:`~pi_lightning.jobs.mine_shortcuts` over the
        validation examples (``(words, phis, target)`` each), and every significant word."""
        from pi_lightning.jobs.shortcuts import ONLINE, mine_shortcuts
        from pi_lightning.result import ExplainRow

        # probs: only their length (the classes) is read by mining; the detector has no text or spans
        rows = [
            ExplainRow(
                features=w,
                scores=s,
                target=t,
                probs=[0.0] * max(self._num_classes, t + 1, 2),
                output=self.output,
            )
            for w, s, t in examples
            if w
        ]
        if not rows:
            return [], []
        report = mine_shortcuts(rows, min_count=self.min_count, alpha=self.alpha, **ONLINE)
        norm_sums: dict[str, float] = {}
        norm_counts: dict[str, int] = {}
        for w, v in sums.items():  # mine_shortcuts compares words case-insensitively
            k = normalize_word(w)
            norm_sums[k] = norm_sums.get(k, 0.0) + v
            norm_counts[k] = norm_counts.get(k, 0) + counts[w]

        def entry(r):
            return {
                "word": r["word"],
                "mean_phi": norm_sums[r["word"]] / norm_counts[r["word"]],
                "count": r["count"],
                "cls": r["cls"],
                "excess": r["excess"],
                "z": r["z"],
                "q": r["q"],
                "significant": r["significant"],
            }

        top = [entry(r) for r in report.rows[: self.top_words]]
        return top, [entry(r) for r in report.rows if r["significant"]]

    def _local_table(self) -> _RankTable:
        """This rank's words, aggregated, on the CPU (see :class:`_RankTable`)."""
        phis = torch.cat(self._phis).double().cpu().tolist() if self._phis else []
        examples, start = [], 0
        for n, t in zip(self._example_words, self._targets, strict=True):
            examples.append((self._words[start : start + n], phis[start : start + n], t))
            start += n
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for w, v in zip(self._words, phis, strict=False):
            sums[w] = sums.get(w, 0.0) + v
            counts[w] = counts.get(w, 0) + 1
        stats = self._stats.double().cpu() if self._stats is not None else torch.zeros(4, dtype=torch.float64)
        return _RankTable(sums, counts, stats, dict(self._skipped), examples)

    @override
    def on_fit_end(self, trainer, pl_module) -> None:
        self._remove_hooks()

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # whether a validation follows this batch: a checkpoint written now is taken before it
        follows = validation_follows(trainer, batch_idx)
        self._validation_due = int(trainer.global_step) if follows else None

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        pending, self._pending_validation = self._pending_validation, None
        if pending is not None and pending == trainer.global_step:
            rank_zero_warn(
                f"ValidationSPPI: the checkpoint was written at step {pending}, just before a validation "
                "that Lightning does not run again on resume, so free SP-PI has no record for that step (its "
                "figures come from the validation loop's own forward pass). Later validations are recorded "
                "as usual."
            )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"evals": [e.to_dict() for e in self.evals], "pending_validation": self._validation_due}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.evals = [ValidationEvaluation.from_dict(e) for e in state_dict.get("evals", [])]
        self._pending_validation = state_dict.get("pending_validation")


def validation_evaluations(trainer) -> list[ValidationEvaluation] | None:
    """The typed records of the first :class:`ValidationSPPI` on the Trainer (``None`` without one).

    The one in-process way to read its evaluations (the CLI summary and
    :class:`~pi_lightning.callbacks.ShortcutMonitor` use it).
    """
    found = next((c for c in trainer.callbacks if isinstance(c, ValidationSPPI)), None)
    return None if found is None else list(found.evals)
