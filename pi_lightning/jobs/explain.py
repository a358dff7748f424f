"""Explain a whole dataset with any attribution method, on Lightning's distributed engine.

SP-PI costs one forward pass per example, so a training set can be explained for the price of one
prediction epoch. This module runs any registered method over a dataset with ``Trainer.predict``:
Lightning's strategies spread the work over devices and nodes (``devices``, ``num_nodes``, DDP), its
progress bar shows it, and a :class:`~lightning.pytorch.callbacks.BasePredictionWriter` writes the
results of each rank as shard files. Nothing here schedules processes itself.

Shards are defined by the example ids alone (:func:`plan_shards`: ids in their natural order, cut
where a stable hash of the id says so), so they are the same whatever the number of processes, the
order of the data or a rerun, and adding or removing an example changes only the shards up to the
next cut point (appended rows: the last one); one shard is one predict batch. A shard file is
written atomically with a sidecar that records a digest of its examples (ids, texts, labels): a
rerun skips every shard whose sidecar matches and redoes the others, so an interrupted job resumes
where it stopped and a changed example is re-explained. ``job.json`` holds the settings, a digest of
the model's weights (the same name with other weights or another adapter is another job) and the
manifest of the current input's shards: :func:`load_results` returns exactly those, and shard files
of examples no longer in the input are deleted. One run at a time writes into a folder (a lock file;
a second run is refused with a clear error); temporary files of killed runs are removed. Memory is
bounded by the shard size (examples held at once) and the attributor's token budget ``max_tokens``
(tokens per forward batch).

Each result row is an :class:`~pi_lightning.result.ExplainRow` (``id``, ``index``: position in the
input data, ``text``, ``label``, ``target``: the explained class, ``prediction``, ``probs``,
``method``, ``output``, ``granularity``, ``features``: the feature texts, ``char_spans``: each
feature's ``[start, end)`` in ``text``, ``scores``, ``base_value``, ``forward_passes``: cost in
forward-pass equivalents, ``settings``: what the attribution was made with,
:attr:`pi_lightning.result.Attribution.settings`), written with
:meth:`~pi_lightning.result.ExplainRow.to_dict` and read back with
:meth:`~pi_lightning.result.ExplainRow.from_dict` (which checks every field). Files are JSONL, or
Parquet when pyarrow is installed.
``job.json`` records the same ``settings``, from which :func:`load_attributor` rebuilds the job's
attributor.

``metrics=True`` then scores the faithfulness of the explained texts' attributions with the one
evaluator (:class:`~pi_lightning.metrics.ProbeEvaluator`: AS/IAS AUC and their gap, log-odds,
comprehensiveness, sufficiency), on rank zero after the run, into ``metrics.json`` (the figures, the mean
curves and the per-example values) and :attr:`ExplainSummary.metrics`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader
from typing_extensions import override

from pi_lightning.attributors.base import (
    attributor_from_settings,
    available_methods,
    check_method_kwargs,
    get_attributor,
    resolve_method_settings,
)
from pi_lightning.data import import_pyarrow, load_examples
from pi_lightning.result import ExplainRow

__all__ = [
    "ExplainModule",
    "ExplainSummary",
    "FolderInUseError",
    "ShardWriter",
    "explain_dataset",
    "load_attributor",
    "load_job",
    "load_results",
    "plan_shards",
    "read_examples",
    "score_results",
    "weights_digest",
    "write_atomic",
]

FORMATS = ("jsonl", "parquet")
JOB_FILE = "job.json"
METRICS_FILE = "metrics.json"
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


def _id_hash(example_id: str) -> int:
    """A stable 64-bit hash of an id (independent of the platform and the process; no Python ``hash``)."""
    return int.from_bytes(hashlib.sha1(example_id.encode("utf-8")).digest()[:8], "big")


def _id_order(example_id: str) -> tuple:
    """Ids in natural order: row numbers numerically ("2" before "10"), then the others as strings."""
    return (0, int(example_id), "") if example_id.isdigit() else (1, 0, example_id)


_TAIL = "tail"  # the key of the last shard when it does not end at a cut point


def plan_shards(ids: Sequence[str], shard_size: int) -> dict[str, list[int]]:
    """Split examples into shards that stay the same when examples are added or removed.

    Examples are put in the natural order of their ids (not of the data), and a shard ends after each
    example whose id hashes to a multiple of ``shard_size`` (content-defined cut points), or once it
    holds ``shard_size`` examples. A shard's key is the hash of the id it ends at, so adding or removing
    an example changes only the shards from it to the next cut point (appended rows: the last shard
    only), never all of them (as a hash modulo a count of shards that depends on the number of examples
    would); the plan does not depend on the order of the data or the number of processes.

    Args:
        ids: the example ids (unique).
        shard_size: the most examples in one shard.

    Returns:
        ``{key: [positions in ids]}``.

    Example:
        >>> ids = [str(i) for i in range(40)]
        >>> before = plan_shards(ids, 8)
        >>> after = plan_shards(ids + ["40"], 8)
        >>> sum(before[k] != after.get(k) for k in before)  # only the last shard changed
        1
    """
    order = sorted(range(len(ids)), key=lambda i: _id_order(ids[i]))
    shards: dict[str, list[int]] = {}
    current: list[int] = []
    for i in order:
        h = _id_hash(ids[i])
        current.append(i)
        if h % shard_size == 0 or len(current) >= shard_size:
            shards[f"{h:016x}"] = current
            current = []
    if current:
        shards[_TAIL] = current
    return shards


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of a model's weights (every parameter and buffer: names, dtypes, shapes, values), so that
    an explain job is keyed on the weights it explains, not on a model name (a fine-tuned adapter, the
    same name with other weights).

    Example:
        >>> from pi_lightning.testing import tiny_classifier
        >>> weights_digest(tiny_classifier(seed=0)) == weights_digest(tiny_classifier(seed=0))
        True
        >>> weights_digest(tiny_classifier(seed=0)) == weights_digest(tiny_classifier(seed=1))
        False
    """
    h = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            # (numel,) then its raw bytes: a byte view works for every dtype (bfloat16 included)
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
        check_method_kwargs(method, method_kwargs or {})  # a misspelled setting fails here
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

    def explain(self, rows: Sequence[dict]) -> list[ExplainRow]:
        """Attribute examples (``{"id", "index", "text", "label"}``); one :class:`ExplainRow` each."""
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
            ExplainRow.from_attribution(a, id=r["id"], index=r["index"], label=r["label"])
            for r, a in zip(rows, attrs, strict=True)
        ]

    @override
    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> list[ExplainRow]:
        return self.explain(batch["rows"])


