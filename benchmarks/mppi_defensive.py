"""MP-PI's defensive mixture: how much of P* to mix into P' (issue 14), chosen on validation texts.

MP-PI weights each collected coalition by P*(U) / c(U) (importance weights of the Shapley kernel over
the probability that its passes collect U). Eqn 16's optimum P' leaves those weights very uneven for
long texts; mixing a fraction ``defensive`` of inputs drawn from P* bounds them. This script measures,
for each mixture, the relative squared error of MP-PI against a high-budget permutation reference of
the removal game (noise-corrected, :func:`shapley_accuracy.relative_error`), beside Kernel SHAP at
the same budget, and the effective sample size of the regression weights.

It runs on the tiny random GPT-2 by default (cheap enough for a 2-core CPU: the reference is 2,000
antithetic permutations per text) on IMDB **validation** reviews cut to n words, so that the choice is
made on data that no reported figure uses; the reported figures (benchmarks/results/RESULTS.md) are
on test texts with the benchmark model (``shapley_accuracy.py --reuse-reference``). Run::

    python -m benchmarks.mppi_defensive --lengths 12,24,40
    python -m benchmarks.mppi_defensive --model smollm2-135m-instruct --adapter benchmark --lengths 20 \
        --permutations 200 --texts 2      # the benchmark model (slow on a CPU)

Prints one table per length and writes ``mppi_defensive[_<tag>].json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks._common import (
    add_common_args,
    load_model,
    resolve_template,
    result_stem,
    run_info,
    write_json,
)
from benchmarks.shapley_accuracy import permutation_reference, relative_error
from pi_lightning.attributors._shapley import mask_distribution
from pi_lightning.attributors.kernelshap import KernelShapAttributor
from pi_lightning.attributors.mppi import MPPI
from pi_lightning.data import load_movie_reviews
from pi_lightning.features import Featurizer
from pi_lightning.inference import ClassifierAdapter
from pi_lightning.masking import Masker

__all__ = ["effective_sample_size", "main"]


def effective_sample_size(n: int, passes: int, defensive: float, seed: int = 0) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of MP-PI's regression weights for ``passes``
    masks drawn at ``n`` features (the prefix coalitions each pass collects, merged as MP-PI does).

    Example:
        >>> effective_sample_size(8, 64, 0.7) > effective_sample_size(8, 64, 0.05)
        True
    """
    d = mask_distribution(n, defensive=defensive)
    z = d.sample(passes, np.random.default_rng(seed))
    tri = np.arange(n)[None, :] <= np.arange(n)[:, None]  # (n, n): row l = prefix 1..l
    # (sum of active features, n): every prefix coalition of every drawn mask.
    rows = np.concatenate([m[None, :] & tri[np.nonzero(m)[0]] for m in z])
    rows = rows[~rows.all(1)]
    uniq, counts = np.unique(rows, axis=0, return_counts=True)
    w = d.coalition_weights(uniq) * counts
    return float(w.sum() ** 2 / (w**2).sum())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, adapter="none", model="testing:gpt2", threads=1)
    p.add_argument("--lengths", default="12,24,40", help="comma-separated word counts")
    p.add_argument("--texts", type=int, default=4, help="IMDB validation reviews per length")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", default="2,4,8", help="budget multiples k (k n passes)")
    p.add_argument("--defensive", default="0.05,0.2,0.35,0.5,0.7", help="mixtures to compare")
    p.add_argument("--permutations", type=int, default=2000, help="walks of the reference")
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    if args.template is None:
        args.template = "Review: {text}"
    lengths = [int(x) for x in args.lengths.split(",")]
    budgets = [int(x) for x in args.budgets.split(",")]
    mixtures = [float(x) for x in args.defensive.split(",")]
    if args.texts < 1 or args.seeds < 1 or min(lengths) < 2:
        raise ValueError(
            f"Need --texts >= 1, --seeds >= 1 and lengths >= 2, got {args.texts}, {args.seeds}, {lengths}."
        )

    model, tok, dtype = load_model(args)
    if model.config.num_labels < 2:
        raise ValueError(f"The model must classify into >= 2 classes, it has {model.config.num_labels}.")
    info = run_info(args, dtype, "mppi_defensive.py", raw)
    template = resolve_template(args)
    featurizer = Featurizer(tok, "word", template)
    adapter, masker = ClassifierAdapter(model, max_tokens=args.max_tokens), Masker(tok, "remove")
    common = {"granularity": "word", "template": template, "mask": "remove", "max_tokens": args.max_tokens}
    reviews = load_movie_reviews("imdb", "val").texts[: args.texts]
    variants = [(f"mp-pi@{d:g}", {"defensive": d}) for d in mixtures] + [
        ("mp-pi shapley S+", {"distribution": "shapley"}),
        ("kernel-shap", None),
    ]
    table = []
    for n_words in lengths:
        errs: dict[tuple[str, int], list[float]] = {}
        for ti, review in enumerate(reviews):
            f = featurizer(" ".join(review.replace("<br />", " ").split()[:n_words]))
            ref = permutation_reference(adapter, masker, f, 1, args.permutations, seed=ti)
            for k in budgets:
                for name, kw in variants:
                    for seed in range(args.seeds):
                        if kw is None:
                            att = KernelShapAttributor(model, tok, budget=k * f.n, seed=seed, **common)
                        else:
                            att = MPPI(model, tok, budget=f"{k}n", seed=seed, **common, **kw)
                        [a] = att.attribute([f], target=1)
                        _, rel = relative_error(a.scores.double().numpy(), ref["full"], ref["se"])
                        errs.setdefault((name, k), []).append(rel)
        print(f"n = {n_words} words, {len(reviews)} validation reviews x {args.seeds} seeds")
        for k in budgets:
            for name, _ in variants:
                e = errs[(name, k)]
                ess = (
                    effective_sample_size(n_words, k * n_words, float(name.split("@")[1]))
                    if "@" in name
                    else float("nan")
                )
                row = {
                    "n": n_words,
                    "budget_multiple": k,
                    "method": name,
                    "rel_err_mean": float(np.mean(e)),
                    "rel_err_median": float(np.median(e)),
                    "ess": ess,
                }
                table.append(row)
                print(
                    f"  {k}n {name:18s} rel. error {row['rel_err_mean']:8.3f}  median "
                    f"{row['rel_err_median']:8.3f}  ESS {ess:6.1f}",
                    flush=True,
                )
    result = {**info, "template": template, "permutations": args.permutations, "rows": table}
    path = write_json(result_stem(args, "mppi_defensive").with_suffix(".json"), result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
