"""The ``pi-lightning`` console command: one entry point, one module per subcommand.

``pi-lightning <subcommand> [options]`` imports the subcommand's module lazily (so ``--help`` is
instant) and calls its ``main(argv) -> int``; each module owns its own parsing (LightningCLI for
``finetune``, argparse otherwise). To add a subcommand, add one line to :data:`_SUBCOMMANDS`.

Example:
    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: pi-lightning <subcommand> [options]
    ...
    0
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main"]

#: subcommand name -> (module with ``main(argv: list[str]) -> int``, one-line help)
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "finetune": (
        "pi_lightning.cli.finetune",
        "fine-tune a classifier with the pi_lightning callbacks (the main job; LightningCLI, --fast)",
    ),
    "report": (
        "pi_lightning.cli.report",
        "build the HTML report from a run's output folder or a Lightning checkpoint",
    ),
    "explain": (
        "pi_lightning.cli.explain",
        "explain texts or a dataset with any method (Trainer.predict; table, HTML, JSONL shards)",
    ),
    "shortcuts": (
        "pi_lightning.cli.shortcuts",
        "mine shortcut words from explained datasets (permutation null, masking check)",
    ),
}
#: subcommand name -> its short ``--help`` (``module:function(argv) -> str``), printed without importing the
#: subcommand's module (Lightning: seconds); ``--help-all`` goes to the module's own full help.
_SHORT_HELP: dict[str, str] = {"finetune": "pi_lightning.cli._job_help:finetune_help"}
#: subcommand name -> a light check of its command line, run before its module is imported: it raises
#: ``ModelNotFoundError`` / ``DataSourceError`` / ``ValueError`` (printed as one line, exit status 2).
_PRECHECKS: dict[str, str] = {"finetune": "pi_lightning.cli._precheck:finetune"}


def _usage() -> str:
    width = max(len(name) for name in _SUBCOMMANDS)
    lines = [
        "usage: pi-lightning <subcommand> [options]",
        "",
        "Progressive Inference attributions for decoder-only classifiers, during training.",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<{width}}  {help_line}" for name, (_, help_line) in _SUBCOMMANDS.items()]
    lines += [
        "",
        "Run 'pi-lightning <subcommand> --help' for its options. A mistake is answered in one line;",
        "add --debug to any subcommand to see the traceback instead.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from pi_lightning import __version__

        print(f"pi-lightning {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in _SUBCOMMANDS:
        print(
            f"pi-lightning: unknown subcommand {name!r}; expected one of {', '.join(_SUBCOMMANDS)}. "
            "Run 'pi-lightning --help'.",
            file=sys.stderr,
        )
        return 2
    from pi_lightning.cli._precheck import one_line

    def run(argv: list[str]) -> int:
        if name in _SHORT_HELP and ("-h" in argv or "--help" in argv):
            module_name, func = _SHORT_HELP[name].split(":")
            print(getattr(importlib.import_module(module_name), func)(argv))
            return 0
        if name in _PRECHECKS:
            module_name, func = _PRECHECKS[name].split(":")
            getattr(importlib.import_module(module_name), func)(argv)
        return int(importlib.import_module(_SUBCOMMANDS[name][0]).main(argv) or 0)

    # a user mistake is one line, the same for every subcommand; --debug shows the traceback
    return one_line(name, run, rest)


if __name__ == "__main__":  # python -m pi_lightning.cli
    sys.exit(main())