# ---------------------------------------------------------------------------------------------- output
def _shard_paths(out_dir: Path, shard: str, fmt: str) -> tuple[Path, Path]:
    base = out_dir / _SHARD_DIR / f"shard-{shard}"
    return base.with_suffix("." + fmt), base.with_suffix(".done.json")


def write_atomic(path: str | Path, write) -> Path:
    """Write a file atomically: ``write(tmp_path)`` into a temporary file beside it, then rename it over
    ``path`` (a reader, or a run that is killed, never sees half a file); the temporary file is removed
    whatever happens (an explain run also removes those a killed run left behind). ``write`` may be a
    ``str``: the text to write (UTF-8)."""
    path = Path(path)
    if isinstance(write, str):
        text = write
        write = lambda p: p.write_text(text, encoding="utf-8")  # noqa: E731
    _write_atomic(path, write)
    return path


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_shard(
    out_dir: Path, shard: str, rows: Sequence[ExplainRow], digest: str, fmt: str, rank: int = 0
) -> Path:
    """Write one shard's rows, then its sidecar (which marks the shard finished)."""
    records = [r.to_dict() for r in rows]
    data, done = _shard_paths(out_dir, shard, fmt)
    data.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pa, pq = import_pyarrow("Parquet output")
        _write_atomic(data, lambda p: pq.write_table(pa.Table.from_pylist(records), p))
    else:

        def dump(p: Path) -> None:
            with open(p, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)

        _write_atomic(data, dump)
    meta = {"shard": shard, "digest": digest, "examples": len(records), "rank": rank, "format": fmt}
    _write_atomic(done, lambda p: p.write_text(json.dumps(meta), encoding="utf-8"))
    return data


