"""Dataset-scale shortcut mining from the explain job's results, with a counterfactual check.

A shortcut is a word the model relies on although it should not (a watermark, a source tag, a
template word). Ranking words by their mean attribution does not find it: function words that sit
where the model's prediction moves most get large attributions in every text, and rare words get
large means by chance. :func:`mine_shortcuts` therefore compares each word with a **permutation
null**: within every text that holds the word, the word's attribution is compared with what a
feature drawn at random from the same text gets (shuffling the scores among the text's features).
The null's mean and variance are exact (sampling without replacement, per text), so for a word
with total attribution ``T`` toward class ``c``, ``z = (T - E[T]) / sd[T]`` and ``p`` is its normal
tail (Bonferroni over the classes), with Benjamini-Hochberg ``q`` values over all words tested.
Significant words (``q < alpha``) come first, each group ordered by ``z``: significance, which
grows with both the size of the excess and the number of texts that show it (``excess_total``,
``T - E[T]``, is kept as a column: the attribution the word gets beyond the null over the whole
dataset). The lower confidence bound of the mean excess (``excess_lcb``, also a column) is not used:
ranking by it favoured rare words with large scores, so a cue planted in many texts ranked low, and
lower still with more data.

Per word the table also holds: occurrences and texts, mean and total attribution toward each
class, and the label (and prediction) association: ``P(y = c | word) - P(y = c)``.

:func:`counterfactual_check` then tests **every significant word** causally, in that order, up to a
budget of forward passes (the significant words left over are marked unchecked): in each text that
holds the word (at most ``max_texts``, sampled), it masks the word (every occurrence, with the job's
:class:`~pi_lightning.masking.Masker`, together with its fixed phrase: the neighbours it has in at
least 90% of its occurrences, so a cue phrase such as ``[ dvd ]`` is masked whole), and, as a
**counterfactual null**, as many random other words of the same text; all masked texts of all words
run as one batched pass through the :class:`~pi_lightning.inference.ClassifierAdapter`. Masking any
word moves a prediction a little (the prefix and the positions change), so the word's effect is its
drop of p(class) minus the null's, paired by text (:func:`paired_null_test`).

Removal cannot show every cue: where a cue is common, the model may not need it in the texts that hold
it (the rest of the text decides), and a prefix's removal moves every position; and removing a phrase
can matter through its context alone (a clean model's p(class) moves when a name clause is cut out,
although putting the clause into other texts moves nothing). So each word is also checked by
**insertion**: its unit (the word with its fixed phrase, in its most common form) is put at its usual
place (at the start or the end where it always is there, else at its relative place, to the nearest
quarter) into up to ``max_texts`` texts that lack it, the least certain predictions first (a prediction
at p = 0.99 cannot rise; explained training texts are often fitted to near-certainty), and, as the null,
a run of as many words of another text is put at the same place instead; the effect is the gain of
p(class) beyond the null's, paired by text. A phrase is tested toward the class its words' summed excess
attribution points to (under causal attention a prefix acts at its first word and the next ones give
some back, so one of its words alone can point the other way). A word is **flagged** when it is
significant, one of the two tests shows an effect of at least ``min_effect`` whose paired excess over
its null is significant (one-sided Wilcoxon; Benjamini-Hochberg over both tests of all checked words, at
the mining's ``alpha``), and the other test agrees (its effect above zero: a shortcut lowers p(class)
when taken out *and* raises it when put in; a word that fails this is marked ``contradicted``). So
punctuation and function words are flagged only when taking them out and putting them in both beat doing
the same with random words, and large attributions that do not change the final prediction (SP-PI
explains the prefix game) are not flagged. Flagged words are ranked first.
Passes are named by what they hold, so words of one phrase and nulls of one text share them.

Toward each class: a score explains the example's ``target`` class; with two classes and
``output="prob"`` or ``"log_odds"`` the score toward the other class is its negative exactly (so
every occurrence counts for both); otherwise only the examples explained for class ``c`` count
toward ``c``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pi_lightning.features import normalize_word
from pi_lightning.result import ExplainRow

__all__ = ["ShortcutReport", "counterfactual_check", "mine_shortcuts", "null_moments", "paired_null_test"]


def _as_rows(results: Sequence[ExplainRow | Mapping[str, Any]]) -> list[ExplainRow]:
    """The typed rows (a dict, e.g. a line of ``explanations.jsonl``, goes through
    :meth:`~pi_lightning.result.ExplainRow.from_dict`, which names a missing or bad field)."""
    return [r if isinstance(r, ExplainRow) else ExplainRow.from_dict(r) for r in results]


def _row_name(row: ExplainRow, t: int) -> str:
    """How an error names a result: its id, else its position."""
    return row.id if row.id is not None else str(t)


def _text(row: ExplainRow, t: int) -> str:
    if row.text is None:
        raise ValueError(
            f"Result {_row_name(row, t)!r} holds no text, so its masked texts cannot be built: check rows of "
            "the explain job (pi_lightning.jobs.load_results)."
        )
    return row.text


def null_moments(
    scores: np.ndarray, texts: np.ndarray, words: np.ndarray, n_words: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed total, and mean and variance under within-text permutation, of each word's scores.

    Args:
        scores: ``(O,)`` score of every feature occurrence (NaN: not defined, left out with its text).
        texts: ``(O,)`` text index of each occurrence.
        words: ``(O,)`` word index of each occurrence.
        n_words: number of distinct words.

    Returns:
        ``(total, mean, var)``, each ``(n_words,)``: the word's summed score, and the mean and variance
        of that sum when the scores are shuffled among the features of each text (without replacement).

    Example:
        >>> values, texts = np.array([1.0, 0.0, 0.0, 1.0]), np.array([0, 0, 1, 1])
        >>> t, m, v = null_moments(values, texts, np.array([0, 1, 1, 0]), 2)
        >>> t.tolist(), m.tolist(), v.tolist()
        ([2.0, 0.0], [1.0, 1.0], [0.5, 0.5])
    """
    ok = ~np.isnan(scores)
    s, t, w = scores[ok], texts[ok], words[ok]
    n_texts = int(texts.max()) + 1 if len(texts) else 0
    n_t = np.bincount(t, minlength=n_texts).astype(float)
    sum_t = np.bincount(t, weights=s, minlength=n_texts)
    sq_t = np.bincount(t, weights=s * s, minlength=n_texts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_t = sum_t / n_t
        var_t = np.maximum(sq_t / n_t - mu_t**2, 0.0)  # population variance of the text's scores
    # k: occurrences of word w in text t, over the distinct (t, w) pairs.
    pair, k = np.unique(t.astype(np.int64) * n_words + w, return_counts=True)
    pt, pw = pair // n_words, pair % n_words
    n = n_t[pt]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpc = np.where(n > 1, (n - k) / (n - 1), 0.0)  # finite-population correction
    mean = np.bincount(pw, weights=k * mu_t[pt], minlength=n_words)
    var = np.bincount(pw, weights=k * var_t[pt] * fpc, minlength=n_words)
    total = np.bincount(w, weights=s, minlength=n_words)
    return total, mean, var


@dataclass
class ShortcutReport:
    """Words ranked as shortcut candidates (see the module docstring for every column).

    Attributes:
        rows: one dict per word, best candidate first: ``word``, ``rank``, ``cls`` (the class it
            pushes toward), ``count``, ``texts``, ``mean`` / ``total`` (per class), ``null_mean``,
            ``excess``, ``excess_lcb``, ``z``, ``p``, ``q``, ``significant``, ``label_assoc``, ``pred_assoc``
            and, after :func:`counterfactual_check`, ``flip_rate``, ``prob_change``, ``checked_texts``,
            ``flagged``.
        label_names: class names for display.
        settings: what the mining used.

    Shown by :mod:`pi_lightning.reporting.shortcuts` (terminal table, HTML page, W&B columns).
    """

    rows: list[dict[str, Any]]
    label_names: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    def find(self, word: str) -> dict[str, Any] | None:
        """The row of ``word`` (case-insensitive), or None."""
        w = normalize_word(word)
        return next((r for r in self.rows if r["word"] == w), None)

    def write_jsonl(self, path: str | Path) -> Path:
        """One JSON row per word."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)
        return path


def mine_shortcuts(
    results: Sequence[ExplainRow | Mapping[str, Any]],
    *,
    min_count: int = 3,
    alpha: float = 0.05,
    label_names: Sequence[str] | None = None,
    lookahead: int = 0,
    position_baseline: bool = False,
) -> ShortcutReport:
    """Rank the words of explained examples as shortcut candidates (see the module docstring).

    Args:
        results: result rows of the explain job (:func:`pi_lightning.jobs.load_results`), or their
            dicts (:meth:`~pi_lightning.result.ExplainRow.to_dict`); mining reads ``features``,
            ``scores``, ``target``, ``probs`` (its length: the classes), ``output``, ``label`` and
            ``prediction``.
        min_count: words with fewer occurrences are left out.
        alpha: false discovery rate for ``significant``.
        label_names: class names for display.
        lookahead: add to each word's score the scores of this many following words of its text (SP-PI
            of a causal model: the change a word makes is read at its own end, but the model may use it
            only at the next words, and a function word's score is often a transient that the next word
            takes back; the sum is the lasting change). ``0``: the word's own score.
        position_baseline: subtract from every score (toward each class) the typical score at the same
            place (first, second, third, fourth word, later: the median over the words seen there of
            each word's median, so one frequent word does not set it) before the permutation null: the
            first words of a text get large scores from where they are (the prediction moves most from
            the empty context), so words that often open a text (``a``, ``the``) beat a random word of
            their text by position alone.

        The training callbacks (:class:`~pi_lightning.callbacks.ValidationSPPI`) use ``lookahead=1,
        position_baseline=True`` (:data:`ONLINE`): with no masking check behind them, their ranking
        must not put function words first. ``pi-lightning shortcuts`` keeps the words' own scores and
        lets :func:`counterfactual_check` decide.

    Returns:
        A :class:`ShortcutReport`.

    Example:
        >>> from pi_lightning.result import ExplainRow
        >>> rows = [ExplainRow(features=["zxq", "a", "b"], scores=[0.5, 0.0, 0.1], target=1, prediction=1,
        ...                    probs=[0.2, 0.8], output="prob", label=1) for _ in range(4)]
        >>> report = mine_shortcuts(rows)
        >>> report.rows[0]["word"], report.rows[0]["cls"], round(report.rows[0]["excess"], 3)
        ('zxq', 1, 0.3)
    """
    from scipy.stats import false_discovery_control, norm

    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive int, got {min_count!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is a false discovery rate in (0, 1), got {alpha!r}.")
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 0:
        raise ValueError(
            f"lookahead must be an int >= 0 (following words added to a word's score), got {lookahead!r}."
        )
    results = _as_rows(results)
    if not results:
        raise ValueError("No results to mine: run the explain job first (pi_lightning.jobs.explain_dataset).")
    C = len(results[0].probs)
    output = results[0].output
    fold = C == 2 and output in ("prob", "log_odds")
    vocab: dict[str, int] = {}
    occ_t, occ_w, occ_s, occ_tgt, occ_pos = [], [], [], [], []
    for t, r in enumerate(results):
        if len(r.features) != len(r.scores):
            raise ValueError(
                f"Result {_row_name(r, t)!r} has {len(r.features)} features but {len(r.scores)} scores."
            )
        row_scores = np.asarray(r.scores, float)
        if lookahead:
            # (n,) each word's score plus the next `lookahead` words' (fewer at the end of the text)
            row_scores = np.convolve(row_scores, np.ones(lookahead + 1))[lookahead:]
        for i, (f, s) in enumerate(zip(r.features, row_scores, strict=True)):
            occ_t.append(t)
            occ_w.append(vocab.setdefault(normalize_word(f), len(vocab)))
            occ_s.append(float(s))
            occ_tgt.append(r.target)
            occ_pos.append(min(i, POSITION_BUCKETS - 1))
    words = list(vocab)
    W = len(words)
    t_arr, w_arr = np.asarray(occ_t), np.asarray(occ_w)
    s_arr, tgt = np.asarray(occ_s), np.asarray(occ_tgt)
    count = np.bincount(w_arr, minlength=W)
    pair_w = np.unique(t_arr.astype(np.int64) * W + w_arr) % W
    n_texts = np.bincount(pair_w, minlength=W)

    # (O, C): each occurrence's score toward each class (NaN where not defined).
    toward = np.full((len(s_arr), C), np.nan)
    for c in range(C):
        toward[:, c] = np.where(tgt == c, s_arr, -s_arr if fold else np.nan)
    if position_baseline:
        pos = np.asarray(occ_pos)
        for b in range(POSITION_BUCKETS):
            at = np.flatnonzero(pos == b)
            for c in range(C):
                ok = at[np.isfinite(toward[at, c])]
                if len(ok):
                    toward[at, c] -= _word_balanced_median(toward[ok, c], w_arr[ok])
    stats = [null_moments(toward[:, c], t_arr, w_arr, W) for c in range(C)]
    defined = np.stack(
        [np.bincount(w_arr, weights=~np.isnan(toward[:, c]), minlength=W) for c in range(C)], 1
    )
    total = np.stack([s[0] for s in stats], 1)  # (W, C)
    null = np.stack([s[1] for s in stats], 1)
    var = np.stack([s[2] for s in stats], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(defined > 0, total / defined, np.nan)
        excess = np.where(defined > 0, (total - null) / defined, np.nan)
        z = np.where(var > 0, (total - null) / np.sqrt(var), np.nan)
        lcb = excess - norm.ppf(1 - alpha) * np.sqrt(var) / np.where(defined > 0, defined, np.nan)
    best = np.argmax(np.where(np.isnan(excess), -np.inf, excess), axis=1)

    # Label and prediction association of each word: P(y = c | word) - P(y = c), over the texts holding it.
    def association(values: list[int | None]) -> np.ndarray:
        out = np.full((W, C), np.nan)
        known = np.array([v is not None for v in values])
        if not known.any():
            return out
        vals = np.array([-1 if v is None else int(v) for v in values])
        base = np.bincount(vals[known], minlength=C)[:C] / known.sum()
        sel = known[t_arr]
        pairs = np.unique(t_arr[sel].astype(np.int64) * W + w_arr[sel])
        pt, pw = pairs // W, pairs % W
        held = np.bincount(pw, minlength=W)
        for c in range(C):
            hit = np.bincount(pw, weights=(vals[pt] == c), minlength=W)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, c] = np.where(held > 0, hit / held - base[c], np.nan)
        return out

    label_assoc = association([r.label for r in results])
    pred_assoc = association([r.prediction for r in results])

    tested = np.flatnonzero(count >= min_count)
    zb = z[np.arange(W), best]
    p = np.full(W, np.nan)
    ok = tested[~np.isnan(zb[tested])]
    p[ok] = np.minimum(1.0, C * norm.sf(zb[ok]) if not fold else 2 * norm.sf(np.abs(zb[ok])))
    q = np.full(W, np.nan)
    if len(ok):
        q[ok] = false_discovery_control(p[ok])
    sig = np.nan_to_num(q, nan=1.0) < alpha

    def num(x) -> float | None:
        return None if x is None or not np.isfinite(x) else float(x)

    rows = []
    for i in tested:
        c = int(best[i])
        rows.append(
            {
                "word": words[i],
                "cls": c,
                "count": int(count[i]),
                "texts": int(n_texts[i]),
                "mean": [num(v) for v in mean[i]],
                "total": [num(v) for v in total[i]],
                "null_mean": num(null[i, c] / defined[i, c]) if defined[i, c] else None,
                "excess": num(excess[i, c]),
                "excess_lcb": num(lcb[i, c]),
                "excess_total": num(total[i, c] - null[i, c]),
                "z": num(z[i, c]),
                "p": num(p[i]),
                "q": num(q[i]),
                "significant": bool(sig[i]),
                "label_assoc": num(label_assoc[i, c]),
                "pred_assoc": num(pred_assoc[i, c]),
            }
        )
    rows.sort(key=_priority_key)
    for k, r in enumerate(rows, 1):
        r["rank"] = k
    names = list(label_names) if label_names is not None else [str(c) for c in range(C)]
    settings = {
        "examples": len(results),
        "words": W,
        "words_tested": len(tested),
        "min_count": min_count,
        "alpha": alpha,
        "classes": C,
        "folded": fold,
        "lookahead": lookahead,
        "position_baseline": position_baseline,
    }
    return ShortcutReport(rows=rows, label_names=names, settings=settings)


def _word_balanced_median(values: np.ndarray, words: np.ndarray) -> float:
    """The median over distinct words of each word's median value: every word counts once, so a word
    that fills most of a place (a planted prefix, ``the``) does not set the baseline it is compared with.

    Example:
        >>> float(_word_balanced_median(np.array([5.0, 5.0, 5.0, 0.0, 1.0]), np.array([0, 0, 0, 1, 2])))
        1.0
    """
    order = np.argsort(words, kind="stable")
    w, v = words[order], values[order]
    cuts = np.flatnonzero(np.diff(w)) + 1
    return float(np.median([np.median(g) for g in np.split(v, cuts)]))


#: The position baseline's places: the first, second, third and fourth word of a text, and the later ones.
POSITION_BUCKETS = 5

#: The settings of the training callbacks' detector (see :func:`mine_shortcuts`).
ONLINE = {"lookahead": 1, "position_baseline": True}


def paired_null_test(drops: np.ndarray, null_drops: np.ndarray) -> tuple[float, float]:
    """Effect of masking a word beyond the counterfactual null, and its one-sided paired p-value.

    Args:
        drops: ``(n,)`` per text, p(class) unmasked minus p(class) with the word masked.
        null_drops: ``(n,)`` the same texts with as many random other words masked instead.

    Returns:
        ``(effect, p)``: the mean paired difference ``drops - null_drops``, and the one-sided Wilcoxon
        signed-rank p-value of "the word's drop exceeds the null's" (zero differences dropped; 1.0
        when every difference is zero, NaN for no texts).

    Example:
        >>> e, p = paired_null_test(np.array([0.3, 0.2, 0.4, 0.5, 0.3, 0.2]), np.zeros(6))
        >>> round(e, 3), round(p, 4)
        (0.317, 0.0156)
    """
    from scipy.stats import wilcoxon

    d = np.asarray(drops, float) - np.asarray(null_drops, float)
    if len(d) == 0:
        return float("nan"), float("nan")
    nonzero = d[d != 0]
    if len(nonzero) == 0:
        return 0.0, 1.0
    p = float(wilcoxon(nonzero, alternative="greater").pvalue)
    return float(d.mean()), p


#: A neighbour belongs to a word's fixed phrase when it is there in at least this share of its occurrences.
PHRASE_SHARE = 0.9


def _phrase_words(
    word: str, left: int, right: int, holders_of: Mapping[str, list[int]], norm_feats: Sequence[Sequence[str]]
) -> tuple[str, ...]:
    """The most common ``left + 1 + right`` words around ``word``'s occurrences (its phrase)."""
    seen: dict[tuple[str, ...], int] = {}
    for t in holders_of.get(word, []):
        words = norm_feats[t]
        for i, x in enumerate(words):
            if x == word and i - left >= 0 and i + right < len(words):
                key = tuple(words[i - left : i + right + 1])
                seen[key] = seen.get(key, 0) + 1
    return max(seen, key=seen.get) if seen else (word,)


def _priority_key(row: Mapping[str, Any]) -> tuple[bool, float, str]:
    """Significant words first, each group by ``z`` (most significant first), then by word."""
    z = row.get("z")
    return (not row["significant"], -(z if z is not None else -np.inf), row["word"])


def counterfactual_check(
    report: ShortcutReport,
    results: Sequence[ExplainRow | Mapping[str, Any]],
    model,
    tokenizer,
    *,
    top: int | None = None,
    budget: int | None = 6000,
    max_texts: int | None = 48,
    granularity: str | None = None,
    template: str | None = None,
    mask: str | int | None = None,
    max_tokens: int = 2048,
    min_effect: float = 0.05,
    seed: int = 0,
    phrases: bool = True,
    insertion: bool = True,
) -> ShortcutReport:
    """Mask the significant words against a counterfactual null; add flip rates, effects and flags.

    Every significant word (``q < alpha``), in the report's order (most significant first), is
    checked until the ``budget`` of forward passes is spent: in each checked text that holds it, once
    with the word masked (every occurrence, with the job's :class:`~pi_lightning.masking.Masker`) and
    once with as many random *other* words of the same text masked (the counterfactual null: masking
    any word moves a prediction a little). All the masked texts of all the words run as one batched
    inference pass (token-budget batches). The unmasked predictions are the explain job's (the first
    four are recomputed: a different model, adapter, template or mask is an error).

    Args:
        report: from :func:`mine_shortcuts` (its rows are updated in place and it is returned).
        results: the same result rows.
        model, tokenizer: the explained classifier.
        top: check at most this many significant words (``None``: all, within ``budget``).
        budget: at most this many forward passes (masked, inserted and their nulls, each shared pass
            counted once; the unmasked predictions are the job's; ``None``: no limit). Significant words
            past the budget are marked ``checked=False``.
        max_texts: per word, check at most this many of its texts (a seeded random sample), and insert
            it into at most this many texts that lack it; ``None``: all.
        granularity, template, mask: the explain job's featurization; ``None``: the settings the rows
            record (their ``settings``, what the attributions were made with; ``word``, ``{text}`` and
            ``remove`` for rows without them); the features are rebuilt from the texts and must match
            the rows'.
        max_tokens: token budget per forward batch (2048: on a CPU, batches of ~2k tokens ran the
            check of a 300-text job twice as fast as 8k; raise it on a GPU).
        min_effect: a word is flagged when it is significant, and masking it lowers p(class) by at least
            this much more than masking random other words, or inserting it raises p(class) by this much
            more than inserting a run of another text (mean paired differences), with that excess
            significant (one-sided paired Wilcoxon, Benjamini-Hochberg over both tests of the checked
            words, ``q < alpha`` of the mining), and the other test's effect is above zero.
        seed: seed of the text sample and of the null's random words.
        phrases: mask each occurrence together with its fixed phrase: the neighbours that stand at the
            same place next to the word in at least 90% of its occurrences (``PHRASE_SHARE``; up to 3
            each side), so ``[ dvd ]`` is masked whole, since one word of a cue phrase is redundant
            given the others (masking ``dvd`` alone leaves ``[ ]``), and a phrase cut in half
            (``[ dvd``) is an input the model never saw; the null then masks as many random words
            outside it. ``False``: the word alone.
        insertion: also put the word (with its phrase) into texts that lack it, against putting a run of
            as many words of another text there (see the module docstring); ``False``: removal only
            (half the passes).

    Returns:
        ``report``, with, on the significant rows: ``checked``, and on the checked ones ``flip_rate``
        (fraction of the texts whose predicted class changes), ``prob_change`` (mean of p(cls) unmasked
        minus masked), ``null_flip_rate`` and ``null_prob_change`` (the same with random other words
        masked), ``effect`` (``prob_change - null_prob_change``, paired), ``effect_p``/``effect_q``,
        ``masked`` (the words masked, in the most common of its texts),
        ``checked_texts``; with ``insertion``, ``inserted`` (the run put in), ``insert_texts``,
        ``insert_flip_rate``, ``insert_prob_change`` (mean gain of p(cls)), ``insert_null_prob_change``
        (the null run's), ``insert_effect`` (paired difference), ``insert_p``/``insert_q``; ``flagged``
        and ``flagged_by`` (``"removal"``, ``"insertion"`` or both); ``contradicted``: a test passed but
        the other moved p(class) the other way (not flagged);
        ``checked_cls``: the class both tests measure p of (``cls``, or for a word checked with its
        phrase, the phrase's class). Flagged rows move to the top (by their larger effect)
        and ``rank`` is renumbered.
    """
    from scipy.stats import false_discovery_control

    from pi_lightning.features import Featurizer
    from pi_lightning.inference import ClassifierAdapter, transform_outputs
    from pi_lightning.masking import DEFAULT_MASK, Masker

    for name, v, low in (("top", top, 0), ("budget", budget, 1), ("max_texts", max_texts, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise ValueError(f"{name} must be None or an int >= {low}, got {v!r}.")
    results = _as_rows(results)
    alpha = float(report.settings.get("alpha", 0.05))
    recorded = results[0].settings or {}
    granularity = granularity or recorded.get("granularity") or results[0].granularity or "word"
    template = template if template is not None else recorded.get("template", "{text}")
    mask = mask if mask is not None else recorded.get("mask", DEFAULT_MASK)
    featurizer = Featurizer(tokenizer, granularity, template)
    masker = Masker(tokenizer, mask)
    adapter = ClassifierAdapter(model, max_tokens=max_tokens)
    rng = np.random.default_rng(seed)
    norm_feats = [[normalize_word(f) for f in r.features] for r in results]
    holders_of: dict[str, list[int]] = {}
    for t, fs in enumerate(norm_feats):
        for w in set(fs):
            holders_of.setdefault(w, []).append(t)

    candidates = [r for r in report.rows if r["significant"]]
    if top is not None:
        candidates = candidates[:top]
    # The null of a text: its first k features in a fixed random order that are not the word (k: the
    # word's occurrences), so words of one occurrence share one null pass per text.
    perm: dict[int, np.ndarray] = {}
    phrase_of: dict[str, tuple[int, int]] = {}

    def phrase(w: str) -> tuple[int, int]:
        """How many words before and after ``w`` form its fixed phrase: outward, the same neighbour at
        the same offset in at least ``PHRASE_SHARE`` of the word's occurrences, up to 3 each side."""
        if w not in phrase_of:
            occ = [(t, i) for t in holders_of.get(w, []) for i, x in enumerate(norm_feats[t]) if x == w]
            span = []
            for step in (-1, 1):
                k = 0
                while k < 3 and occ:
                    near = [
                        norm_feats[t][i + step * (k + 1)]
                        if 0 <= i + step * (k + 1) < len(norm_feats[t])
                        else None
                        for t, i in occ
                    ]
                    top = max(set(near), key=near.count)
                    if top is None or near.count(top) < PHRASE_SHARE * len(occ):
                        break
                    k += 1
                span.append(k)
            phrase_of[w] = (span[0], span[1])
        return phrase_of[w]

    def masked_positions(t: int, w: str) -> np.ndarray:
        """(n,) bool: the word's occurrences in text t, each with its fixed phrase where it is whole."""
        words = norm_feats[t]
        hit = np.array([x == w for x in words])
        if phrases:
            left, right = phrase(w)
            pattern = None
            for i in np.flatnonzero(hit):
                a, b = i - left, i + right + 1
                if pattern is None:  # the phrase's words, from the first occurrence that holds it whole
                    pattern = _phrase_words(w, left, right, holders_of, norm_feats)
                if a >= 0 and b <= len(words) and tuple(words[a:b]) == pattern:
                    hit[a:b] = True
        return hit

    def null_positions(t: int, hit: np.ndarray) -> tuple[int, ...]:
        if t not in perm:
            perm[t] = rng.permutation(len(hit))
        others = perm[t][~hit[perm[t]]]
        return tuple(sorted(others[: int(hit.sum())].tolist()))

    feats: dict[int, Any] = {}

    def feat(t: int):
        """Text t's features, rebuilt with the job's featurizer (they must match the explained ones)."""
        if t not in feats:
            f = featurizer(_text(results[t], t))
            if [normalize_word(x) for x in f.texts] != norm_feats[t]:
                raise ValueError(
                    f"Rebuilding the features of result {_row_name(results[t], t)!r} gave "
                    f"{list(f.texts)}, not the explained {results[t].features}: pass the explain "
                    "job's granularity and template."
                )
            feats[t] = f
        return feats[t]

    n_all = len(results)
    # Insertion targets: the least certain predictions first (a prediction at p = 0.99 cannot rise, so
    # a cue shows where the model hesitates; the explained texts are often training texts, fitted to
    # near-certainty), ties in one random order; the null is paired on the same texts.
    certainty = np.array([float(np.max(r.probs)) if r.probs is not None else 1.0 for r in results])
    target_order = np.lexsort((rng.permutation(n_all), certainty))
    source_order: dict[int, np.ndarray] = {}

    def insertion_plan(w: str, holders: list[int]) -> tuple[str, list[int], list[str], list[int]] | None:
        """Where and what to insert for word ``w``: its usual run (the word with its fixed phrase) at its
        usual place, into texts that lack it, each paired with a run of as many words of another text
        (the null). Returns ``(phrase, targets, null_runs, positions)``, or None without such texts."""
        runs: list[str] = []
        starts, ends, rel = [], [], []
        for t in holders:
            hit, words = masked_positions(t, w), norm_feats[t]
            i = words.index(w)
            a, b = i, i + 1
            while a > 0 and hit[a - 1]:
                a -= 1
            while b < len(words) and hit[b]:
                b += 1
            f = feat(t)
            runs.append(f.text[f.char_spans[a][0] : f.char_spans[b - 1][1]])
            starts.append(a)
            ends.append(len(words) - b)
            rel.append(a / max(1, len(words) - (b - a)))
        phrase_text = max(set(runs), key=lambda r: (runs.count(r), r))
        n_words = len(featurizer(phrase_text).texts) if phrase_text.strip() else 1
        # the same texts for every word (the first ones of one order that lack it), so words of one phrase,
        # and words at the same place, share their passes
        targets = [t for t in target_order if w not in norm_feats[t] and norm_feats[t]]
        targets = sorted(targets[:max_texts] if max_texts is not None else targets)
        if len(targets) < 2:
            return None
        null_runs, positions = [], []
        for t in targets:
            m = len(norm_feats[t])
            # anchored at the start or the end where the word always is there, else at its relative place
            # (to the nearest quarter of the text)
            if np.median(starts) == 0:
                k = 0
            elif np.median(ends) == 0:
                k = m
            else:
                k = round(round(float(np.median(rel)) * 4) / 4 * m)
            positions.append(min(max(k, 0), m))
            # the null: a run of as many words of another text that lacks the word, the same for every
            # word of this length inserted into this text (one random order of the sources per text)
            if t not in source_order:
                source_order[t] = np.random.default_rng([seed, t]).permutation(n_all)
            src = next(
                (
                    int(x)
                    for x in source_order[t]
                    if x != t and len(norm_feats[x]) >= n_words and w not in norm_feats[x]
                ),
                None,
            )
            if src is None:  # no text long enough to give the null a run of as many words
                return None
            j = int(
                np.random.default_rng([seed, t, src, n_words]).integers(0, len(norm_feats[src]) - n_words + 1)
            )
            fs = feat(src)
            null_runs.append(fs.text[fs.char_spans[j][0] : fs.char_spans[j + n_words - 1][1]])
        return phrase_text, targets, null_runs, positions

    def inserted(t: int, k: int, run: str) -> str:
        """Text t with ``run`` put before its k-th word (k = its number of words: at the end)."""
        f = feat(t)
        if k >= f.n:
            return f"{f.text.rstrip()} {run}"
        at = f.char_spans[k][0]
        return f"{f.text[:at]}{run} {f.text[at:]}"

    # Plan: words in order until the budget is spent (a checked text costs its masked pass, and a null
    # pass unless another word already needs the same one; with insertion, two passes per text it is
    # inserted into).
    plan: list[tuple[dict, list[int], list[tuple[int, ...]], Any]] = []
    planned: set[tuple] = set()
    spent = 0
    for row in candidates:
        w = row["word"]
        holders = holders_of.get(w, [])
        if max_texts is not None and len(holders) > max_texts:
            holders = sorted(rng.choice(holders, max_texts, replace=False).tolist())
        null_pos = [null_positions(t, masked_positions(t, w)) for t in holders]
        ins = insertion_plan(w, holders) if insertion and holders else None
        new = set(_pass_keys(w, holders, null_pos, ins, masked_positions)) - planned
        if budget is not None and spent + len(new) > budget:
            break
        spent += len(new)
        planned |= new
        plan.append((row, holders, null_pos, ins))
    for row in report.rows:
        row.pop("checked", None)
        row.pop("checked_cls", None)
        if row["significant"]:
            row["checked"] = False

    texts = sorted(
        {t for _, holders, _, _ in plan for t in holders} | {t for *_, ins in plan if ins for t in ins[1]}
    )
    for t in texts:
        feat(t)
    # The unmasked predictions are the job's (a few are recomputed to make sure it is the same model).
    verify = texts[:4]
    seqs = [list(feats[t].input_ids) for t in verify]
    index: dict[tuple, int] = {}
    unit_cls: dict[str, int] = {}
    for row, holders, null_pos, ins in plan:
        hit_all = {t: masked_positions(t, row["word"]) for t in holders}
        runs = [" ".join(np.array(results[t].features)[hit_all[t]]) for t in holders]
        row["masked"] = max(set(runs), key=lambda r: (runs.count(r), r)) if runs else None
        # a phrase pushes toward the class its words' summed excess attribution points to (one of its
        # words alone may point the other way: under causal attention the phrase's effect shows at its
        # first word, and the next ones give some of it back)
        phrase_hits = {
            t: h for t, h in hit_all.items() if h.sum() > sum(x == row["word"] for x in norm_feats[t])
        }
        unit_cls[row["word"]] = _unit_class(results, phrase_hits, row["cls"]) if phrase_hits else row["cls"]
        for key in _pass_keys(row["word"], holders, null_pos, ins, masked_positions):
            if key in index:
                continue
            index[key] = len(seqs)
            if key[0] == "x":  # a run inserted at a place
                _, t, k, text = key
                seqs.append(list(featurizer(inserted(t, k, text)).input_ids))
                continue
            t = key[1]
            keep = ~hit_all[t] if key[0] == "m" else ~np.isin(np.arange(len(norm_feats[t])), key[2])
            (sq,), _ = masker(feats[t], keep[None])
            seqs.append(sq)
    probs = transform_outputs(adapter.final_logits(seqs), "prob").numpy() if seqs else np.zeros((0, 0))
    base = {t: np.asarray(results[t].probs, float) for t in texts}
    for i, t in enumerate(verify):
        if np.abs(probs[i] - base[t]).max() > 2e-3:
            raise ValueError(
                f"The model's prediction on result {_row_name(results[t], t)!r} is "
                f"{probs[i].round(4).tolist()}, but the explain job recorded {base[t].round(4).tolist()}: "
                "check the job's model, adapter, template and mask."
            )
    checked = []
    for row, holders, null_pos, ins in plan:
        w = row["word"]
        c = row["checked_cls"] = unit_cls[w]
        n = len(holders)
        keys = _pass_keys(w, holders, null_pos, ins, masked_positions)
        masked = probs[[index[k] for k in keys[:n]]].reshape(n, -1)
        null = probs[[index[k] for k in keys[n : 2 * n]]].reshape(n, -1)
        orig = np.array([base[t] for t in holders]).reshape(n, -1)
        drops, null_drops = orig[:, c] - masked[:, c], orig[:, c] - null[:, c]
        effect, p = paired_null_test(drops, null_drops)
        row.update(
            checked=True,
            checked_texts=n,
            flip_rate=float(np.mean(orig.argmax(1) != masked.argmax(1))) if n else None,
            prob_change=float(drops.mean()) if n else None,
            null_flip_rate=float(np.mean(orig.argmax(1) != null.argmax(1))) if n else None,
            null_prob_change=float(null_drops.mean()) if n else None,
            effect=effect if n else None,
            effect_p=p if n else None,
        )
        for key in INSERT_COLUMNS:
            row.pop(key, None)
        if ins:
            phrase_text, targets = ins[0], ins[1]
            m = len(targets)
            put = probs[[index[k] for k in keys[2 * n : 2 * n + m]]].reshape(m, -1)
            put_null = probs[[index[k] for k in keys[2 * n + m :]]].reshape(m, -1)
            before = np.array([base[t] for t in targets]).reshape(m, -1)
            gains, null_gains = put[:, c] - before[:, c], put_null[:, c] - before[:, c]
            ins_effect, ins_p = paired_null_test(gains, null_gains)
            row.update(
                inserted=phrase_text,
                insert_texts=m,
                insert_flip_rate=float(np.mean(before.argmax(1) != put.argmax(1))),
                insert_prob_change=float(gains.mean()),
                insert_null_prob_change=float(null_gains.mean()),
                insert_effect=ins_effect,
                insert_p=ins_p,
            )
        checked.append(row)
    # one Benjamini-Hochberg correction over every test made (removal and insertion of every word)
    tests = [(r, k) for r in checked for k in ("effect", "insert") if r.get(f"{k}_p") is not None]
    ps = np.array([r[f"{k}_p"] for r, k in tests])
    for (r, k), q in zip(tests, false_discovery_control(ps) if len(ps) else [], strict=True):
        r[f"{k}_q"] = float(q)
    for row in checked:
        row.setdefault("effect_q", None)
        by = [
            name
            for name, e, q in (
                ("removal", row.get("effect"), row.get("effect_q")),
                ("insertion", row.get("insert_effect"), row.get("insert_q")),
            )
            if e is not None and q is not None and e >= min_effect and q < alpha
        ]
        # a shortcut lowers p(class) when taken out and raises it when put in: a test that moves it the
        # other way (or not at all) contradicts the one that passed (a clause whose removal matters
        # through its context, a word that only helps where it is added)
        effects = (row.get("effect"), row.get("insert_effect"))
        row["contradicted"] = bool(by) and any(e is not None and e <= 0 for e in effects)
        row["flagged"] = bool(by) and not row["contradicted"]
        row["flagged_by"] = "+".join(by) if row["flagged"] else None
    report.settings.update(
        checked=len(plan),
        significant=sum(r["significant"] for r in report.rows),
        unchecked_significant=[r["word"] for r in report.rows if r.get("checked") is False],
        forward_passes=len(seqs),
        budget=budget,
        max_texts=max_texts,
        min_effect=min_effect,
        insertion=insertion,
    )

    def strength(r: Mapping[str, Any]) -> float:
        return max(r.get("effect") or 0.0, r.get("insert_effect") or 0.0)

    report.rows.sort(
        key=lambda r: (not r.get("flagged", False), -strength(r) if r.get("flagged") else r["rank"])
    )
    for i, r in enumerate(report.rows, 1):
        r["rank"] = i
    return report


def _pass_keys(w, holders, null_pos, ins, masked_positions) -> list[tuple]:
    """The forward passes a word's check needs, named by what they hold, so that words that need the
    same pass (the words of one phrase, nulls of one text) share it: per holding text the word masked
    (``("m", text, mask)``), then its null (``("n", text, positions)``); per text it is inserted into the
    phrase, then the null run (``("x", text, place, run)``)."""
    keys: list[tuple] = [("m", t, masked_positions(t, w).tobytes()) for t in holders]
    keys += [("n", t, n) for t, n in zip(holders, null_pos, strict=True)]
    if ins:
        phrase, targets, runs, places = ins
        keys += [("x", t, k, phrase) for t, k in zip(targets, places, strict=True)]
        keys += [("x", t, k, r) for t, k, r in zip(targets, places, runs, strict=True)]
    return keys


#: the columns the insertion test adds to a checked row
INSERT_COLUMNS = (
    "inserted",
    "insert_texts",
    "insert_flip_rate",
    "insert_prob_change",
    "insert_null_prob_change",
    "insert_effect",
    "insert_p",
    "insert_q",
)


def _unit_class(results: Sequence[ExplainRow], hits: Mapping[int, np.ndarray], default: int) -> int:
    """The class a masked unit (a phrase) pushes toward: the one its words' summed attribution beyond
    each text's mean favours most, over the texts ``hits`` names (``(n,)`` bool: the unit's features).
    With two classes and ``prob`` / ``log_odds`` scores, a score toward one class is minus the score
    toward the other; otherwise only texts explained for class c count toward c. ``default`` when
    no text says."""
    C = len(results[0].probs)
    fold = C == 2 and results[0].output in ("prob", "log_odds")
    total = np.zeros(C)
    seen = np.zeros(C, bool)
    for t, hit in hits.items():
        s = np.asarray(results[t].scores, float)
        excess = float(s[hit].sum() - hit.sum() * s.mean())
        for c in range(C):
            if results[t].target == c:
                total[c] += excess
                seen[c] = True
            elif fold:
                total[c] -= excess
                seen[c] = True
    if not seen.any():
        return default
    return int(np.argmax(np.where(seen, total, -np.inf)))
