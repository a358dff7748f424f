"""ValidationSPPI: word-level SP-PI over the whole validation set, for free.

The user's ``validation_step`` already runs the classifier on every validation batch, and the
head ``score`` already computes its output at every position. A forward hook on the head keeps
that ``(B, T, C)`` tensor, so SP-PI of every validation example costs no extra forward pass: only
a few vectorised tensor operations per batch.

What the LightningModule must expose:
  * the Hugging Face model as an attribute (``model="model"`` by default) or through a getter;
  * validation batches as mappings with ``input_ids`` and ``attention_mask`` (left or right
    padding), and optionally ``labels`` (otherwise the predicted class is explained);
  * a ``validation_step`` that calls that model's forward once per batch.

Words are recovered from the token ids alone (no re-tokenization): a token starts a new word when
it carries the tokenizer's word-boundary marker (``Ġ``/``▁``, read off the tokenizer itself), is
punctuation, or follows punctuation or a whitespace-only token (which stays with the word before
it, as in :mod:`pi_lightning.features`). The first word of each sequence is the reference
(p_0); every later word gets phi = p(end of word) - p(end of previous word).

Per evaluation it logs ``pi/val-sp-pi/top20_share`` (the share of total |phi| carried by the top
20% of words, a concentration index), ``pi/val-sp-pi/mean_abs`` and a table of the words with the
largest mean attribution over the validation set: a label-free shortcut detector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from pi_lightning.callbacks._utils import (gather_objects, log_rich, log_scalars, logger_step, resolve_model,
                                           table_page)
from pi_lightning.inference import OUTPUTS, resolve_classifier, transform_outputs

__all__ = ["ValidationSPPI"]

_MAX_WORD_TOKENS = 16
# (K,) int64 multipliers of a polynomial hash over a word's token ids (wrapping arithmetic).
_HASH_BASE = torch.tensor([pow(1_000_003, k, 2**61 - 1) for k in range(_MAX_WORD_TOKENS)], dtype=torch.long)


_TABLES: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def word_tables(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Per vocabulary id: (starts a word, ends a unit so the next token starts a word), as bool
    tensors (cached per tokenizer). Punctuation and whitespace-only tokens end a unit."""
    key = (id(tokenizer), len(tokenizer))
    if key not in _TABLES:
        _TABLES[key] = _word_tables(tokenizer)
    return _TABLES[key]


def _word_tables(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    vocab = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab)))
    probe = tokenizer.convert_ids_to_tokens(tokenizer("a b", add_special_tokens=False)["input_ids"])
    marker = probe[-1][0] if probe and len(probe[-1]) > 1 and probe[-1].endswith("b") else " "
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    decoded = tokenizer.batch_decode([[i] for i in range(vocab)])
    starts = torch.zeros(vocab, dtype=torch.bool)
    punct = torch.zeros(vocab, dtype=torch.bool)
    for i, (t, d) in enumerate(zip(tokens, decoded)):
        if t is None:
            continue
        d = d.strip()
        # whitespace-only tokens join the current word (as in pi_lightning.features); partial UTF-8
        # bytes (decoded as U+FFFD) continue it too
        is_p = bool(d) and "\ufffd" not in d and not any(ch.isalnum() for ch in d)
        punct[i] = is_p or not d
        starts[i] = (t.startswith(marker) and bool(d)) or is_p or i in special
    return starts, punct


