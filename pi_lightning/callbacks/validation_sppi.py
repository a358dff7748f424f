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
punctuation, or follows punctuation. The first word of each sequence is the reference
(p_0); every later word gets phi = p(end of word) - p(end of previous word).

Per evaluation it logs ``pi/val-sp-pi/top20_share`` (the share of total |phi| carried by the top
20% of words, a concentration index), ``pi/val-sp-pi/mean_abs`` and a table of the words with the
largest mean attribution over the validation set: a label-free shortcut detector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from pi_lightning.callbacks._utils import gather_objects, log_rich, log_scalars, resolve_model, table_page
from pi_lightning.inference import OUTPUTS, resolve_classifier, transform_outputs

__all__ = ["ValidationSPPI"]


_TABLES: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def word_tables(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Per vocabulary id: (starts a word, is punctuation) as bool tensors (cached per tokenizer)."""
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
    starts = torch.zeros(vocab, dtype=torch.bool)
    punct = torch.zeros(vocab, dtype=torch.bool)
    for i, t in enumerate(tokens):
        if t is None:
            continue
        body = t[1:] if t.startswith(marker) else t
        is_p = bool(body) and not any(ch.isalnum() for ch in body)
        punct[i] = is_p
        starts[i] = t.startswith(marker) or is_p or i in special
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
        self._sum: dict[tuple[int, ...], float] = defaultdict(float)
        self._count: dict[tuple[int, ...], int] = defaultdict(int)
        self._share_sum = 0.0
        self._abs_sum = 0.0
        self._examples = 0
        self._words = 0

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
        starts_tab, punct_tab = (t.to(ids.device) for t in self._tables)
        B, T = ids.shape
        lengths = mask.sum(1)
        last = torch.where(mask, torch.arange(T, device=ids.device), -1).max(1).values  # (B,)
        values = transform_outputs(logits.float(), self.output)  # (B, T, C)
        labels = batch.get(self.label_key) if isinstance(batch, Mapping) else None
        if labels is not None and torch.is_tensor(labels) and labels.dim() == 1 and labels.dtype != torch.float:
            target = labels.to(ids.device)
        else:
            target = logits[torch.arange(B), last].argmax(-1)
        p = values.gather(2, target.view(B, 1, 1).expand(B, T, 1)).squeeze(2)  # (B, T)
        # A token starts a word if the table says so or it follows punctuation.
        start = starts_tab[ids] | torch.nn.functional.pad(punct_tab[ids][:, :-1], (1, 0))
        start &= mask
        first = torch.where(mask, torch.arange(T, device=ids.device), T).min(1).values
        start[torch.arange(B), first] = True
        # the end of a word: the token before the next start (or the last real token)
        nxt = torch.nn.functional.pad(start[:, 1:], (0, 1), value=False)
        is_end = mask & (nxt | (torch.arange(T, device=ids.device)[None, :] == last[:, None]))
        ids_cpu, is_end_cpu, start_cpu, p_cpu = ids.cpu(), is_end.cpu(), start.cpu(), p.double().cpu()
        for b in range(B):
            if int(lengths[b]) == 0:
                continue
            ends = torch.nonzero(is_end_cpu[b]).flatten()
            starts = torch.nonzero(start_cpu[b]).flatten()
            if len(ends) < 2:
                continue
            pe = p_cpu[b, ends]
            phi = torch.diff(pe)  # words 2..W; word 1 is the reference
            absphi = phi.abs()
            total = float(absphi.sum())
            k = max(1, round(0.2 * len(phi)))
            if total > 0:
                self._share_sum += float(absphi.topk(k).values.sum()) / total
            self._abs_sum += float(absphi.mean())
            self._examples += 1
            self._words += len(phi)
            row = ids_cpu[b].tolist()
            for w in range(1, len(ends)):
                key = tuple(row[int(starts[w]): int(ends[w]) + 1])
                self._sum[key] += float(phi[w - 1])
                self._count[key] += 1

    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if trainer.sanity_checking:
            return
        parts = gather_objects((dict(self._sum), dict(self._count), self._share_sum, self._abs_sum,
                                self._examples, self._words))
        sums: dict[tuple[int, ...], float] = defaultdict(float)
        counts: dict[tuple[int, ...], int] = defaultdict(int)
        share = absm = 0.0
        n_ex = n_words = 0
        for s, c, sh, ab, ne, nw in parts:
            for k, v in s.items():
                sums[k] += v
            for k, v in c.items():
                counts[k] += v
            share, absm, n_ex, n_words = share + sh, absm + ab, n_ex + ne, n_words + nw
        if n_ex == 0:
            return
        ranked = sorted((k for k in sums if counts[k] >= self.min_count), key=lambda k: -sums[k] / counts[k])
        top = []
        for k in ranked:
            word = self.tokenizer.decode(list(k)).strip()
            if word:  # whitespace-only pieces are not words
                top.append({"word": word, "mean_phi": sums[k] / counts[k], "count": counts[k]})
            if len(top) == self.top_words:
                break
        figures = {"top20_share": share / n_ex, "mean_abs": absm / n_ex, "n_examples": float(n_ex),
                   "n_words": float(n_words)}
        record = {"step": int(trainer.global_step), "epoch": int(trainer.current_epoch), "metrics": figures,
                  "top_words": top}
        self.evals.append(record)
        log_scalars(trainer, {f"pi/val-sp-pi/{k}": v for k, v in figures.items()}, step=record["step"])
        if trainer.is_global_zero:
            cols = ["rank", "word", "mean_phi", "count"]
            rows = [[r + 1, t["word"], t["mean_phi"], t["count"]] for r, t in enumerate(top)]
            log_rich(trainer, "pi/val-sp-pi/top_words", record["step"], table=(cols, rows),
                     html_page=table_page(f"Words with the largest mean SP-PI, step {record['step']}", cols, rows))

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