def _read_shard(path: Path) -> list[ExplainRow]:
    if path.suffix == ".parquet":
        _, pq = import_pyarrow(f"Reading {path.name}")
        records = pq.read_table(path).to_pylist()
    else:
        with open(path, encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
    rows = []
    for i, rec in enumerate(records):
        try:
            rows.append(ExplainRow.from_dict(rec))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}, row {i + 1}: {e}") from e
    return rows


def _finished(out_dir: Path, shard: str, digest: str, fmt: str) -> bool:
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
            import_pyarrow("Parquet output")
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self.written: list[str] = []

    @override
    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        write_shard(self.out_dir, batch["shard"], prediction, batch["digest"], self.fmt, trainer.global_rank)
        self.written.append(batch["shard"])


def load_job(out_dir: str | Path) -> dict[str, Any]:
    """The settings an explain job folder was made with (``job.json``)."""
    path = Path(out_dir) / JOB_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{out_dir} is not an explain job folder (no {JOB_FILE}): run the explain job first "
            "(pi_lightning.jobs.explain_dataset or `pi-lightning explain`)."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_attributor(out_dir: str | Path, model: torch.nn.Module, tokenizer):
    """The attributor an explain job folder was made with, rebuilt from the settings its ``job.json``
    records (:func:`pi_lightning.attributors.attributor_from_settings`), on ``model``."""
    job = load_job(out_dir)
    settings = job.get("settings")
    if settings is None:  # written before jobs recorded their settings: the given ones
        settings = job.get("method_kwargs") or {}
    return attributor_from_settings(job["method"], settings, model, tokenizer)


def load_results(out_dir: str | Path) -> list[ExplainRow]:
    """The finished result rows of a job folder's last run, in input order (``index``): only the shards of
    the examples that run was given (its manifest in ``job.json``), each only if finished on those very
    examples, so a rerun on fewer or other examples never returns rows of the earlier input.

    Raises:
        ValueError: a row of a shard is not an :class:`~pi_lightning.result.ExplainRow` (written by
            another version: the error names the file, the row and the field).
    """
    out_dir = Path(out_dir)
    shard_dir = out_dir / _SHARD_DIR
    if not shard_dir.is_dir():
        raise FileNotFoundError(
            f"{out_dir} holds no explain results (no {_SHARD_DIR}/ folder): run the explain job "
            "first (pi_lightning.jobs.explain_dataset or `pi-lightning explain`)."
        )
    job = load_job(out_dir)
    manifest = job.get("shards")
    if not isinstance(manifest, dict):
        raise ValueError(
            f"{out_dir} was written by an older pi_lightning (no shard manifest in {JOB_FILE}): explain it "
            "again with overwrite=True (--overwrite)."
        )
    rows: list[ExplainRow] = []
    for key, digest in sorted(manifest.items()):
        if _finished(out_dir, key, digest, job["format"]):
            rows.extend(_read_shard(_shard_paths(out_dir, key, job["format"])[0]))
    return sorted(rows, key=lambda r: r.index)


