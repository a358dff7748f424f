"""Arguments that were renamed: one clear error that names the new name.

The house keeps no aliases (two public names for one setting), so an old name passed by a user is an
error, never silently accepted; this module makes that error say what to pass instead. Attributor
settings go through :func:`~pi_lightning.attributors.base.check_method_kwargs`, which uses the same
message; functions and constructors with a fixed signature use :func:`renamed`.
"""

from __future__ import annotations

import functools

__all__ = ["renamed", "renamed_error"]


def renamed_error(owner: str, old: str, new: str) -> ValueError:
    """The error for an argument ``old`` of ``owner`` that is now called ``new``."""
    return ValueError(f"Argument {old!r} of {owner} is now called {new!r}: pass {new}=... instead.")


def renamed(**old_to_new: str):
    """Decorator: a call that passes an old keyword name raises :func:`renamed_error` (the signature,
    which ``inspect.signature`` and LightningCLI read, is the wrapped function's).

    Example:
        >>> @renamed(fractions="points")
        ... def curve(points=None):
        ...     return points
        >>> curve(fractions=11)
        Traceback (most recent call last):
        ...
        ValueError: Argument 'fractions' of curve is now called 'points': pass points=... instead.
    """

    def wrap(fn):
        owner = fn.__qualname__.removesuffix(".__init__")

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    raise renamed_error(owner, old, new)
            return fn(*args, **kwargs)

        return inner

    return wrap
