"""Training: the LightningModules and DataModules that fine-tune a decoder-only text classifier.

Nothing here knows about attributions: they are what an ordinary fine-tuning recipe looks like,
so the callbacks can be shown (and tested) dropping into one.

* :class:`TextClassifier` trains a given transformers model (held as ``self.model``) with AdamW,
  warm-up and an optional cosine schedule; :class:`TextDataModule` tokenizes ``(texts, labels)``
  with a template (:meth:`pi_lightning.features.Featurizer.encode`, the explainers' own encoding)
  and yields dicts with ``input_ids``, ``attention_mask`` and ``labels`` (what
  :class:`~pi_lightning.callbacks.ValidationSPPI` reads).
* :class:`FinetuneClassifier` and :class:`ReviewDataModule` are the recipes' (and
  ``pi-lightning finetune``'s) pair: a model loaded by name, optionally with LoRA, and the
  embedded reviews or a user's file with a held-out probe set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from pi_lightning.inference import pad_sequences

__all__ = [
    "FinetuneClassifier",
    "ReviewDataModule",
    "TextClassifier",
    "TextDataModule",
]


class TextClassifier(pl.LightningModule):
    """Fine-tunes ``model`` (a ``*ForSequenceClassification``, optionally peft-wrapped) with AdamW.

    Args:
        model: the transformers model.
        lr: learning rate (the peak, after warm-up).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up from ``lr / warmup_steps`` to ``lr`` over this many optimizer steps.
        schedule: ``"constant"`` after warm-up, or ``"cosine"``: decay to 0 at the last step
            (``trainer.estimated_stepping_batches``, i.e. ``max_steps`` when set).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: str = "constant",
    ) -> None:
        super().__init__()
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}.")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}.")
        self.model = model.train()  # loaders return eval-mode models; this one is about to be trained
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.schedule = schedule

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

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of ``lr`` at optimizer step ``step`` (0-based) of ``total``.

        Example:
            >>> m = TextClassifier(torch.nn.Linear(1, 1), warmup_steps=2, schedule="cosine")
            >>> [round(m.lr_factor(s, 6), 3) for s in range(6)]
            [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
        """
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        t = (step - self.warmup_steps) / max(total - self.warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.warmup_steps == 0 and self.schedule == "constant":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self.lr_factor(s, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


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
        max_length: truncate longer inputs to this many tokens (the text is cut, the template's
            context kept, as the explainers do: :meth:`~pi_lightning.features.Featurizer.encode`).
        seed: shuffling seed for the training loader.
        shuffle: shuffle the training set each epoch.
    """

    def __init__(
        self,
        tokenizer,
        train,
        val,
        template: str = "{text}",
        batch_size: int = 16,
        max_length: int = 256,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token: set tokenizer.pad_token = tokenizer.eos_token.")
        from pi_lightning.features import Featurizer

        self.tokenizer = tokenizer
        self.template = template
        # The one template encoding (the explainers' own): a model is explained on what it was trained on.
        self.featurizer = Featurizer(tokenizer, "token", template=template, max_length=max_length)
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.shuffle = shuffle
        self._train = self._encode(train)
        self._val = self._encode(val)

    def _encode(self, split) -> _Encoded:
        texts, labels = (split.texts, split.labels) if hasattr(split, "texts") else split
        return _Encoded(self.featurizer.encode(texts), labels)

    def _collate(self, rows):
        # (B, width) right-padded ids and mask
        input_ids, mask = pad_sequences([ids for ids, _ in rows], self.tokenizer.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": torch.tensor([y for _, y in rows], dtype=torch.long),
        }

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self._train,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            generator=g,
            collate_fn=self._collate,
        )

    def val_dataloader(self):
        return DataLoader(self._val, batch_size=self.batch_size, shuffle=False, collate_fn=self._collate)


class FinetuneClassifier(TextClassifier):
    """The recipes' LightningModule: loads a decoder-only classifier by name, optionally with LoRA.

    Exposes ``self.model`` (the transformers or peft model) and ``self.tokenizer``, which is what
    the pi_lightning callbacks pick up when they are given no tokenizer.

    Args:
        model_name: ``"smollm2-135m-instruct"`` (embedded default), a hub id, a local folder, or
            ``"testing:gpt2"`` / ``"testing:llama"`` (tiny random models).
        num_labels: number of classes.
        finetune: ``"lora"`` (peft; the head is trained in full) or ``"full"``.
        lora_r, lora_alpha, lora_dropout: LoRA settings; target modules are peft's defaults for the
            architecture unless ``lora_targets`` names them.
        lora_last_layers: put LoRA on the last k transformer layers only: backpropagation then
            stops there, which makes CPU fine-tuning several times cheaper (``None``: every layer).
        lr, weight_decay, warmup_steps, schedule: optimiser settings (see :class:`TextClassifier`).
        head_words: initialise the classification head from the language model: row ``c`` becomes
            the embedding of the first token of ``head_words[c]`` (e.g. ``[" negative", " positive"]``),
            which is the LM head's row for that word in tied-embedding models (SmolLM2, Llama 3.2,
            GPT-2), so training starts from the LM's own "which label word comes next" reading.
            ``None``: the seeded random head.
        seed: seed of the new head's initialisation.
        save_dir: when training ends, save the fine-tuned weights there as safetensors (the LoRA
            adapter and head for ``"lora"``, the whole model for ``"full"``) with the tokenizer;
            reload with ``load_classifier(model_name, adapter=save_dir)`` (LoRA) or
            ``load_classifier(save_dir)`` (full); the run's template, class names, mask and
            granularity go beside them in ``pi_lightning.json`` (:attr:`settings_path`), which
            ``pi-lightning explain`` / ``shortcuts`` read.
    """

    def __init__(
        self,
        model_name: str = "smollm2-135m-instruct",
        num_labels: int = 2,
        finetune: str = "lora",
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        lora_targets: list[str] | None = None,
        lora_last_layers: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: str = "constant",
        head_words: list[str] | None = None,
        seed: int = 0,
        save_dir: str | None = None,
    ) -> None:
        from pi_lightning.models import init_head_from_words, load_classifier

        if finetune not in ("lora", "full"):
            raise ValueError(f"finetune must be 'lora' or 'full', got {finetune!r}.")
        model, tokenizer = load_classifier(model_name, num_labels=num_labels, seed=seed)
        if head_words is not None:
            init_head_from_words(model, tokenizer, head_words)
        if finetune == "lora":
            import peft

            layers = None
            if lora_last_layers is not None:
                total = int(model.config.num_hidden_layers)
                if not 1 <= lora_last_layers <= total:
                    raise ValueError(
                        f"lora_last_layers must be in 1..{total} for this model, got {lora_last_layers}."
                    )
                layers = list(range(total - lora_last_layers, total))
            cfg = peft.LoraConfig(
                task_type="SEQ_CLS",
                r=lora_r,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=lora_targets,
                layers_to_transform=layers,
            )
            model = peft.get_peft_model(model, cfg)
        super().__init__(
            model, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, schedule=schedule
        )
        self.tokenizer = tokenizer
        self.save_dir = save_dir
        self.settings_path = None
        self.save_hyperparameters()

    def on_train_end(self) -> None:
        if self.save_dir and self.trainer.is_global_zero:
            self.model.save_pretrained(self.save_dir, safe_serialization=True)
            self.tokenizer.save_pretrained(self.save_dir)
            self.settings_path = save_run_settings(
                self.trainer, self.save_dir, self.hparams.get("model_name")
            )


def save_run_settings(trainer, folder: str, model_name: str | None = None):
    """Write the run's input template, class names, mask and granularity beside the saved weights
    (:func:`pi_lightning.adapter_settings.write_adapter_settings`): the datamodule's ``template`` and
    ``label_names``, the first monitor's ``method_kwargs`` ``mask`` / ``granularity``."""
    from pi_lightning.adapter_settings import write_adapter_settings

    dm = getattr(trainer, "datamodule", None)
    kwargs = next(
        (
            cb.method_kwargs
            for cb in trainer.callbacks
            if isinstance(getattr(cb, "method_kwargs", None), dict)
        ),
        {},
    )
    return write_adapter_settings(
        folder,
        template=getattr(dm, "template", "{text}"),
        label_names=getattr(dm, "label_names", None),
        mask=kwargs.get("mask", "remove"),
        granularity=kwargs.get("granularity", "word"),
        model_name=model_name,
    )


def adapter_settings_path(module):
    """The settings file the module wrote beside its saved weights (``None`` when it saved none)."""
    return getattr(module, "settings_path", None)


class ReviewDataModule(pl.LightningDataModule):
    """Train/val batches and a held-out probe set from the embedded reviews or a user's file.

    Args:
        tokenizer_name: model name whose tokenizer to use (the recipes link it to the model's name).
        dataset: ``"rotten_tomatoes"``, ``"imdb"`` or a path to a ``.csv`` / ``.jsonl`` / ``.parquet``
            file (read by :func:`pi_lightning.data.load_examples`, like the probe sets and the explain job).
            A file alone is split (seeded, label-stratified 80/10/10) unless ``split_column`` or
            ``val_dataset`` says how the user split it.
        text_column, label_column: the file's columns.
        val_dataset, test_dataset: the user's own validation and test files: ``dataset`` is then the
            training file, and no file is re-split (the probe set comes from ``test_dataset``, or from
            the validation file without one).
        split_column: a column of ``dataset`` naming each row's split (``train``, ``val`` /
            ``validation`` / ``dev``, ``test``): the file is split by it, not re-split.
        label_names: class names in index order, needed when a file's labels are names (``pos``);
            recorded as ``label_names``.
        n_train, n_val: examples used (``None``: the whole split).
        n_probe: held-out test examples explained by the callbacks.
        probe_max_words: only probe texts with at most this many words (keeps CPU runs short).
        template: model input layout with one ``{text}`` placeholder.
        batch_size, max_length: batching and truncation.
        seed: split and shuffle seed.
    """

    def __init__(
        self,
        tokenizer_name: str = "smollm2-135m-instruct",
        dataset: str = "rotten_tomatoes",
        text_column: str = "text",
        label_column: str = "label",
        val_dataset: str | None = None,
        test_dataset: str | None = None,
        split_column: str | None = None,
        label_names: list[str] | None = None,
        n_train: int | None = None,
        n_val: int | None = 256,
        n_probe: int = 16,
        probe_max_words: int | None = None,
        template: str = "{text}",
        batch_size: int = 16,
        max_length: int = 128,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from pi_lightning.data import load_movie_reviews, load_text_file
        from pi_lightning.models import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_name)
        if test_dataset is not None and val_dataset is None:
            raise ValueError("test_dataset needs val_dataset: give the validation file too.")
        if split_column is not None and val_dataset is not None:
            raise ValueError("Give either split_column or val_dataset / test_dataset, not both.")
        if dataset in ("rotten_tomatoes", "imdb"):
            if val_dataset is not None or split_column is not None:
                raise ValueError(
                    f"{dataset!r} is a built-in dataset with its own splits: val_dataset / split_column "
                    "are for your own files."
                )
            splits = {s: load_movie_reviews(dataset, s, seed=seed) for s in ("train", "val", "test")}
        elif val_dataset is not None:  # the user's own files, as they are
            files = {"train": dataset, "val": val_dataset, "test": test_dataset or val_dataset}
            splits = {
                s: load_text_file(
                    f, text_column, label_column, fractions=None, label_names=label_names, split=s
                )
                for s, f in files.items()
            }
        else:
            splits = {
                s: load_text_file(
                    dataset,
                    text_column,
                    label_column,
                    s,
                    seed=seed,
                    label_names=label_names,
                    split_column=split_column,
                )
                for s in ("train", "val", "test")
            }
        train, val, test = splits["train"], splits["val"], splits["test"]
        if n_train is not None:
            train = train.subset(n_train)
        if n_val is not None:
            val = val.subset(n_val)
        pool = test
        if probe_max_words is not None:
            keep = [i for i, t in enumerate(test.texts) if len(t.split()) <= probe_max_words]
            pool = type(test)(
                tuple(test.texts[i] for i in keep), tuple(test.labels[i] for i in keep), test.label_names
            )
        self.probe = pool.subset(n_probe)
        if len(self.probe) == 0:
            raise ValueError(
                f"No probe examples left (n_probe={n_probe}, probe_max_words={probe_max_words})."
            )
        self.label_names = list(train.label_names)
        self.template = template
        self.train_set, self.val_set = train, val
        self._dm = TextDataModule(
            self.tokenizer,
            train,
            val,
            template=template,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
        )

    def train_dataloader(self):
        return self._dm.train_dataloader()

    def val_dataloader(self):
        return self._dm.val_dataloader()
