"""Explain a whole dataset with any attribution method, on Lightning's distributed engine.

SP-PI costs one forward pass per example, so a training set can be explained for the price of one
prediction epoch. This module runs any registered method over a dataset with ``Trainer.predict``:
Lightning's strategies spread the work over devices and nodes (``devices``, ``num_nodes``, DDP), its
progress bar shows it, and a :class:`~lightning.pytorch.callbacks.BasePredictionWriter` writes the
results of each rank as shard files. Nothing here schedules processes itself.

Shards are defined by the example ids alone (a stable hash of the id modulo the number of shards),
so they are the same whatever the number of processes, the order of the data or a rerun; one
shard is one predict batch. A shard file is written atomically with a sidecar that records a
digest of its examples (ids, texts, labels): a rerun skips every shard whose sidecar matches and
redoes the others, so an interrupted job resumes where it stopped and a changed example is
re-explained. Memory is bounded by the shard size (examples held at once) and the attributor's
token budget ``max_tokens`` (tokens per forward batch).

Each result row holds: ``id``, ``index`` (position in the input data), ``text``, ``label``,
``target`` (the explained class), ``prediction``, ``probs``, ``method``, ``output``,
``granularity``, ``features`` (the feature texts), ``char_spans`` (each feature's ``[start, end)``
in ``text``), ``scores``, ``base_value`` and ``forward_passes`` (cost in forward-pass equivalents).
Files are JSONL, or Parquet when pyarrow is installed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader
from typing_extensions import override

from pi_lightning.attributors.base import available_methods, get_attributor
from pi_lightning.data import _pyarrow, load_examples

__all__ = [
    "ExplainModule",
    "ExplainSummary",
    "ShardWriter",
    "explain_dataset",
    "load_job",
    "load_results",
    "read_examples",
    "shard_of",
]

FORMATS = ("jsonl", "parquet")
JOB_FILE = "job.json"
_SHARD_DIR = "shards"


def read_examples(
    data,
    *,
    text_column: str = "text",
    label_column: str | None = None,
    id_column: str = "id",
    labels: Sequence | None = None,
    label_names: Sequence[str] | None = None,
) -> list[dict]:
    """Rows ``{"id": str, "index": int, "text": str, "label": int | None}``: the rows of
    :func:`pi_lightning.data.load_examples`, the one reader of examples (probe sets and finetune's files
    use it too).

    Example:
        >>> read_examples(["a good movie", "dull"], labels=[1, 0])[1]
        {'id': '1', 'index': 1, 'text': 'dull', 'label': 0}
    """
    return list(
        load_examples(
            data,
            text_column=text_column,
            label_column=label_column,
            id_column=id_column,
            labels=labels,
            label_names=label_names,
        ).rows
    )


def shard_of(example_id: str, num_shards: int) -> int:
    """The shard of an example: a stable hash of its id (independent of order, process count, platform).

    Example:
        >>> shard_of("review-17", 8) == shard_of("review-17", 8)
        True
    """
    digest = hashlib.sha1(example_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def _digest(rows: Sequence[dict]) -> str:
    h = hashlib.sha1()
    for r in rows:
        h.update(json.dumps([r["id"], r["text"], r["label"]], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- module
class ExplainModule(pl.LightningModule):
    """A LightningModule whose ``predict_step`` attributes one shard of texts with one method.

    Args:
        model: a decoder-only ``*ForSequenceClassification`` (or its peft wrapper).
        tokenizer: its fast tokenizer.
        method: a registered method (see :func:`pi_lightning.attributors.available_methods`).
        method_kwargs: the method's settings (``granularity``, ``template``, ``max_tokens``, ``budget``...).
        target: ``"predicted"``, ``"label"`` (each example's label) or a class index.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        method: str = "sp-pi",
        method_kwargs: Mapping[str, Any] | None = None,
        target: str | int = "predicted",
    ) -> None:
        super().__init__()
        methods = available_methods()
        if method not in methods:
            raise ValueError(f"Unknown attribution method {method!r}: expected one of {', '.join(methods)}.")
        if not (
            target in ("predicted", "label") or (isinstance(target, int) and not isinstance(target, bool))
        ):
            raise ValueError(f"target must be 'predicted', 'label' or a class index, got {target!r}.")
        self.model = model
        self.tokenizer = tokenizer
        self.method = method
        self.method_kwargs = dict(method_kwargs or {})
        self.target = target
        self.attributor = None
        # with fewer unfinished shards than processes some ranks have nothing to explain
        self.allow_zero_length_dataloader_with_multiple_devices = True

    @override
    def on_predict_start(self) -> None:
        if self.attributor is None:
            self.attributor = get_attributor(self.method, self.model, self.tokenizer, **self.method_kwargs)

    def explain(self, rows: Sequence[dict]) -> list[dict]:
        """Attribute rows (``{"id", "index", "text", "label"}``) and return one result row each."""
        if self.attributor is None:
            self.on_predict_start()
        texts = [r["text"] for r in rows]
        if self.target == "label":
            missing = [r["id"] for r in rows if r["label"] is None]
            if missing:
                raise ValueError(
                    f"target='label' but examples {missing[:5]} have no label: give a label column or "
                    "use target='predicted'."
                )
            target: Any = [int(r["label"]) for r in rows]
        else:
            target = self.target
        attrs = self.attributor.fill_probs(self.attributor.attribute(texts, target=target))
        return [
            {
                "id": r["id"],
                "index": r["index"],
                "text": r["text"],
                "label": r["label"],
                "target": int(a.target),
                "prediction": int(a.prediction),
                "probs": [float(p) for p in a.probs],
                "method": a.method,
                "output": a.output,
                "granularity": a.features.granularity,
                "features": list(a.features.texts),
                "char_spans": [list(s) for s in a.features.char_spans],
                "scores": [float(s) for s in a.scores],
                "base_value": a.base_value,
                "forward_passes": a.forward_passes,
            }
            for r, a in zip(rows, attrs, strict=False)
        ]

    @override
    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> list[dict]:
        return self.explain(batch["rows"])


