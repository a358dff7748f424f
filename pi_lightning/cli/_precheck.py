"""Checks that run before a subcommand's module is imported (Lightning, transformers: seconds on a
small CPU), so that a typo in a name given on the command line fails at once, in one line, and the
one way every subcommand answers a user mistake (:func:`one_line`).

Only values given on the command line are read here; the subcommand checks the fully parsed
configuration (YAML included) again before it instantiates anything.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["USER_ERRORS", "finetune", "one_line", "positive"]

#: What a user mistake raises: a bad value or name (``ValueError``: ``DataSourceError``,
#: ``ModelNotFoundError`` and the library's argument checks), a missing or locked file, a missing
#: optional package. Answered in one line, exit status 2; ``--debug`` shows the traceback instead.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, ImportError)


def one_line(name: str, run: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run a subcommand's ``run(argv)``; a user mistake (:data:`USER_ERRORS`) is printed as
    ``pi-lightning NAME: error: ...`` on one line (exit status 2), with the same wording whichever
    subcommand meets it, unless ``--debug`` is in ``argv`` (then the traceback is shown).

    Example:
        >>> def run(argv):
        ...     raise ValueError("template must contain exactly one '{text}' placeholder")
        >>> one_line("explain", run, [])  # doctest: +SKIP
        2
    """
    global _debug
    outer = _debug
    _debug = outer or "--debug" in argv  # a subcommand run by the dispatcher sees the dispatcher's flag
    try:
        return int(run([a for a in argv if a != "--debug"]) or 0)
    except USER_ERRORS as e:
        if _debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"pi-lightning {name}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        _debug = outer


_debug = False


def positive(name: str, value, minimum: int = 1) -> None:
    """Raise the one message for a count option below ``minimum`` (``--limit 0``, ``--shard-size -1``)."""
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")


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
    template = _given(argv, "--data.template")
    if template is not None:
        from pi_lightning.features import check_template

        check_template(template)
