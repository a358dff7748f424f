"""``pi-lightning report``: build the HTML report from a Lightning checkpoint.

The :class:`~pi_lightning.callbacks.AttributionMonitor` callbacks keep their whole history (every
evaluation's figures and probe attributions) in the checkpoint, so the report of a run can be made
again later, or for a run that stopped before :class:`~pi_lightning.callbacks.HTMLReport` wrote it::

    pi-lightning report outputs/finetune/checkpoints/last.ckpt -o report.html
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pi-lightning report",
        description="Write the self-contained HTML report (AUC over training, each probe example "
        "highlighted at the first and last evaluation) from the AttributionMonitor state saved in a "
        "Lightning checkpoint (trained with enable_checkpointing or a ModelCheckpoint callback).",
    )
    p.add_argument("checkpoint", type=Path, help="a Lightning .ckpt file")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="the HTML file to write (default: the checkpoint's path with .html)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Returns 0 and prints the written path; a missing or unusable checkpoint is one line, status 2."""
    from pi_lightning.cli._precheck import one_line

    return one_line("report", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"pi-lightning report: error: no such checkpoint file: {args.checkpoint}", file=sys.stderr)
        return 2
    from pi_lightning.reporting import write_report_from_checkpoint

    out = args.output or args.checkpoint.with_suffix(".html")
    try:
        written = write_report_from_checkpoint(args.checkpoint, out)
    except ValueError as e:
        print(f"pi-lightning report: error: {e}", file=sys.stderr)
        return 2
    print(f"HTML report: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
