"""Tiny, offline tokenizers and decoder-only classifiers for tests, doctests and ``--fast`` recipes.

Nothing here is downloaded: the tokenizers are trained in a fraction of a second on a built-in
corpus, and the models are random transformers of the sizes the transformers test-suite uses
(hidden 32, 2 layers). Two tokenizer styles are provided because they place word boundaries
differently: GPT-2-style byte-level BPE (``"Ġword"``) and SentencePiece/Llama-style Metaspace BPE
(``"▁word"``).

It also holds the brute-force references the tests compare the fast paths with: exact Shapley values by
enumeration (:func:`exact_shapley`) and MP-PI's conditional coalition map written out densely
(:func:`dense_coalition_map`).
"""

from __future__ import annotations

import functools
import random
from itertools import product
from math import comb, factorial

__all__ = [
    "CORPUS",
    "dense_coalition_map",
    "exact_shapley",
    "exit_after_distributed_run",
    "in_range",
    "tiny_classifier",
    "tiny_tokenizer",
    "toy_sentiment",
]

_POS = ["good", "great", "superb", "moving", "brilliant", "fun", "charming", "lovely", "solid"]
_NEG = ["bad", "awful", "dull", "boring", "weak", "messy", "tedious", "bland", "poor"]
_NEUTRAL = [
    "the",
    "a",
    "this",
    "that",
    "movie",
    "film",
    "plot",
    "story",
    "cast",
    "acting",
    "script",
    "it",
    "is",
    "was",
    "very",
    "quite",
    "really",
    "and",
    "but",
    "with",
    "of",
    "to",
    "in",
    "at",
    "by",
    "not",
    "so",
    "too",
    "just",
    "one",
    "more",
    "than",
    "its",
    "his",
    "her",
    "their",
]
_EXTRA = [
    "Don't miss it!",
    "It's a 10/10, honestly.",
    "Well... maybe; who knows?",
    "The director's cut (2004) runs 2h 15m.",
    "Café crème — naïve, but sweet.",
    "Mr. Smith goes to Washington.",
    "Wow!! Really?",
    "self-indulgent, half-baked nonsense",
]

CORPUS = tuple(
    [
        f"{random.Random(i).choice(_NEUTRAL)} {w} {random.Random(i + 1).choice(_NEUTRAL)}."
        for i, w in enumerate(_POS + _NEG)
    ]
    + [" ".join(_NEUTRAL)]
    + _EXTRA
)


@functools.cache
def _tokenizer_object(style: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    words = CORPUS * 4
    if style == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=360,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif style == "llama":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace("▁", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(content=" ", left=1, right=0),
            ]
        )
        byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
        trainer = trainers.BpeTrainer(
            vocab_size=420,
            special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
            show_progress=False,
        )
    else:
        raise ValueError(f"Unknown tokenizer style {style!r}: expected 'gpt2' or 'llama'.")
    tok.train_from_iterator(words, trainer=trainer)
    return tok


def tiny_tokenizer(style: str = "gpt2"):
    """A small fast tokenizer of the given style (``"gpt2"`` or ``"llama"``), with a pad token.

    The ``"llama"`` style adds a BOS token like Llama does; ``"gpt2"`` adds none.
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _tokenizer_object(style)
    if style == "gpt2":
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
        )
    else:
        tok = tok.__class__.from_str(tok.to_str())
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
    fast.pad_token = fast.eos_token
    return fast


def tiny_classifier(arch: str = "gpt2", num_labels: int = 2, tokenizer=None, seed: int = 0, **overrides):
    """A random decoder-only ``*ForSequenceClassification`` of test size, in eval mode.

    Args:
        arch: ``"gpt2"`` or ``"llama"``.
        num_labels: number of classes.
        tokenizer: sets the vocabulary size and pad token (default: ``tiny_tokenizer(arch)``).
        seed: seed for the random weights.
        **overrides: config fields to change (e.g. ``num_hidden_layers=1``).
    """
    import torch
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer(arch)
    vocab = len(tokenizer)
    common = dict(vocab_size=vocab, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":
        cfg = dict(
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=512,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        cfg.update(common, **overrides)
        config, cls = GPT2Config(**cfg), GPT2ForSequenceClassification
    elif arch == "llama":
        cfg = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        cfg.update(common, **overrides)
        config, cls = LlamaConfig(**cfg), LlamaForSequenceClassification
    else:
        raise ValueError(f"Unknown architecture {arch!r}: expected 'gpt2' or 'llama'.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        # A random head on a random trunk gives near-constant outputs; scale it so that
        # attributions are far from zero and tests are meaningful.
        with torch.no_grad():
            model.score.weight.mul_(20.0)
    return model.eval()


def toy_sentiment(n: int, seed: int = 0, length: tuple[int, int] = (4, 9)) -> tuple[list[str], list[int]]:
    """``n`` short synthetic reviews with balanced labels: each holds one sentiment word (label 1 for
    a positive word, 0 for a negative one) among neutral words. Small models learn it in a few epochs."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        k = rng.randint(*length)
        words = [rng.choice(_NEUTRAL) for _ in range(k)]
        words.insert(rng.randrange(k + 1), rng.choice(_POS if label else _NEG))
        texts.append(" ".join(words) + ".")
        labels.append(label)
    return texts, labels


