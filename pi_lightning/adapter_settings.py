"""The settings a fine-tuned adapter was trained with, saved beside it and read back by the jobs.

A classifier fine-tuned on ``"Review: {text}"`` and explained with ``"{text}"`` (or another label
order, or another mask) is a different model in all but name: its predictions, and so its
explanations, change. ``pi-lightning finetune`` therefore writes ``pi_lightning.json`` into the
adapter folder (:func:`write_adapter_settings`): the input template, the class names, the mask and
the granularity the run's monitors used, and the base model. ``pi-lightning explain`` and
``pi-lightning shortcuts`` read it (:func:`read_adapter_settings`) and use its values by default;
an explicit value that differs is refused unless the user says so (:func:`resolve_settings`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SETTINGS_FILE", "read_adapter_settings", "resolve_settings", "write_adapter_settings"]

#: The file written into the adapter folder.
SETTINGS_FILE = "pi_lightning.json"

#: The settings that must agree between training and explaining.
KEYS = ("template", "label_names", "mask")


def write_adapter_settings(
    folder: str | Path,
    *,
    template: str,
    label_names: Sequence[str] | None,
    mask: str | int | None = "remove",
    granularity: str | None = None,
    model_name: str | None = None,
) -> Path:
    """Write ``folder/pi_lightning.json``; returns its path.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> p = write_adapter_settings(d, template="Review: {text}", label_names=["neg", "pos"])
        >>> read_adapter_settings(d)["template"]
        'Review: {text}'
    """
    path = Path(folder) / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "template": template,
        "label_names": None if label_names is None else list(label_names),
        "mask": "remove" if mask is None else mask,
        "granularity": granularity,
        "model_name": model_name,
    }
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def read_adapter_settings(folder: str | Path | None) -> dict[str, Any] | None:
    """The settings saved beside an adapter (``None`` without a folder or a settings file).

    Raises:
        ValueError: the file exists but is not a JSON object.
    """
    if folder is None:
        return None
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); delete it or rewrite it with pi-lightning finetune."
        ) from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object, got {type(data).__name__}.")
    return data


def resolve_settings(
    saved: Mapping[str, Any] | None,
    given: Mapping[str, Any],
    *,
    allow_mismatch: bool = False,
    where: str = "the adapter",
    flag: str = "--ignore-adapter-settings",
) -> dict[str, Any]:
    """The settings to use: the user's where given (not ``None``), else the saved ones.

    Args:
        saved: :func:`read_adapter_settings`'s dict (``None``: nothing saved, the given ones are used).
        given: the user's values, ``None`` where not given.
        allow_mismatch: use the given values even where they differ from the saved ones.
        where, flag: named in the error message.

    Raises:
        ValueError: a given value differs from the saved one and ``allow_mismatch`` is false.

    Example:
        >>> resolve_settings({"template": "Review: {text}"}, {"template": None})["template"]
        'Review: {text}'
        >>> resolve_settings({"template": "Review: {text}"}, {"template": "{text}"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: The template '{text}' differs from the one the adapter was trained with ...
    """
    out = dict(given)
    for key, value in given.items():
        old = None if saved is None else saved.get(key)
        if value is None:
            out[key] = old
        elif old is not None and _norm(value) != _norm(old) and not allow_mismatch:
            raise ValueError(
                f"The {key.replace('_', ' ')} {value!r} differs from the one {where} was trained with "
                f"({old!r}): drop the option to use the saved one, or pass {flag} to override it."
            )
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if value is None or value == "remove":
        return "remove"
    return value
