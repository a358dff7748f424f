"""Kernel SHAP's coalition draw, chosen on validation texts: distinct unpaired, distinct paired, and the
with-replacement draw Captum's ``KernelShap`` makes, against exact Shapley values (issue 27).

For each of ``--texts`` Rotten Tomatoes sentences of the chosen split with ``--min-features..--max-features``
words, every one of the 2^n coalitions is masked with the shared masker and run once (the removal game by
default), which gives the exact Shapley values by enumeration and a table of the game's values; each
draw then samples ``k n - 2`` coalitions (k in ``--budgets``; plus the unmasked input and the empty one:
``k n`` passes) for ``--seeds`` seeds, and the same constrained weighted least-squares fit
(:func:`~pi_lightning.attributors.kernelshap.kernel_shap_fit`) turns them into values, so only the draw
differs. Reported per draw and budget: relative squared error ``|phi - phi*|^2 / |phi*|^2`` and Spearman
correlation with the exact values (means over texts of the means over seeds). The draws:

* ``replacement``: sizes from the Shapley kernel's mass, coalitions with replacement, equal weights
  (Captum's sampler; its fit differs only by a 1e6 weight on the two end coalitions instead of the
  exact constraint);
* ``unpaired``: :func:`~pi_lightning.attributors.kernelshap.kernel_shap_coalitions`, ``paired=False``;
* ``paired``: the same with each coalition's complement.

Run::

    python -m benchmarks.kernelshap_sampler --texts 4 --split val
    python -m benchmarks.kernelshap_sampler --model testing:gpt2 --adapter none --texts 1 --max-features 6

Writes ``kernelshap_sampler[_<tag>].{json,md}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from benchmarks._common import (
    add_common_args,
    load_model,
    md_table,
    resolve_template,
    result_stem,
    run_info,
    write_json,
    write_markdown,
)
from benchmarks.faithfulness_table import select_texts
from pi_lightning.attributors import KernelShapAttributor
from pi_lightning.attributors.kernelshap import _size_mass, kernel_shap_coalitions, kernel_shap_fit
from pi_lightning.features import Featurizer
from pi_lightning.testing import exact_shapley

__all__ = ["DRAWS", "main", "with_replacement"]


def with_replacement(n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Captum's draw: ``count`` coalitions with replacement, sizes from the kernel's mass, equal weights.

    Example:
        >>> Z, w = with_replacement(5, 8, np.random.default_rng(0))
        >>> Z.shape, float(w.sum())
        ((8, 5), 1.0)
    """
    mass = _size_mass(n)
    Z = np.zeros((count, n), dtype=bool)
    for r in range(count):
        Z[r, rng.choice(n, size=rng.choice(np.arange(1, n), p=mass), replace=False)] = True
    return Z, np.full(count, 1.0 / count)


DRAWS = {
    "replacement": with_replacement,
    "unpaired": lambda n, c, rng: kernel_shap_coalitions(n, c, rng, paired=False),
    "paired": lambda n, c, rng: kernel_shap_coalitions(n, c, rng, paired=True),
}


def main(argv: list[str] | None = None) -> dict:
    from scipy.stats import spearmanr

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, threads=1)
    p.add_argument("--split", default="val", choices=("val", "test"), help="where the texts come from")
    p.add_argument("--texts", type=int, default=4)
    p.add_argument("--min-features", type=int, default=8)
    p.add_argument("--max-features", type=int, default=10, help="at most 14: 2^n passes per text")
    p.add_argument("--budgets", default="2,4,8", help="budget multiples k (k n passes)")
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--mask", default="remove")
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    if args.max_features > 14:
        raise ValueError(f"--max-features {args.max_features}: exact enumeration runs 2^n passes; use <= 14.")
    budgets = [int(k) for k in args.budgets.split(",")]
    model, tok, dtype = load_model(args)
    template = resolve_template(args)
    info = run_info(args, dtype, "kernelshap_sampler.py", raw)
    featurizer = Featurizer(tok, "word", template)
    texts, labels = select_texts(
        "rotten_tomatoes", args.split, "word", args.max_features, args.texts, featurizer, args.min_features
    )
    err = {(k, d): [] for k in budgets for d in DRAWS}
    rho = {(k, d): [] for k in budgets for d in DRAWS}
    for text, label in zip(texts, labels, strict=True):
        att = KernelShapAttributor(model, tok, template=template, mask=args.mask, max_tokens=args.max_tokens)
        [f] = att.featurize(text)
        n = f.n
        game = att.coalition_function(f, label)
        every = np.array(list(itertools.product([False, True], repeat=n)))
        table = {row.tobytes(): v for row, v in zip(every, game(every), strict=True)}

        def value(Z, table=table):
            return np.array([table[row.tobytes()] for row in np.asarray(Z, dtype=bool)])

        phi = exact_shapley(value, n)
        for k in budgets:
            for name, draw in DRAWS.items():
                e, r = [], []
                for seed in range(args.seeds):
                    Z, w = draw(n, k * n - 2, np.random.default_rng(seed))
                    est = kernel_shap_fit(Z, value(Z) - game.f_empty, w, game.f_full - game.f_empty)
                    e.append(float(np.sum((est - phi) ** 2) / np.sum(phi**2)))
                    r.append(float(spearmanr(est, phi).statistic))
                err[(k, name)].append(float(np.mean(e)))
                rho[(k, name)].append(float(np.mean(r)))
        print(f"  n = {n}: done", flush=True)
    rows = [
        {
            "budget": f"{k}n",
            "draw": name,
            "relative_error": float(np.mean(err[(k, name)])),
            "relative_error_per_text": err[(k, name)],
            "spearman": float(np.mean(rho[(k, name)])),
        }
        for k in budgets
        for name in DRAWS
    ]
    result = {
        **info,
        "split": args.split,
        "texts": texts,
        "features": [featurizer(t).n for t in texts],
        "seeds": args.seeds,
        "mask": args.mask,
        "template": template,
        "rows": rows,
    }
    stem = result_stem(args, "kernelshap_sampler")
    write_json(stem.with_suffix(".json"), result)
    table = md_table(
        ["budget", "draw", "relative squared error ↓", "per text", "Spearman ↑"],
        [
            [
                r["budget"],
                r["draw"],
                f"{r['relative_error']:.3f}",
                ", ".join(f"{v:.3f}" for v in r["relative_error_per_text"]),
                f"{r['spearman']:.3f}",
            ]
            for r in rows
        ],
    )
    text = (
        "### Kernel SHAP's coalition draw against exact Shapley values\n\n"
        f"{len(texts)} Rotten Tomatoes {args.split} sentences (n = {min(result['features'])}.."
        f"{max(result['features'])} words), mask `{args.mask}`, template `{template!r}`, {args.seeds} seeds; "
        f"date {info['date']}; {info['machine']}.\n\nCommand: `{info['command']}`\n\n{table}"
    )
    write_markdown(stem.with_suffix(".md"), text)
    print(text, flush=True)
    return result


if __name__ == "__main__":
    main()
