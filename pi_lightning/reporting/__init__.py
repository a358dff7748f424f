"""Reporting: everything pi_lightning shows to people (pages, styles, terminal tables, label names)
and every call to W&B. Callbacks, jobs and the CLI hand it records; it returns text or logs it.

* :mod:`pi_lightning.reporting.page`: the one page skeleton and stylesheet, HTML tables, and the one
  way a class is named (:func:`label_name`);
* :mod:`pi_lightning.reporting.html`: highlighted text (:func:`highlight`; one attribution in a
  notebook or a page: :func:`attribution_html`), the callbacks' table pages and the static report of
  explanation quality over training (:func:`write_report`, :func:`write_report_from_checkpoint`);
* :mod:`pi_lightning.reporting.change`: what changed since the baseline, in words;
* :mod:`pi_lightning.reporting.shortcuts`: significant words over training, and the shortcut mining
  job's table, page and columns;
* :mod:`pi_lightning.reporting.explanations`: the explain job's rows as a terminal table and a page;
* :mod:`pi_lightning.reporting.logging`: scalars and rich media to the Trainer's loggers (W&B
  tables and media, or HTML files), on rank zero, never stopping training on a logging failure, and
  a job's table to a W&B run of its own.
"""

from pi_lightning.reporting.html import (
    attribution_html,
    explained_method,
    highlight,
    show,
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
    "show",
    "write_report",
    "write_report_from_checkpoint",
]
