"""The shared reporting pieces, by known answers: the page skeleton and stylesheet, the escaped HTML
table, the label name, the word normaliser, an attribution in HTML, the explanation and shortcut pages
and terminal tables, and the W&B table of a job."""

from __future__ import annotations

import html
import re

import pytest
import torch

from pi_lightning.features import Featurizer, normalize_word
from pi_lightning.jobs import ExplainRow, ShortcutReport
from pi_lightning.reporting import attribution_html, highlight, label_name, page
from pi_lightning.reporting.explanations import explanations_page, explanations_text
from pi_lightning.reporting.html import table_page
from pi_lightning.reporting.page import STYLESHEET, HtmlCell, format_value, html_table
from pi_lightning.reporting.shortcuts import (
    SHORTCUT_COLUMNS,
    shortcut_columns,
    shortcut_examples,
    shortcuts_page,
    shortcuts_text,
)
from pi_lightning.result import Attribution


def _text(page_html: str) -> str:
    """What a reader sees: the page without tags, unescaped, whitespace squeezed."""
    body = re.sub(r"<style>.*?</style>|<title>.*?</title>", "", page_html, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", body)).split())


def test_page_skeleton_and_stylesheet():
    p = page("a <b> & c", "<p>x</p>")
    assert p == (
        "<!doctype html><meta charset='utf-8'><title>a &lt;b&gt; &amp; c</title>"
        f"<style>{STYLESHEET}</style><h1>a &lt;b&gt; &amp; c</h1><p>x</p>"
    )
    assert page("t", "<p>x</p>", heading="").endswith("</style><p>x</p>")
    assert page("t", heading="<i>").endswith("<h1>&lt;i&gt;</h1>")
    for rule in ("border-collapse:collapse", "tr.sig td{", ".num{", ".m{", ".ex{"):  # every page's classes
        assert rule in STYLESHEET


def test_html_table_escapes_text_keeps_html_cells_and_marks_numbers():
    t = html_table(
        ["w<", "n"], [["<script>", 1e-5], [HtmlCell("<b>ok</b>"), None], [True, 2]], row_class=lambda r: None
    )
    assert t == (
        "<table><tr><th>w&lt;</th><th>n</th></tr>"
        "<tr><td>&lt;script&gt;</td><td class='num'>1e-05</td></tr>"
        "<tr><td><b>ok</b></td><td>-</td></tr>"
        "<tr><td>True</td><td class='num'>2</td></tr></table>"
    )
    assert [format_value(v) for v in (0.0, 0.5, float("nan"), "x")] == ["0.0000", "0.5000", "-", "x"]
    tp = table_page("T", ["a"], [[HtmlCell("<i>h</i>")]])
    assert tp.startswith("<!doctype html>") and "<td><i>h</i></td>" in tp and "<h1>T</h1>" in tp


def test_label_name():
    names = ["negative", "positive"]
    assert [label_name(c, names) for c in (0, 1, 2, -1, None)] == ["negative", "positive", "2", "-1", ""]
    assert label_name(None, names, "-") == "-" and label_name(1) == "1" and label_name("x", names) == "x"


def test_normalize_word():
    assert [normalize_word(w) for w in (" The", "DVD", "[", "great,")] == ["the", "dvd", "[", "great,"]
    got = [normalize_word(w, punctuation=False) for w in ("Great,", "(don't)", "...", "_x_")]
    assert got == ["great", "don't", "", "x"]


def test_attribution_html_escapes_and_names_the_classes(gpt2_tok):
    f = Featurizer(gpt2_tok)("a <b>good</b> film")
    scores = torch.linspace(-1, 1, f.n, dtype=torch.float64)
    a = Attribution(scores, f, target=0, method="mp-pi", probs=torch.tensor([0.7, 0.3]))
    h = attribution_html(a, ["neg", "pos"])
    assert "<b>mp-pi</b> · predicted <b>neg</b> · explains <b>neg</b>" in h
    assert "<b>good</b>" not in h.split("</div>", 1)[1]  # the text's own tags are escaped
    assert highlight(f.text, f.char_spans, scores.tolist()) in h
    assert HtmlCell(h.split("</div>", 1)[1].split("<div")[0]).text == "a <b>good</b> film"
    nameless = attribution_html(Attribution(scores, f, target=1, method="sp-pi"))
    assert "predicted" not in nameless and "explains <b>1</b>" in nameless


def _row(i, text, spans, scores, **kw):
    return ExplainRow(
        id=str(i),
        index=i,
        text=text,
        features=[text[a:b] for a, b in spans],
        char_spans=[list(s) for s in spans],
        scores=scores,
        **{"target": 1, "prediction": 1, "probs": [0.25, 0.75], "label": 0, **kw},
    )


def test_explanation_page_and_text_hold_every_row():
    rows = [
        _row(0, "a <great> film", [(0, 1), (2, 9), (10, 14)], [0.1, 0.6, -0.2]),
        _row(1, "dull & slow", [(0, 4), (5, 6), (7, 11)], [-0.5, 0.0, -0.1], label=None, target=0),
    ]
    p = explanations_page(rows, ["neg", "pos"], "sp-pi explanations of m")
    assert p.startswith("<!doctype html>") and "<h1>sp-pi explanations of m</h1>" in p
    assert _text(p) == (
        "sp-pi explanations of m id prediction (p) label explained text "
        "0 pos (0.750) neg pos a <great> film 1 pos (0.750) - neg dull & slow"
    )
    assert "&lt;great&gt;</span>" in p and "dull</span> <span" in p  # highlighted and escaped
    lines = explanations_text(rows, ["neg", "pos"]).splitlines()
    assert lines[1].split()[:5] == ["0", "pos", "0.750", "neg", "pos"] and "<great> +0.600" in lines[1]
    assert lines[2].split()[:5] == ["1", "pos", "0.750", "-", "neg"] and "dull -0.500" in lines[2]


def _report():
    rows = [
        {
            "rank": 1,
            "word": "<zxq>",
            "cls": 1,
            "count": 4,
            "texts": 3,
            "mean": [-0.4, 0.4],
            "excess": 0.3,
            "z": 5.0,
            "q": 2e-5,
            "significant": True,
            "label_assoc": 0.5,
            "pred_assoc": 0.5,
            "checked": True,
            "flip_rate": 0.75,
            "prob_change": 0.3,
            "null_prob_change": 0.05,
            "effect": 0.25,
            "effect_q": 0.01,
            "flagged": True,
            "masked": "<zxq>",
        },
        {
            "rank": 2,
            "word": "the",
            "cls": 0,
            "count": 9,
            "texts": 4,
            "mean": [0.01, -0.01],
            "excess": 0.0,
            "z": 0.1,
            "q": 0.9,
            "significant": False,
            "label_assoc": None,
            "pred_assoc": None,
        },
    ]
    settings = {"examples": 4, "words_tested": 2, "min_count": 3, "alpha": 0.05, "min_effect": 0.05}
    return ShortcutReport(rows, ["neg", "pos"], {**settings, "budget": 100})


def test_shortcut_page_text_and_columns():
    report = _report()
    cols, rows = shortcut_columns(report)
    assert cols == SHORTCUT_COLUMNS and rows[0][:6] == [1, "<zxq>", "pos", 4, 3, 0.4]
    # not checked: empty cells
    assert rows[1][2:3] == ["neg"] and rows[1][12:] == [None] * (len(SHORTCUT_COLUMNS) - 12)
    results = [
        _row(0, "a <zxq> film", [(0, 1), (2, 7), (8, 12)], [0.0, 0.5, 0.1]),
        _row(1, "the plot", [(0, 3), (4, 8)], [0.0, 0.1]),
        _row(2, "<ZXQ> again", [(0, 5), (6, 11)], [0.4, 0.0]),
    ]
    examples = shortcut_examples(report, results, per_word=5)
    assert [len(examples[w]) for w in ("<zxq>", "the")] == [2, 1]
    assert examples["<zxq>"][1] == highlight("<ZXQ> again", [[0, 5], [6, 11]], [0.4, 0.0])
    p = shortcuts_page(report, examples=examples)
    assert "<tr class='sig'><td class='num'>1</td><td>&lt;zxq&gt;</td><td>pos</td>" in p
    assert "<tr><td class='num'>2</td><td>the</td><td>neg</td>" in p
    seen = _text(p)
    assert seen.startswith("Shortcut candidates 4 examples, 2 words with at least 3 occurrences.")
    assert "budget 100 passes" in seen and "1 <zxq> pos 4 3 0.4000 0.3000 5.0000 2e-05 True" in seen
    assert seen.endswith("<zxq> a <zxq> film <ZXQ> again the the plot")
    text = shortcuts_text(report).splitlines()
    assert text[2].split()[:4] == ["1", "<zxq>", "pos", "4"] and text[2].split()[-2:] == ["YES", "<zxq>"]
    assert text[3].split()[:3] == ["2", "the", "neg"]


def test_log_table_to_wandb_logs_one_table_and_finishes(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from pi_lightning.reporting.logging import log_table_to_wandb

    calls = {}

    class Run:
        def log(self, payload):
            calls["log"] = payload

        def finish(self):
            calls["finished"] = True

    def init(**kw):
        calls["init"] = kw
        return Run()

    import wandb

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    log_table_to_wandb(
        "proj", "pi/shortcuts", shortcut_columns(_report()), out_dir=tmp_path, job_type="shortcuts"
    )
    table = calls["log"]["pi/shortcuts"]
    assert table.columns == SHORTCUT_COLUMNS and [r[1] for r in table.data] == ["<zxq>", "the"]
    assert calls["init"]["mode"] == "offline" and calls["init"]["project"] == "proj" and calls["finished"]
