"""Reporting: what the callbacks show to people, and how it reaches the loggers.

* :mod:`pi_lightning.reporting.page`: the one page skeleton and stylesheet, HTML tables, and the one
  way a class is named (:func:`label_name`);
* :mod:`pi_lightning.reporting.html`: highlighted text (:func:`highlight`, an attribution in a notebook
  or a page: :func:`attribution_html`), HTML tables and the static report of
  explanation quality over training (:func:`write_report`, :func:`write_report_from_checkpoint`);
* :mod:`pi_lightning.reporting.logging`: scalars and rich media to the Trainer's loggers (W&B
  tables and media, or HTML files), on rank zero, never stopping training on a logging failure.
"""

from pi_lightning.reporting.html import (
    attribution_html,
    explained_method,
    highlight,
    write_report,
    write_report_from_checkpoint,
)
from pi_lightning.reporting.page import label_name, page

__all__ = [
    "attribution_html",
    "explained_method",
    "highlight",
    "label_name",
    "page",
    "write_report",
    "write_report_from_checkpoint",
]