# ------------------------------------------------------------------ test references (brute force)
def exact_shapley(value, n: int):
    """Exact Shapley values ``(n,)`` of a set function over ``n`` players, by enumeration (n <= 12).

    Args:
        value: maps the ``(2^n, n)`` bool array of every coalition (in ``itertools.product`` order) to
            their ``(2^n,)`` values.
        n: number of players.

    Example:
        >>> exact_shapley(lambda z: 3.0 * z[:, 0] + 2.0 * (z[:, 1] & z[:, 2]), 3).tolist()
        [3.0, 1.0, 1.0]
    """
    import numpy as np

    if n > 12:
        raise ValueError(f"Exact enumeration is for small n (<= 12), got n={n}.")
    z = np.array(list(product([False, True], repeat=n)), dtype=bool)
    v = np.asarray(value(z), dtype=np.float64)
    index = {tuple(row): k for k, row in enumerate(z)}
    phi = np.zeros(n)
    for k, row in enumerate(z):
        s = int(row.sum())
        for i in range(n):
            if not row[i]:
                w = factorial(s) * factorial(n - s - 1) / factorial(n)
                with_i = row.copy()
                with_i[i] = True
                phi[i] += w * (v[index[tuple(with_i)]] - v[k])
    return phi


def dense_coalition_map(n: int, splus: bool = True):
    """The paper's conditional matrix P†_{kl|ij} written out densely (reference for tests; n <= ~40).

    Returns:
        ``(n(n-1), n(n-1))`` array; row ``(i-1) n + (j-1)`` is the input class (i, j), column
        ``(k-1) n + (l-1)`` the intermediate class (k, l). Rows of impossible classes (j < i) are 0.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"Expected n >= 2 features, got {n!r}.")
    if n > 60:
        raise ValueError(
            f"The dense conditional matrix for n = {n} has {(n * (n - 1)) ** 2:,} entries; "
            "use pi_lightning.attributors._shapley.coalition_map (structured) instead."
        )
    import numpy as np

    N = n * (n - 1)
    M = np.zeros((N, N))
    for i in range(1, n):
        for j in range(i, n + 1):
            ip = i + n - j if splus else i
            row = (i - 1) * n + (j - 1)
            tot = comb(j - 1, i - 1)
            for k in range(1, i):
                for last in range(k, j):
                    M[row, (k - 1) * n + (last - 1)] = (
                        comb(last - 1, k - 1) * comb(j - last - 1, i - k - 1) / (ip * tot)
                    )
            for last in range(j, n + 1 if splus else j + 1):
                k = i + last - j
                if k <= n - 1:
                    M[row, (k - 1) * n + (last - 1)] = 1.0 / ip
    return M


def in_range(value: float, low: float = 0.0, high: float = 1.0, tol: float = 1e-12) -> bool:
    """Whether ``low - tol <= value <= high + tol``: a bound checked with the tolerance its arithmetic needs.

    A float computed to lie in ``[0, 1]`` (an AUC over ``x = k / n``, a cosine, a share) can land a few
    ulps outside it, on one side or the other depending on the BLAS kernel the CPU selects; the default
    ``tol`` covers float64 round-off of sums of a few thousand terms, and float32 values need ``1e-6``.

    >>> in_range(1.0000000000000002), in_range(1.001), in_range(-1e-17)
    (True, False, True)
    """
    return low - tol <= value <= high + tol


def exit_after_distributed_run() -> None:
    """End a multi-process test script that has finished and written its results: flush stdio and exit
    with status 0 without running the interpreter's and C++ libraries' teardown.

    Under torch 2.13 a process that ran gloo collectives can abort at interpreter exit ("terminate
    called without an active exception", SIGABRT) after all its work is done, also after
    ``destroy_process_group`` (seen in 1 of 6 to 4 of 10 runs of the FSDP script here, before and after
    this session's changes). A still-initialized process group is first joined by a barrier (so every
    rank has written its results) and destroyed. Call it last, after ``main`` returned: an error in
    ``main`` still exits non-zero.
    """
    import os
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every rank has written its results before any of them leaves
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
