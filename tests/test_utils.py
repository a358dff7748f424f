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


def test_every_attributor_documents_its_constructor():
    """help(pi_lightning.SPPI) and friends explain every constructor argument, shared ones included."""
    from pi_lightning.attributors.base import _REGISTRY, available_methods

    available_methods()
    for cls in _REGISTRY.values():
        names = [n for n, p in inspect.signature(cls).parameters.items() if p.kind != p.VAR_KEYWORD]
        names += ["granularity", "template", "mask", "output", "max_tokens"]
        missing = [n for n in names if f"{n}:" not in cls.__doc__ and f"{n}," not in cls.__doc__]
        assert not missing, f"{cls.__name__} does not document {missing}"
