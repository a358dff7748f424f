"""Paired change between two evaluations of the same probe examples: per-example differences, their
mean with a 95% interval and a Wilcoxon signed-rank p-value, a verdict, and the words that changed.

A monitor explains the same probe examples at every evaluation, so the change of one example's
figure (its AS - IAS gap, AS or IAS AUC) between two evaluations is a paired quantity: the
example's own difficulty cancels, and the interval of the mean change is far narrower than either
evaluation's own interval (two unpaired intervals can overlap while the paired change is clear).
:class:`~pi_lightning.metrics.PairedChange` is the Metric class (DDP-synced) of the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pi_lightning.features import normalize_word
from pi_lightning.metrics.functional.stats import mean_confidence_interval

__all__ = ["PairedTest", "paired_change", "paired_test", "verdict", "word_changes"]


@dataclass(frozen=True)
class PairedTest:
    """The mean paired change with its interval and test.

    Attributes:
        mean: mean of the per-example differences (``after - before``).
        ci: half-width of its Student-t interval (``confidence``, default 95%); NaN with < 2 pairs.
        p: two-sided Wilcoxon signed-rank p-value (:func:`scipy.stats.wilcoxon`); 1 when every
            difference is 0, NaN with no pair.
        n: number of pairs.
    """

    mean: float
    ci: float
    p: float
    n: int


def paired_change(before, after) -> torch.Tensor:
    """Per-example change ``after - before`` of the pairs where both values exist.

    Args:
        before, after: per-example values of two evaluations of the same examples, same order and
            length (``None`` or NaN where an evaluation has no value: that pair is dropped).

    Example:
        >>> paired_change([0.1, None, 0.3], [0.2, 0.5, 0.1]).tolist()
        [0.1, -0.19999999999999998]
    """
    before, after = list(before), list(after)
    if len(before) != len(after):
        raise ValueError(
            f"paired_change needs the values of the same examples at both evaluations: got {len(before)} "
            f"before and {len(after)} after."
        )
    pairs = [
        (float(b), float(a))
        for b, a in zip(before, after, strict=True)
        if b is not None and a is not None and math.isfinite(float(b)) and math.isfinite(float(a))
    ]
    return torch.tensor([a - b for b, a in pairs], dtype=torch.float64)


def paired_test(differences, confidence: float = 0.95) -> PairedTest:
    """Mean of paired differences, its Student-t half-width and the Wilcoxon signed-rank p-value.

    Example:
        >>> t = paired_test(torch.tensor([0.1, 0.2, 0.15, 0.12, 0.3, 0.05, 0.22, 0.18]))
        >>> round(t.mean, 4), round(t.p, 4), t.n
        (0.165, 0.0078, 8)
    """
    d = torch.as_tensor(differences, dtype=torch.float64).reshape(-1)
    n = int(d.numel())
    if n == 0:
        return PairedTest(math.nan, math.nan, math.nan, 0)
    mean, half = mean_confidence_interval(d, confidence)
    if bool((d == 0).all()):
        return PairedTest(mean, half, 1.0, n)
    from scipy.stats import wilcoxon

    p = float(wilcoxon(d.numpy()).pvalue)
    return PairedTest(mean, half, p, n)


def verdict(test: PairedTest, alpha: float = 0.05, higher_is_better: bool = True) -> str:
    """``"more faithful"``, ``"less faithful"`` or ``"no detectable change"`` for a paired change of a
    figure where higher is better (the AS - IAS gap), at level ``alpha``.

    Example:
        >>> verdict(PairedTest(0.04, 0.02, 0.001, 40)), verdict(PairedTest(0.04, 0.05, 0.2, 40))
        ('more faithful', 'no detectable change')
    """
    if not (test.n and math.isfinite(test.p)) or test.p >= alpha or test.mean == 0:
        return "no detectable change"
    return "more faithful" if (test.mean > 0) == higher_is_better else "less faithful"


def word_changes(
    texts: Sequence[str],
    char_spans: Sequence[Sequence[Sequence[int]]],
    before: Sequence[Sequence[float]],
    after: Sequence[Sequence[float]],
    top: int = 5,
) -> tuple[list[dict], list[dict]]:
    """The words whose attribution rose and fell most between two evaluations of the same probe.

    Each occurrence of a word is a pair (its attribution before and after, same example, same
    feature); a word's change is the mean over its occurrences. Words are compared lowercased,
    without surrounding punctuation.

    Returns:
        ``(rose, fell)``: up to ``top`` words each, ``{"word", "change", "before", "after", "count"}``,
        largest rise first and largest fall first (only words that did rise / fall).

    Example:
        >>> rose, fell = word_changes(["good bad"], [[(0, 4), (5, 8)]], [[0.1, 0.0]], [[0.4, -0.2]])
        >>> rose[0]["word"], round(rose[0]["change"], 2), fell[0]["word"]
        ('good', 0.3, 'bad')
    """
    acc: dict[str, list[float]] = {}
    for text, spans, b, a in zip(texts, char_spans, before, after, strict=True):
        if len(b) != len(spans) or len(a) != len(spans):
            raise ValueError(
                f"word_changes needs one score per feature at both evaluations: {len(spans)} features, "
                f"{len(b)} scores before and {len(a)} after (was the probe's featurization changed?)."
            )
        for (s, e), vb, va in zip(spans, b, a, strict=True):
            word = normalize_word(text[s:e], punctuation=False)  # "Great," and "great" are one word
            if not word:
                continue
            st = acc.setdefault(word, [0.0, 0.0, 0])
            st[0] += float(vb)
            st[1] += float(va)
            st[2] += 1
    rows = [
        {"word": w, "change": (sa - sb) / c, "before": sb / c, "after": sa / c, "count": int(c)}
        for w, (sb, sa, c) in acc.items()
    ]
    rose = sorted((r for r in rows if r["change"] > 0), key=lambda r: -r["change"])[:top]
    fell = sorted((r for r in rows if r["change"] < 0), key=lambda r: r["change"])[:top]
    return rose, fell
