"""Reporting: what the callbacks show to people, and how it reaches the loggers.

* :mod:`pi_lightning.reporting.html`: highlighted text, HTML tables and the static report of
  explanation quality over training (:func:`write_report`, :func:`write_report_from_checkpoint`);
* :mod:`pi_lightning.reporting.logging`: scalars and rich media to the Trainer's loggers (W&B
  tables and media, or HTML files), on rank zero, never stopping training on a logging failure.
"""

from pi_lightning.reporting.html import (
    explained_method,
    highlight,
    show,
    write_report,
    write_report_from_checkpoint,
)

__all__ = ["explained_method", "highlight", "show", "write_report", "write_report_from_checkpoint"]
