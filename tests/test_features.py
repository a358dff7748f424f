"""Features: spans from offset mappings, for byte-BPE and Metaspace tokenizers, with fixed context."""

from __future__ import annotations

import itertools
import re

import pytest

from pi_lightning.features import Featurizer
from pi_lightning.models import default_model_dir

TEXTS = [
    "a good movie, really.",
    "Don't miss it! It's a 10/10, honestly.  Café crème — naïve.",
    "  spaced   out text\n\nnew para.",
    'the rock is destined to be the 21st century\'s new " conan " .',
    "Wow!! Really? self-indulgent, half-baked nonsense",
]


def _check_reconstruction(f, tok):
    text = f.text
    # Features are ordered, disjoint, and only whitespace lies between/around them.
    prev = 0
    for (a, b), t in zip(f.char_spans, f.texts, strict=False):
        assert a >= prev and b >= a and t == text[a:b] and t.strip() == t and t
        assert text[prev:a].strip() == ""
        prev = b
    assert text[prev:].strip() == ""
    # Token spans tile the attributed region exactly, and decode back to the text.
    assert f.spans[0][0] == f.context_end and f.spans[-1][1] == f.suffix_start
    for (a0, b0), (a1, _) in zip(f.spans, f.spans[1:], strict=False):
        assert b0 == a1 and b0 > a0
    body = list(f.input_ids[f.context_end : f.suffix_start])
    assert tok.decode(body).strip() == text.strip()


@pytest.mark.parametrize("granularity", ["token", "word", "sentence"])
@pytest.mark.parametrize("text", TEXTS)
def test_spans_reconstruct_text(tiny, text, granularity):
    _, _, tok = tiny
    f = Featurizer(tok, granularity)(text)
    if granularity == "token":
        assert 0 < f.n <= f.suffix_start - f.context_end
        body = list(f.input_ids[f.context_end : f.suffix_start])
        assert tok.decode(body).strip() == text.strip()
    else:
        _check_reconstruction(f, tok)


def test_word_and_sentence_units(gpt2_tok, llama_tok):
    for tok in (gpt2_tok, llama_tok):
        words = Featurizer(tok, "word")("Don't miss it! It's great.").texts
        assert words[:4] == ("Don't", "miss", "it", "!")
        sents = Featurizer(tok, "sentence")("Don't miss it! It's great.\n\nNew para").texts
        assert sents == ("Don't miss it!", "It's great.", "New para")


def test_fixed_context_is_not_attributed(tiny):
    _, _, tok = tiny
    fz = Featurizer(tok, "word", template="Review: {text}\nSentiment:")
    f = fz("a good movie")
    assert f.texts == ("a", "good", "movie")
    bos = [tok.bos_token_id] if f.prefix_ids[0] == tok.bos_token_id else []
    prefix = tok.decode(list(f.prefix_ids[len(bos) :]))
    suffix = tok.decode(list(f.suffix_ids))
    assert prefix.strip() == "Review:" and suffix.strip() == "Sentiment:"
    assert f.space_before[0]  # the prefix's trailing space moved onto the first word
    paper = Featurizer(tok, "sentence", template="[Assertion]: it is good. [Document]: {text}")
    g = paper("Great film. Bad plot.")
    assert g.texts == ("Great film.", "Bad plot.") and g.context_end > 3


def test_llama_style_adds_bos_gpt2_does_not(gpt2_tok, llama_tok):
    assert Featurizer(gpt2_tok)("good").context_end == 0
    f = Featurizer(llama_tok)("good")
    assert f.context_end == 1 and f.input_ids[0] == llama_tok.bos_token_id


@pytest.mark.skipif(
    not (default_model_dir() / "tokenizer.json").is_file(),
    reason="the real SmolLM2 tokenizer is not cached yet (run recipes/explain_default.py once)",
)
@pytest.mark.parametrize("granularity", ["word", "sentence"])
def test_real_smollm2_tokenizer_spans(granularity):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    for text in TEXTS:
        _check_reconstruction(Featurizer(tok, granularity, template="Review: {text}")(text), tok)


def test_one_feature_text(gpt2_tok):
    f = Featurizer(gpt2_tok, "word")("great")
    assert f.n == 1 and f.texts == ("great",)


@pytest.mark.parametrize("bad", ["", "   \n\t "])
def test_empty_text_message(gpt2_tok, bad):
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"Cannot attribute an empty or whitespace-only text (got {bad!r}): remove it from the examples "
            "to explain."
        ),
    ):
        Featurizer(gpt2_tok)(bad)


def test_unknown_granularity_message(gpt2_tok):
    with pytest.raises(
        ValueError, match=re.escape("Unknown granularity 'paragraph': expected one of token, word, sentence.")
    ):
        Featurizer(gpt2_tok, "paragraph")


def test_template_needs_placeholder(gpt2_tok):
    with pytest.raises(ValueError, match="exactly one '\\{text\\}' placeholder"):
        Featurizer(gpt2_tok, template="Review:")


def test_long_text_truncated_context_kept_warned_once(gpt2_tok):
    fz = Featurizer(gpt2_tok, "word", template="Review: {text} End", max_length=20)
    long = " ".join(["good movie"] * 30)
    with pytest.warns(
        UserWarning,
        match=r"the text is truncated to \d+ tokens and the template's fixed context kept \(warned once",
    ):
        f = fz(long)
    assert len(f.input_ids) == 20
    assert gpt2_tok.decode(list(f.suffix_ids)).strip() == "End"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fz(long)  # second time: no warning


@pytest.mark.parametrize("granularity", ["token", "word", "sentence"])
def test_features_from_token_ids_equal_features_from_text(tiny, granularity):
    """The one segmentation: already tokenized inputs (the free validation mode's rows) get the features
    the text gets, with special tokens before the text as context and after it as suffix."""
    _, _, tok = tiny
    fz = Featurizer(tok, granularity)
    texts = ["a good movie, really.", "Don't miss it! self-indulgent, half-baked nonsense", "Wow!! Really?"]
    rows = [tok(t)["input_ids"] for t in texts]
    eos = tok.eos_token_id
    rows.append(rows[0] + [eos])  # a special token after the text: the suffix
    for row, want in zip(rows, [*(fz(t) for t in texts), fz(texts[0])], strict=True):
        [got] = fz.from_token_ids([row])
        assert got.texts == want.texts and got.spans == want.spans
        assert got.context_end == want.context_end and got.input_ids == tuple(row)
        assert got.suffix_start == len(want.input_ids)


def test_features_from_token_ids_edge_rows(gpt2_tok):
    fz = Featurizer(gpt2_tok, "word")
    # cut inside the bytes of "è": the tokens do not round-trip, offsets come from the decoded prefixes
    cut_ids = gpt2_tok("Café crème — naïve")["input_ids"][:7]
    assert gpt2_tok(gpt2_tok.decode(cut_ids), add_special_tokens=False)["input_ids"] != cut_ids
    cut, none = fz.from_token_ids([cut_ids, [gpt2_tok.eos_token_id] * 2])
    assert none is None  # only special tokens: no text
    assert cut.texts[:2] == ("Café", "cr") and cut.context_end == 0 and cut.suffix_start == 7
    assert cut.spans[0][0] == 0 and cut.spans[-1][1] == 7
    assert all(b == a for (_, b), (a, _) in itertools.pairwise(cut.spans))
