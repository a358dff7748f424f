"""Checks that run before a subcommand's module is imported (Lightning, transformers: seconds on a
small CPU), so that a typo in a name given on the command line fails at once, in one line.

Only values given on the command line are read here; the subcommand checks the fully parsed
configuration (YAML included) again before it instantiates anything.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["finetune"]


def _given(argv: list[str], key: str) -> str | None:
    """The last value of ``--key value`` or ``--key=value`` in ``argv``.

    Example:
        >>> _given(["--a", "1", "--a=2", "--b", "3"], "--a")
        '2'
    """
    value = None
    for i, arg in enumerate(argv):
        if arg == key and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(key + "="):
            value = arg.split("=", 1)[1]
    return value


def finetune(argv: list[str]) -> None:
    """Raise ``ModelNotFoundError`` / ``DataSourceError`` for a model name or a data file given on the
    command line that cannot be used."""
    from pi_lightning.data import check_data_source
    from pi_lightning.models import resolve_model_name

    model = _given(argv, "--model.model_name")
    if model is not None:
        resolve_model_name(model)
    dataset = _given(argv, "--data.dataset")
    if dataset is not None and not Path(dataset).is_file():
        check_data_source(dataset)  # a built-in name whose package is installed, or the one-line error