# ---------------------------------------------------------------------------------------------- output
def _shard_paths(out_dir: Path, shard: int, fmt: str) -> tuple[Path, Path]:
    base = out_dir / _SHARD_DIR / f"shard-{shard:05d}"
    return base.with_suffix("." + fmt), base.with_suffix(".done.json")


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_shard(out_dir: Path, shard: int, records: list[dict], digest: str, fmt: str, rank: int = 0) -> Path:
    """Write one shard's records, then its sidecar (which marks the shard finished)."""
    data, done = _shard_paths(out_dir, shard, fmt)
    data.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pa, pq = _pyarrow("Parquet output")
        _write_atomic(data, lambda p: pq.write_table(pa.Table.from_pylist(records), p))
    else:

        def dump(p: Path) -> None:
            with open(p, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)

        _write_atomic(data, dump)
    meta = {"shard": shard, "digest": digest, "examples": len(records), "rank": rank, "format": fmt}
    _write_atomic(done, lambda p: p.write_text(json.dumps(meta), encoding="utf-8"))
    return data


def _read_shard(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        _, pq = _pyarrow(f"Reading {path.name}")
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _finished(out_dir: Path, shard: int, digest: str, fmt: str) -> bool:
    data, done = _shard_paths(out_dir, shard, fmt)
    if not (data.is_file() and done.is_file()):
        return False
    try:
        return json.loads(done.read_text(encoding="utf-8")).get("digest") == digest
    except (OSError, ValueError):
        return False


class ShardWriter(BasePredictionWriter):
    """Writes each predicted shard to ``out_dir/shards/shard-XXXXX.{jsonl,parquet}`` from the rank that
    ran it.

    Args:
        out_dir: the job's output folder.
        fmt: ``"jsonl"`` or ``"parquet"`` (needs pyarrow).
    """

    def __init__(self, out_dir: str | Path, fmt: str = "jsonl") -> None:
        super().__init__(write_interval="batch")
        if fmt not in FORMATS:
            raise ValueError(f"Unknown output format {fmt!r}: expected one of {', '.join(FORMATS)}.")
        if fmt == "parquet":
            _pyarrow("Parquet output")
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self.written: list[int] = []

    @override
    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        write_shard(
            self.out_dir, int(batch["shard"]), prediction, batch["digest"], self.fmt, trainer.global_rank
        )
        self.written.append(int(batch["shard"]))


def load_job(out_dir: str | Path) -> dict[str, Any]:
    """The settings an explain job folder was made with (``job.json``)."""
    path = Path(out_dir) / JOB_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{out_dir} is not an explain job folder (no {JOB_FILE}): run the explain job first "
            "(pi_lightning.jobs.explain_dataset or `pi-lightning explain`)."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_results(out_dir: str | Path) -> list[dict]:
    """Every finished result row of a job folder, in input order (``index``)."""
    out_dir = Path(out_dir)
    shard_dir = out_dir / _SHARD_DIR
    if not shard_dir.is_dir():
        raise FileNotFoundError(
            f"{out_dir} holds no explain results (no {_SHARD_DIR}/ folder): run the explain job "
            "first (pi_lightning.jobs.explain_dataset or `pi-lightning explain`)."
        )
    rows: list[dict] = []
    for done in sorted(shard_dir.glob("shard-*.done.json")):
        meta = json.loads(done.read_text(encoding="utf-8"))
        rows.extend(_read_shard(done.with_name(done.name.replace(".done.json", "." + meta["format"]))))
    return sorted(rows, key=lambda r: r["index"])


# ---------------------------------------------------------------------------------------------- the job
class _Shards(torch.utils.data.Dataset):
    def __init__(self, shards: list[dict]) -> None:
        self.shards = shards

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> dict:
        return self.shards[i]


def _first(batch: list[dict]) -> dict:
    return batch[0]


class _ShardData(pl.LightningDataModule):
    """Plans the shards on rank zero (checks the folder, skips finished shards) and broadcasts the plan."""

    def __init__(
        self, rows: list[dict], out_dir: Path, settings: dict, shard_size: int, overwrite: bool
    ) -> None:
        super().__init__()
        self.rows, self.out_dir, self.settings = rows, out_dir, settings
        self.shard_size, self.overwrite = shard_size, overwrite
        self.todo: list[dict] = []
        self.plan: dict[str, Any] = {}

    def _prepare(self) -> dict[str, Any]:
        job = self.out_dir / JOB_FILE
        settings = dict(self.settings)
        if self.overwrite and self.out_dir.exists():
            shutil.rmtree(self.out_dir / _SHARD_DIR, ignore_errors=True)
            job.unlink(missing_ok=True)
        if job.is_file():
            old = json.loads(job.read_text(encoding="utf-8"))
            differ = sorted(k for k in settings if k != "num_shards" and old.get(k) != settings[k])
            if differ:
                raise ValueError(
                    f"{self.out_dir} holds results of another job "
                    f"({', '.join(f'{k}: {old.get(k)!r} there, {settings[k]!r} now' for k in differ)}). Use "
                    "another output folder, or overwrite=True (--overwrite) to discard them."
                )
            settings["num_shards"] = int(old["num_shards"])  # shards stay those of the first run
        else:
            settings["num_shards"] = max(1, math.ceil(len(self.rows) / self.shard_size))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(
            job, lambda p: p.write_text(json.dumps(settings, indent=1, default=repr), encoding="utf-8")
        )
        groups: dict[int, list[dict]] = {}
        for r in self.rows:
            groups.setdefault(shard_of(r["id"], settings["num_shards"]), []).append(r)
        todo, skipped = [], 0
        for k in sorted(groups):
            digest = _digest(groups[k])
            if _finished(self.out_dir, k, digest, settings["format"]):
                skipped += 1
            else:
                todo.append({"shard": k, "digest": digest, "rows": groups[k]})
        return {"todo": todo, "skipped": skipped, "shards": len(groups), "num_shards": settings["num_shards"]}

    @override
    def setup(self, stage: str) -> None:
        plan: Any = None
        if self.trainer.is_global_zero:
            try:
                plan = self._prepare()
            except Exception as e:
                plan = {"error": e}
        plan = self.trainer.strategy.broadcast(plan, src=0)
        if "error" in plan:
            raise plan["error"]
        self.plan, self.todo = plan, plan["todo"]

    @override
    def predict_dataloader(self) -> DataLoader:
        # Rank r takes shards r, r + W, ... (what Lightning's distributed sampler would do, but a rank may
        # get none: its sampler asserts when there are fewer shards than processes).
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(_Shards(self.todo[rank::world]), batch_size=1, shuffle=False, collate_fn=_first)


@dataclass
class ExplainSummary:
    """What one explain run did (on this process).

    Attributes:
        out_dir: the job folder (``job.json`` and ``shards/``).
        examples: examples in the data.
        shards: shards that hold examples; ``skipped``: of those, finished by an earlier run.
        written: shards this process wrote in this run.
        is_global_zero: whether this is the rank-zero process (print and read results there).
    """

    out_dir: Path
    examples: int
    shards: int
    skipped: int
    written: list[int]
    is_global_zero: bool


def explain_dataset(
    model: torch.nn.Module,
    tokenizer,
    data,
    out_dir: str | Path,
    *,
    method: str = "sp-pi",
    method_kwargs: Mapping[str, Any] | None = None,
    target: str | int = "predicted",
    max_tokens: int | None = None,
    shard_size: int = 32,
    format: str = "jsonl",
    text_column: str = "text",
    label_column: str | None = None,
    id_column: str = "id",
    labels: Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
    model_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **trainer_kwargs: Any,
) -> ExplainSummary:
    """Explain every example of ``data`` with ``method`` through ``Trainer.predict``; results as shard files.

    Args:
        model, tokenizer: the classifier and its fast tokenizer.
        data: a file (CSV/JSONL/Parquet), texts, rows or a dataset (see :func:`read_examples`).
        out_dir: output folder; a rerun with the same settings skips the finished shards.
        method, method_kwargs: the attribution method and its settings.
        target: ``"predicted"``, ``"label"`` or a class index.
        max_tokens: token budget per forward batch (bounds memory); default the method's.
        shard_size: examples per shard on the first run (one predict batch; the progress bar counts shards).
        format: ``"jsonl"`` or ``"parquet"`` (needs pyarrow).
        text_column, label_column, id_column, labels, label_names: see
            :func:`pi_lightning.data.load_examples` (``label_column=None``: ``"label"`` if present);
            the label mapping used is recorded in ``job.json`` (``label_names``).
        model_name: recorded in ``job.json`` (a rerun with another name is refused).
        metadata: more JSON-able facts recorded in ``job.json`` and checked on a rerun (e.g. the adapter).
        overwrite: discard earlier results in ``out_dir``.
        **trainer_kwargs: for ``lightning.pytorch.Trainer`` (``accelerator``, ``devices``, ``num_nodes``,
            ``strategy``, ``precision``, ``enable_progress_bar``, ``callbacks``...).

    Returns:
        An :class:`ExplainSummary`; read the rows with :func:`load_results`.

    Example:
        >>> import tempfile
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> out = tempfile.mkdtemp()
        >>> model = tiny_classifier("gpt2", tokenizer=tok)
        >>> s = explain_dataset(model, tok, ["a good movie", "dull plot"], out, enable_progress_bar=False)
        >>> [r["features"] for r in load_results(out)]
        [['a', 'good', 'movie'], ['dull', 'plot']]
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown output format {format!r}: expected one of {', '.join(FORMATS)}.")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int (examples per shard), got {shard_size!r}.")
    method_kwargs = dict(method_kwargs or {})
    if max_tokens is not None:
        method_kwargs["max_tokens"] = max_tokens
    examples = load_examples(
        data,
        text_column=text_column,
        label_column=label_column,
        id_column=id_column,
        labels=labels,
        label_names=label_names,
    )
    rows = [dict(r) for r in examples.rows]
    module = ExplainModule(model, tokenizer, method, method_kwargs, target)
    if target == "label" and any(r["label"] is None for r in rows):
        raise ValueError(
            "target='label' needs a label for every example: give a label column (--label-column) or "
            "use target='predicted'."
        )
    name = (
        model_name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    )
    settings = {
        "method": method,
        "method_kwargs": json.loads(json.dumps(method_kwargs, default=repr)),
        "target": target,
        "model": name,
        "format": format,
        "label_names": None if examples.label_names is None else list(examples.label_names),
        "metadata": json.loads(json.dumps(dict(metadata or {}), default=repr)),
    }
    writer = ShardWriter(out_dir, format)
    datamodule = _ShardData(rows, Path(out_dir), settings, shard_size, overwrite)
    kwargs = {
        "accelerator": "auto",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "inference_mode": False,
        **trainer_kwargs,
        "use_distributed_sampler": False,
    }  # the datamodule splits the shards across ranks itself
    kwargs["callbacks"] = [*list(kwargs.get("callbacks") or []), writer]
    trainer = pl.Trainer(**kwargs)
    trainer.predict(module, datamodule=datamodule, return_predictions=False)
    return ExplainSummary(
        out_dir=Path(out_dir),
        examples=len(rows),
        shards=datamodule.plan["shards"],
        skipped=datamodule.plan["skipped"],
        written=list(writer.written),
        is_global_zero=trainer.is_global_zero,
    )
