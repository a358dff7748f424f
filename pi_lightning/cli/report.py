"""``pi-lightning report``: build the HTML report from a run's output folder or a Lightning checkpoint.

The :class:`~pi_lightning.callbacks.AttributionMonitor` callbacks keep their whole history (every
evaluation's figures and probe attributions) in their state. :class:`~pi_lightning.callbacks.HTMLReport`
saves that state beside the report (``report_state.pt``, which the default job writes under
``outputs/finetune/pi_lightning/``), and Lightning checkpoints hold it too, so the report of a run can be
made again later::

    pi-lightning report outputs/finetune                     # the default job's output folder
    pi-lightning report outputs/finetune/checkpoints/last.ckpt -o report.html
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["find_state", "main"]

#: The state file :class:`~pi_lightning.callbacks.HTMLReport` saves beside its report (its
#: ``REPORT_STATE``; repeated here so that ``--help`` does not import Lightning; a test checks they agree).
REPORT_STATE = "report_state.pt"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pi-lightning report",
        description="Write the self-contained HTML report (AUC over training, each probe example "
        "highlighted at the first and last evaluation) from the AttributionMonitor state of a run: the "
        f"{REPORT_STATE} that HTMLReport saves beside its report (the default job does), or a Lightning "
        "checkpoint (trained with --trainer.enable_checkpointing true or a ModelCheckpoint callback).",
    )
    p.add_argument(
        "checkpoint",
        type=Path,
        help=f"a run's output folder (searched for {REPORT_STATE}, then for .ckpt files; the newest "
        f"is used), a {REPORT_STATE} file or a Lightning .ckpt file",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="the HTML file to write (default: the state file's path with .html)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Returns 0 and prints the written path; a missing or unusable checkpoint is one line, status 2."""
    from pi_lightning.cli._precheck import one_line

    return one_line("report", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    source = args.checkpoint
    if source.is_dir():
        found = find_state(source)
        if found is None:
            print(
                f"pi-lightning report: error: no {REPORT_STATE} and no .ckpt file under {source}. A run "
                f"with the HTMLReport callback (the default job has it) saves {REPORT_STATE} beside its "
                "report; for a checkpoint, train with --trainer.enable_checkpointing true.",
                file=sys.stderr,
            )
            return 2
        source = found
    elif not source.is_file():
        print(f"pi-lightning report: error: no such checkpoint file: {source}", file=sys.stderr)
        return 2
    from pi_lightning.reporting import write_report_from_checkpoint

    out = args.output or source.with_suffix(".html")
    try:
        written = write_report_from_checkpoint(source, out)
    except ValueError as e:
        print(f"pi-lightning report: error: {e}", file=sys.stderr)
        return 2
    print(f"HTML report: {written}")
    return 0


def find_state(folder: Path) -> Path | None:
    """The newest :data:`REPORT_STATE` under ``folder``, else its newest ``.ckpt`` file, else None."""
    for pattern in (REPORT_STATE, "*.ckpt"):
        found = sorted(folder.rglob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


if __name__ == "__main__":
    sys.exit(main())
