"""The shared pieces of every page and table pi_lightning shows: one page skeleton, one stylesheet, one
HTML table, one way to print a number and one way to name a class.

Every HTML file (the training report, the callbacks' table pages, ``pi-lightning explain``'s
``explanations.html``, ``pi-lightning shortcuts``' ``shortcuts.html``) is :func:`page` around its
body, so the pages look alike and a style is changed in one place (:data:`STYLESHEET`). Text that
reaches a page is escaped here (:func:`html_table`) unless it is an :class:`HtmlCell` (HTML that
pi_lightning built, e.g. highlighted text).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["STYLESHEET", "HtmlCell", "format_value", "html_table", "label_name", "page"]

#: The one stylesheet. ``.m``: a muted note; ``.num``: a number (right-aligned, tabular digits);
#: ``tr.sig``: a highlighted row (a significant word); ``.ex``: an indented example.
STYLESHEET = (
    "body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;padding:0 1em;max-width:1200px;"
    "color:#222}h1{font-weight:600}table{border-collapse:collapse;width:100%}"
    "td,th{border-bottom:1px solid #e4e4e4;padding:6px 8px;vertical-align:top;text-align:left}"
    "th{background:#fafafa}.m{color:#666;font-size:90%}.num{font-variant-numeric:tabular-nums;"
    "text-align:right}tr.sig td{background:#fff4e0}.ex{margin:.3em 0 .3em 1em}"
)


def page(title: str, *body: str, heading: str | None = None) -> str:
    """A standalone HTML page: the skeleton (doctype, UTF-8, ``title``, :data:`STYLESHEET`), a heading
    (``heading``, by default the title; ``""``: none) and ``body`` (HTML, as given).

    Example:
        >>> p = page("a < b", "<p>hi</p>")
        >>> "<title>a &lt; b</title>" in p, p.endswith("<h1>a &lt; b</h1><p>hi</p>")
        (True, True)
    """
    h = title if heading is None else heading
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLESHEET}</style>" + (f"<h1>{html.escape(h)}</h1>" if h else "") + "".join(body)
    )


class HtmlCell:
    """A table cell that holds HTML (``wandb.Html`` media in W&B, raw in HTML files) and its plain
    text (``text``; by default the HTML with its tags removed), which W&B tables show.

    Example:
        >>> HtmlCell("<span title='+0.5'>good</span> &amp; <b>fun</b>").text
        'good & fun'
    """

    def __init__(self, html_text: str, text: str | None = None) -> None:
        self.html = html_text
        self.text = text if text is not None else html.unescape(re.sub(r"<[^>]*>", "", html_text))

    def __str__(self) -> str:
        return self.html

    def _repr_html_(self) -> str:  # Jupyter shows the HTML itself
        return self.html


def format_value(v: Any, missing: str = "-") -> str:
    """A cell's text: ``missing`` for ``None`` or NaN, floats with 4 decimals (3 significant digits
    below 1e-3, so a small q value stays readable), everything else as ``str``.

    Example:
        >>> format_value(0.12345), format_value(2.5e-07), format_value(None), format_value(3)
        ('0.1235', '2.5e-07', '-', '3')
    """
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    if isinstance(v, float):
        return f"{v:.3g}" if v != 0 and abs(v) < 1e-3 else f"{v:.4f}"
    return str(v)


def html_table(
    cols: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    row_class: Callable[[Sequence[Any]], str | None] | None = None,
    fmt: Callable[[Any], str] = format_value,
) -> str:
    """An HTML table: ``cols`` as the header, one row per ``rows`` item. Cells are escaped text
    (``fmt``), numbers right-aligned, except :class:`HtmlCell` cells (their HTML, as built).

    Args:
        row_class: the CSS class of a row (e.g. ``"sig"``), or ``None``.

    Example:
        >>> html_table(["word", "z"], [["<b>", 2.0]], row_class=lambda r: "sig")[39:]
        "<tr class='sig'><td>&lt;b&gt;</td><td class='num'>2.0000</td></tr></table>"
    """

    def cell(c: Any) -> str:
        if isinstance(c, HtmlCell):
            return f"<td>{c.html}</td>"
        num = isinstance(c, (int, float)) and not isinstance(c, bool)
        return ("<td class='num'>" if num else "<td>") + html.escape(fmt(c)) + "</td>"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cls = row_class(r) if row_class is not None else None
        tr = f"<tr class='{html.escape(cls)}'>" if cls else "<tr>"
        body.append(tr + "".join(cell(c) for c in r) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def label_name(c: Any, names: Sequence[str] | None = None, missing: str = "") -> str:
    """The display name of class ``c``: ``names[c]`` when there is one, else ``str(c)``; ``missing``
    when ``c`` is ``None`` (no label, no prediction).

    Example:
        >>> label_name(1, ["negative", "positive"]), label_name(2, ["negative", "positive"]), label_name(None)
        ('positive', '2', '')
    """
    if c is None:
        return missing
    if names is not None and not isinstance(c, bool) and isinstance(c, int) and 0 <= c < len(names):
        return str(names[c])
    return str(c)
