"""Shared callback helpers built on library calls: Spearman drift (scipy), HTML cells with their plain
text; and the attributors' documented settings."""

from __future__ import annotations

import inspect

import pytest
import torch

from pi_lightning.metrics.evaluator import rank_correlation
from pi_lightning.reporting.html import HtmlCell


def test_rank_corr_known_answers():
    a = torch.tensor([0.1, 0.5, 0.5, 0.2])
    # average ranks: a -> 1, 3.5, 3.5, 2 ; b -> 1, 4, 2.5, 2.5 ; Pearson of the ranks = 0.8333...
    assert rank_correlation(a, torch.tensor([1.0, 3.0, 2.0, 2.0])) == pytest.approx(5 / 6)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, torch.ones(4)) is None  # constant: undefined, skipped in the drift mean
    assert rank_correlation(torch.tensor([1.0]), torch.tensor([2.0])) is None


def test_html_cell_plain_text():
    cell = HtmlCell("<span style='x'><span title='+0.5000'>it&#x27;s</span> &lt;good&gt;</span>")
    assert cell.text == "it's <good>" and str(cell) == cell.html
    assert HtmlCell("<b>x</b>", text="y").text == "y"


def _real_defaults(cls) -> dict:
    """Every constructor keyword of an attributor class with its real default, through the parents'
    ``**kwargs`` (the class's own signature wins)."""
    out: dict = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        for p in params:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                out.setdefault(p.name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params) or klass.__name__ == "Attributor":
            break
    return out


def _documented_args(doc: str) -> dict[str, str]:
    """``name: text`` entries of a Google-style docstring (continuation lines joined); an entry for
    ``a, b, c: text`` gives each name the text."""
    import re

    entries: dict[str, str] = {}
    current: list[str] = []
    for line in doc.splitlines():
        m = re.match(r"^ {8}(\w+(?:, \w+)*): (.*)$", line)
        if m:
            current = m.group(1).split(", ")
            for name in current:
                entries.setdefault(name, m.group(2))
        elif current and re.match(r"^ {12}\S", line):
            for name in current:
                entries[name] += " " + line.strip()
        else:
            current = []
    return entries


def _stated_default(text: str):
    """The default an entry states (``(default X)``, ``X (default)``, ``X default``), or a marker."""
    import ast
    import re

    for pattern in (
        r"\(default ``(.+?)``",
        r"``([^`]+)`` \(default\)",
        r"\(``([^`]+)`` default\b",
        r"\(default (-?[\w.]+)[;,)]",
    ):
        m = re.search(pattern, text)
        if m:
            try:
                return ast.literal_eval(m.group(1))
            except (ValueError, SyntaxError):
                return m.group(1)
    return _stated_default


def test_attributor_docstrings_state_the_real_defaults():
    """help(pi_lightning.SPPI) and friends document every constructor argument, shared ones included,
    and every default a docstring states is the default of the real signature (the injected shared
    help once said the mask default was "..." while the code's was "remove")."""
    from pi_lightning.attributors.base import _REGISTRY, available_methods

    available_methods()
    shared = {"granularity", "template", "mask", "output", "max_tokens"}
    for cls in _REGISTRY.values():
        checked = set()
        real = _real_defaults(cls)
        documented = _documented_args(cls.__doc__)
        missing = [n for n in real if n not in documented]
        assert not missing, f"{cls.__name__} does not document {missing}"
        for name, text in documented.items():
            if name not in real:
                continue
            stated = _stated_default(text)
            if stated is _stated_default:
                continue
            checked.add(name)
            assert stated == real[name], (
                f"{cls.__name__}.{name}: the docstring says the default is {stated!r}, "
                f"the signature's is {real[name]!r}"
            )
        # The injected help states every shared setting's default (the check above compared them).
        if "Settings shared by every attributor" in cls.__doc__:
            assert shared <= checked, f"{cls.__name__}: no stated default for {shared - checked}"


def test_attributions_display_inline_in_a_notebook(gpt2_model, gpt2_tok):
    """An Attribution shows its highlighted text in Jupyter (_repr_html_); show() does a list at once.
    Known answer: one coloured span per feature, titled with its score, green for the positive ones."""
    import re

    from pi_lightning.attributors import SPPI
    from pi_lightning.reporting import show

    atts = SPPI(gpt2_model, gpt2_tok).attribute(["a good movie", "the plot was dull"], target=1)
    page = atts[0]._repr_html_()
    titles = [float(t) for t in re.findall(r"<span title='([^']*)'", page)]
    assert titles == pytest.approx(atts[0].scores.tolist(), abs=5e-5)
    words = re.findall(r"<span title='[^']*' style='background:rgba\(([\d,]+),[^']*'>([^<]*)</span>", page)
    assert [w for _, w in words] == list(atts[0].features.texts)
    for (rgb, _), s in zip(words, atts[0].scores.tolist(), strict=True):
        assert rgb == ("34,160,70" if s >= 0 else "215,48,39")
    assert "<b>sp-pi</b> · predicted <b>" in page and "· explains <b>1</b>" in page
    both = show(atts)._repr_html_()
    assert page in both and atts[1]._repr_html_() in both
    assert show(atts[0])._repr_html_() == show([atts[0]])._repr_html_()