# ---------------------------------------------------------------------------------------------- the job
def _remove_temporary_files(out_dir: Path) -> None:
    """Temporary files of runs that were killed mid-write (their rename never happened)."""
    for folder in (out_dir, out_dir / _SHARD_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _remove_stale_shards(out_dir: Path, keys: set[str]) -> None:
    """Shard files of examples the current input no longer holds (they are never read again)."""
    shard_dir = out_dir / _SHARD_DIR
    if not shard_dir.is_dir():
        return
    for path in shard_dir.glob("shard-*"):
        key = path.name[len("shard-") :].split(".", 1)[0]
        if key not in keys:
            path.unlink(missing_ok=True)


class FolderInUseError(FileExistsError):
    """Another explain run holds the output folder (its lock file exists and its process is alive)."""


class _JobLock:
    """One explain run at a time per output folder: a lock file created exclusively, holding the owner's
    host and process id; a lock whose process is gone (a killed run on this host) is taken over."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / ".lock"
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    owner = {}
                if owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                    self.path.unlink(missing_ok=True)  # left by a run that was killed
                    continue
                raise FolderInUseError(
                    f"Another explain run (process {owner.get('pid', '?')} on {owner.get('host', '?')}) is "
                    f"writing into {self.path.parent}: wait for it to finish, or use another output folder. "
                    f"If no such run exists, delete {self.path}."
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self.lock = _JobLock(self.out_dir)
        self.lock.acquire()
        _remove_temporary_files(self.out_dir)
        if self.overwrite and self.out_dir.exists():
            shutil.rmtree(self.out_dir / _SHARD_DIR, ignore_errors=True)
            job.unlink(missing_ok=True)
        if job.is_file():
            old = json.loads(job.read_text(encoding="utf-8"))
            if "shards" not in old:
                raise ValueError(
                    f"{self.out_dir} holds results of an older pi_lightning (shards numbered by a count): "
                    "use another output folder, or overwrite=True (--overwrite) to discard them."
                )
            keep = ("shard_size", "shards")
            differ = sorted(
                k
                for k in settings
                if k not in keep
                and old.get(k) != settings[k]
                and (k != "settings" or "settings" in old)  # older job.json: method_kwargs decide
            )
            if differ:
                raise ValueError(
                    f"{self.out_dir} holds results of another job "
                    f"({', '.join(f'{k}: {old.get(k)!r} there, {settings[k]!r} now' for k in differ)}). Use "
                    "another output folder, or overwrite=True (--overwrite) to discard them."
                )
            settings["shard_size"] = int(old["shard_size"])  # cut points stay those of the first run
        else:
            settings["shard_size"] = self.shard_size
        plan = plan_shards([r["id"] for r in self.rows], settings["shard_size"])
        groups = {k: [self.rows[i] for i in sorted(pos)] for k, pos in plan.items()}
        digests = {k: _digest(g) for k, g in groups.items()}
        settings["shards"] = digests  # the manifest: what load_results returns
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(job, json.dumps(settings, indent=1, default=repr))
        _remove_stale_shards(self.out_dir, set(digests))
        todo, skipped = [], 0
        for k in sorted(groups):
            if _finished(self.out_dir, k, digests[k], settings["format"]):
                skipped += 1
            else:
                todo.append({"shard": k, "digest": digests[k], "rows": groups[k]})
        return {"todo": todo, "skipped": skipped, "shards": len(groups)}

    def release(self) -> None:
        """Give up the folder's lock (rank zero, once the run ends, also when it fails)."""
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

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
        written: keys of the shards this process wrote in this run.
        is_global_zero: whether this is the rank-zero process (print and read results there).
        metrics: with ``metrics=True``, on rank zero, the faithfulness figures of the explained texts
            (``as_auc``, ``as_auc_ci``, ..., ``gap``, ``accuracy`` when labelled; also in
            ``metrics.json``); else ``None``.
    """

    out_dir: Path
    examples: int
    shards: int
    skipped: int
    written: list[str]
    is_global_zero: bool
    metrics: dict[str, float] | None = None


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
    metrics: bool | Sequence[str] = False,
    top_k: float = 20.0,
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
        shard_size: the most examples in one shard, fixed by the first run (one predict batch; the
            progress bar counts shards).
        format: ``"jsonl"`` or ``"parquet"`` (needs pyarrow).
        text_column, label_column, id_column, labels, label_names: see
            :func:`pi_lightning.data.load_examples` (``label_column=None``: ``"label"`` if present);
            the label mapping used is recorded in ``job.json`` (``label_names``).
        model_name: recorded in ``job.json`` (a rerun with another name is refused).
        metadata: more JSON-able facts recorded in ``job.json`` and checked on a rerun (e.g. the adapter).
        overwrite: discard earlier results in ``out_dir``.
        metrics: ``True`` (all) or a selection of ``as_auc``, ``ias_auc``, ``log_odds``,
            ``comprehensiveness``, ``sufficiency``: score the attributions of every explained text (on
            rank zero, after the run) into ``metrics.json`` and ``ExplainSummary.metrics``
            (:func:`score_results`).
        top_k: percentage of features for the removal metrics.
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
        >>> [r.features for r in load_results(out)]
        [['a', 'good', 'movie'], ['dull', 'plot']]
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown output format {format!r}: expected one of {', '.join(FORMATS)}.")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int (examples per shard), got {shard_size!r}.")
    method_kwargs = dict(method_kwargs or {})
    if max_tokens is not None:
        method_kwargs["max_tokens"] = max_tokens
    if metrics is not False:  # settings checked before the run
        from pi_lightning.metrics import ProbeEvaluator

        ProbeEvaluator.check_settings(metrics=None if metrics is True else metrics, top_k=top_k)
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
        # every setting, defaults filled in: what load_attributor rebuilds the attributor from
        "settings": json.loads(json.dumps(resolve_method_settings(method, method_kwargs), default=repr)),
        "target": target,
        "model": name,
        "weights": weights_digest(model),
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
    try:
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
        figures = None
        if metrics is not False and trainer.is_global_zero:
            record = score_results(
                out_dir,
                module.attributor or load_attributor(out_dir, model, tokenizer),
                metrics=None if metrics is True else metrics,
                top_k=top_k,
            )
            figures = record.metrics
    finally:
        datamodule.release()
    return ExplainSummary(
        out_dir=Path(out_dir),
        examples=len(rows),
        shards=datamodule.plan["shards"],
        skipped=datamodule.plan["skipped"],
        written=list(writer.written),
        is_global_zero=trainer.is_global_zero,
        metrics=figures,
    )


def score_results(
    out_dir: str | Path,
    attributor,
    *,
    metrics: Sequence[str] | None = None,
    top_k: float = 20.0,
    chunk: int = 32,
):
    """Score the faithfulness of an explain job's attributions with
    :class:`~pi_lightning.metrics.ProbeEvaluator` and write ``metrics.json``; returns the
    :class:`~pi_lightning.metrics.ProbeEvaluation`.

    The rows' attributions are rebuilt on the job's features (the texts featurized again by
    ``attributor``, which must give the rows' features: the job's attributor, see
    :func:`load_attributor`); the masked passes run on ``attributor``'s model. ``metrics.json`` holds
    ``method``, ``examples``, ``settings``, ``metrics`` (means, 95% half-widths, accuracy when every
    example has a label), ``curves`` (mean AS/IAS curves) and ``per_example`` (``id`` and each metric's
    value, in the rows' order).
    """
    from pi_lightning.metrics import ProbeEvaluator
    from pi_lightning.result import Attribution

    rows = load_results(out_dir)
    if not rows:
        raise ValueError(f"{out_dir} holds no finished results to score: run the explain job first.")
    feats = attributor.featurize([r.text for r in rows])
    attributions = []
    for r, f in zip(rows, feats, strict=True):
        if list(f.texts) != list(r.features):
            raise ValueError(
                f"Example {r.id!r} of {out_dir}: the attributor gives the features {list(f.texts)[:8]}, "
                f"the job's rows {list(r.features)[:8]}; score it with the job's attributor "
                "(pi_lightning.jobs.load_attributor)."
            )
        attributions.append(
            Attribution(
                scores=torch.tensor(r.scores, dtype=torch.float64),
                features=f,
                target=int(r.target),
                method=r.method,
                output=r.output,
                base_value=r.base_value,
                probs=torch.tensor(r.probs, dtype=torch.float64),
                forward_passes=r.forward_passes,
                settings=dict(r.settings or {}),
            )
        )
    labels = [r.label for r in rows]
    labelled = all(y is not None for y in labels)
    evaluator = ProbeEvaluator(attributor, target="predicted", metrics=metrics, top_k=top_k, chunk=chunk)
    evaluator.update(attributions=attributions, labels=labels if labelled else None)
    record = evaluator.compute()
    out = {
        "method": attributor.name,
        "examples": len(rows),
        "settings": json.loads(json.dumps(attributor.settings, default=repr)),
        "top_k": evaluator.top_k,
        "metrics": record.metrics,
        "curves": record.curves,
        "per_example": {
            "id": [r.id for r in rows],
            **{
                m: evaluator.values(m)
                for m in (*evaluator.metrics, *(("gap",) if record.gap[0] is not None else ()))
            },
        },
    }
    write_atomic(Path(out_dir) / METRICS_FILE, json.dumps(out, indent=1))
    return record