class ValidationSPPI(Callback):
    """Free word-level SP-PI over every validation example, from the validation loop's own forward.

    Args:
        tokenizer: the model's tokenizer (to find word boundaries and to show words); ``None`` takes
            ``pl_module.tokenizer``.
        model: attribute path or getter of the Hugging Face model in the LightningModule.
        input_key, mask_key, label_key: batch keys.
        output: ``"prob"`` (default), ``"logits"`` or ``"log_odds"``.
        top_words: how many words the shortcut table shows.
        min_count: a word must occur this many times to be ranked.
    """

    def __init__(self, tokenizer=None, *, model: str | Callable | None = "model", input_key: str = "input_ids",
                 mask_key: str = "attention_mask", label_key: str = "labels", output: str = "prob",
                 top_words: int = 20, min_count: int = 3) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"Unknown output {output!r}: expected one of {', '.join(OUTPUTS)}.")
        for name, v in (("top_words", top_words), ("min_count", min_count)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        self.tokenizer = tokenizer
        self.model_ref = model
        self.input_key, self.mask_key, self.label_key = input_key, mask_key, label_key
        self.output = output
        self.top_words = top_words
        self.min_count = min_count
        self._head = None
        self._handle = None
        self._captured: list[torch.Tensor] = []
        self._in_batch = False
        self._tables: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reset()
        # --- state ---
        self.evals: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(output=self.output)

    def _reset(self) -> None:
        # Per batch, device tensors only (no host sync on the validation loop's path):
        self._hashes: list[torch.Tensor] = []  # (N,) int64 hash of each attributed word's token ids
        self._phis: list[torch.Tensor] = []  # (N,) its phi
        self._tokens: list[torch.Tensor] = []  # (N, _MAX_WORD_TOKENS) its first token ids, -1 padded
        self._stats: torch.Tensor | None = None  # (4,) summed: top-20% share, mean |phi|, examples, words

    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        _, self._head = resolve_classifier(resolve_model(pl_module, self.model_ref))
        if self.tokenizer is None:
            self.tokenizer = getattr(pl_module, "tokenizer", None)
            if self.tokenizer is None:
                raise ValueError("ValidationSPPI needs the model's tokenizer to find word boundaries: pass "
                                 "tokenizer=... or give the LightningModule a `tokenizer` attribute.")
        self._tables = word_tables(self.tokenizer)

    @override
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()
        if self._handle is None:
            self._handle = self._head.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        if not self._in_batch:  # e.g. another callback's attribution passes
            return
        out = output[0] if isinstance(output, tuple) else output
        self._captured.append(out.detach())

    @override
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._captured.clear()
        self._in_batch = True

    @override
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._in_batch = False
        if not self._captured:
            return
        try:
            self._accumulate(batch, self._captured[-1])
        except Exception as e:  # noqa: BLE001 - never stop validation for a statistics problem
            rank_zero_warn(f"ValidationSPPI skipped a batch ({e!r}); check that batches hold "
                           f"{self.input_key!r} and {self.mask_key!r}.")
        finally:
            self._captured.clear()

    @torch.no_grad()
    def _accumulate(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        ids = batch[self.input_key]
        mask = batch[self.mask_key].bool()
        if logits.dim() != 3 or logits.shape[:2] != ids.shape:
            return
        dev = ids.device
        starts_tab, punct_tab = (t.to(dev) for t in self._tables)
        B, T = ids.shape
        pos = torch.arange(T, device=dev).expand(B, T)
        last = torch.where(mask, pos, -1).max(1).values  # (B,)
        labels = batch.get(self.label_key) if isinstance(batch, Mapping) else None
        if torch.is_tensor(labels) and labels.dim() == 1 and not torch.is_floating_point(labels):
            target = labels.to(dev)
        else:
            target = logits[torch.arange(B, device=dev), last.clamp(min=0)].argmax(-1)
        values = transform_outputs(logits.float(), self.output)  # (B, T, C) float64
        p = values.gather(2, target.view(B, 1, 1).expand(B, T, 1)).squeeze(2)  # (B, T)
        # A token starts a word if the table says so or it follows punctuation; the first real token too.
        start = (starts_tab[ids] | torch.nn.functional.pad(punct_tab[ids][:, :-1], (1, 0))) & mask
        first = torch.where(mask, pos, T).min(1).values.clamp(max=T - 1)
        start[torch.arange(B, device=dev), first] = True
        start &= mask
        nxt = torch.nn.functional.pad(start[:, 1:], (0, 1), value=False)
        is_end = mask & (nxt | (pos == last[:, None]))
        # previous word's end for every position: running max of end positions strictly before it
        end_pos = torch.where(is_end, pos, -1)
        prev_end = torch.nn.functional.pad(end_pos[:, :-1], (1, 0), value=-1).cummax(1).values
        scored = is_end & (prev_end >= 0)  # word 1 of each sequence is the reference p_0
        phi = torch.where(scored, p - p.gather(1, prev_end.clamp(min=0)), torch.zeros_like(p))  # (B, T)
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
        stats = torch.stack([share.sum(), mean_abs.sum(), (n_words > 0).sum().double(), n_words.sum().double()])
        self._stats = stats if self._stats is None else self._stats + stats
        # word identity: a hash of its token ids (position-weighted), and its first tokens for display
        word_start = torch.where(start, pos, 0).cummax(1).values  # (B, T)
        offset = (pos - word_start).clamp(max=_MAX_WORD_TOKENS - 1)
        contrib = (ids.long() + 1) * _HASH_BASE.to(dev)[offset]
        word_id = (start.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
        hashes = torch.zeros(B, T, dtype=torch.long, device=dev).scatter_add_(1, word_id, contrib * mask)
        sel = scored.nonzero(as_tuple=True)
        self._hashes.append(hashes.gather(1, word_id)[sel])
        self._phis.append(phi[sel])
        tok_pos = word_start[sel][:, None] + torch.arange(_MAX_WORD_TOKENS, device=dev)  # (N, K)
        in_word = tok_pos <= sel[1][:, None]
        toks = ids[sel[0][:, None], tok_pos.clamp(max=T - 1)]
        self._tokens.append(torch.where(in_word, toks, -1))

    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if trainer.sanity_checking:
            return
        parts = gather_objects(self._local_table())
        if all(part is None for part in parts):
            return
        sums = torch.cat([p_[1] for p_ in parts if p_ is not None])
        counts = torch.cat([p_[2] for p_ in parts if p_ is not None])
        tokens = torch.cat([p_[3] for p_ in parts if p_ is not None])
        stats = sum(p_[4] for p_ in parts if p_ is not None)
        # merge words by their displayed text (" the" and "the", or a word with a trailing space token)
        texts = self.tokenizer.batch_decode([[t for t in row if t >= 0] for row in tokens.tolist()])
        merged_sum: dict[str, float] = {}
        merged_cnt: dict[str, int] = {}
        for text, s_, c_ in zip(texts, sums.tolist(), counts.tolist()):
            word = text.strip()
            if word:  # whitespace-only pieces are not words
                merged_sum[word] = merged_sum.get(word, 0.0) + s_
                merged_cnt[word] = merged_cnt.get(word, 0) + c_
        ranked = sorted((w for w in merged_sum if merged_cnt[w] >= self.min_count),
                        key=lambda w: (-merged_sum[w] / merged_cnt[w], w))
        top = [{"word": w, "mean_phi": merged_sum[w] / merged_cnt[w], "count": merged_cnt[w]}
               for w in ranked[: self.top_words]]
        share, absm, n_ex, n_words = (float(x) for x in stats)
        if n_ex == 0:
            return
        figures = {"top20_share": share / n_ex, "mean_abs": absm / n_ex, "n_examples": float(n_ex),
                   "n_words": float(n_words)}
        record = {"step": int(trainer.global_step), "log_step": logger_step(trainer), "epoch": int(trainer.current_epoch), "metrics": figures,
                  "top_words": top}
        self.evals.append(record)
        step = record["log_step"]  # the step of this validation's val/* (record["step"]: optimizer steps)
        log_scalars(trainer, {f"pi/val-sp-pi/{k}": v for k, v in figures.items()}, step=step)
        if trainer.is_global_zero:
            cols = ["rank", "word", "mean_phi", "count"]
            rows = [[r + 1, t["word"], t["mean_phi"], t["count"]] for r, t in enumerate(top)]
            log_rich(trainer, "pi/val-sp-pi/top_words", step, table=(cols, rows),
                     html_page=table_page(f"Words with the largest mean SP-PI, step {record['step']}", cols, rows))

    def _local_table(self):
        """This rank's words, aggregated: (hashes, phi sums, counts, tokens, stats) on the CPU, or None."""
        if not self._hashes:
            return None
        hashes = torch.cat(self._hashes).cpu()
        phis = torch.cat(self._phis).double().cpu()
        tokens = torch.cat(self._tokens).cpu()
        uniq, inv = torch.unique(hashes, return_inverse=True)
        sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, phis)
        counts = torch.bincount(inv, minlength=len(uniq))
        first = torch.full((len(uniq),), len(hashes), dtype=torch.long).scatter_reduce_(
            0, inv, torch.arange(len(hashes)), reduce="amin")
        return uniq, sums, counts, tokens[first], self._stats.double().cpu()

    @override
    def on_fit_end(self, trainer, pl_module) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"evals": self.evals}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.evals = list(state_dict.get("evals", []))
