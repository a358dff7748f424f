"""A plain LightningModule and DataModule for fine-tuning a Hugging Face text classifier.

Nothing here knows about attributions: they are what an ordinary fine-tuning recipe looks like,
so the callbacks can be shown (and tested) dropping into one. ``TextClassifier`` holds the
transformers model as ``self.model``; ``TextDataModule`` yields batches as dicts with
``input_ids``, ``attention_mask`` and ``labels`` (what :class:`~pi_lightning.callbacks.ValidationSPPI`
reads).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

__all__ = ["TextClassifier", "TextDataModule"]


class TextClassifier(pl.LightningModule):
    """Fine-tunes ``model`` (a ``*ForSequenceClassification``, optionally peft-wrapped) with AdamW.

    Args:
        model: the transformers model.
        lr: learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(self, model: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.model = model.train()  # loaders return eval-mode models; this one is about to be trained
        self.lr = lr
        self.weight_decay = weight_decay

    def forward(self, input_ids, attention_mask, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def training_step(self, batch, batch_idx):
        out = self(**batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch["labels"]))
        return out.loss

    def validation_step(self, batch, batch_idx):
        out = self(**batch)
        acc = (out.logits.argmax(-1) == batch["labels"]).float().mean()
        n = len(batch["labels"])
        self.log("val/loss", out.loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/acc", acc, prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, ids: list[list[int]], labels: Sequence[int]) -> None:
        self.ids, self.labels = ids, list(labels)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], self.labels[i]


class TextDataModule(pl.LightningDataModule):
    """Tokenizes texts with a template and batches them with padding.

    Args:
        tokenizer: the model's tokenizer (needs a pad token).
        train, val: ``(texts, labels)`` pairs, or objects with ``.texts`` and ``.labels``.
        template: text layout with one ``{text}`` placeholder.
        batch_size: examples per batch.
        max_length: truncate longer inputs to this many tokens.
        seed: shuffling seed for the training loader.
        shuffle: shuffle the training set each epoch.
    """

    def __init__(self, tokenizer, train, val, template: str = "{text}", batch_size: int = 16,
                 max_length: int = 256, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__()
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token: set tokenizer.pad_token = tokenizer.eos_token.")
        if "{text}" not in template:
            raise ValueError(f"template needs a '{{text}}' placeholder, got {template!r}.")
        self.tokenizer = tokenizer
        self.template = template
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.shuffle = shuffle
        self._train = self._encode(train)
        self._val = self._encode(val)

    def _encode(self, split) -> _Encoded:
        texts, labels = (split.texts, split.labels) if hasattr(split, "texts") else split
        enc = self.tokenizer([self.template.format(text=t) for t in texts], truncation=True,
                             max_length=self.max_length)["input_ids"]
        return _Encoded(enc, labels)

    def _collate(self, rows):
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        # (B, width) right-padded ids and mask
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "labels": torch.tensor([y for _, y in rows], dtype=torch.long)}

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self._train, batch_size=self.batch_size, shuffle=self.shuffle, generator=g,
                          collate_fn=self._collate)

    def val_dataloader(self):
        return DataLoader(self._val, batch_size=self.batch_size, shuffle=False, collate_fn=self._collate)
