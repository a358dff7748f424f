"""One method in two faithfulness runs on the same examples: a paired comparison (e.g. a setting changed).

Reads two JSON files written by :mod:`faithfulness_table` on the same test examples with the same model
(checked: Random, seeded per text, must give identical per-example AUCs in both) and prints, for the
method named ``--method``, the mean AS AUC (higher is better) and IAS AUC (lower is better) in each run
with a paired two-sided Wilcoxon p-value (scipy), and the same test of run B's method against every
other method of run A. Run::

    python -m benchmarks.paired_runs results/faithfulness_imdb_sentence_remove.json \
        results/faithfulness_imdb_sentence_remove_mppi07.json --method mp-pi --labels "0.05,0.7"
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from benchmarks._common import paired_wilcoxon

__all__ = ["compare", "main"]


def compare(run_a: dict, run_b: dict, method: str) -> list[dict]:
    """Per metric: run B's ``method`` against run A's, and against each other method of run A, paired
    over the examples both runs hold (a method run on a subset is paired on its first examples)."""
    for name, run in (("A", run_a), ("B", run_b)):
        if method not in run.get("per_example", {}):
            raise ValueError(
                f"Run {name} has no per-example results for {method!r}; it has "
                f"{', '.join(run.get('per_example', {})) or 'none'}. Pass a method both runs explained."
            )
    if "random" in run_a["per_example"] and "random" in run_b["per_example"]:
        ra, rb = (np.array(r["per_example"]["random"]["as_auc"]) for r in (run_a, run_b))
        k = min(len(ra), len(rb))
        if not np.allclose(ra[:k], rb[:k]):
            raise ValueError(
                "The two runs' Random rows differ example by example: they were not made on the same "
                "examples with the same model, so they cannot be paired."
            )
    out = []
    for metric in ("as_auc", "ias_auc"):
        b = np.array(run_b["per_example"][method][metric])
        for other, res in run_a["per_example"].items():
            a = np.array(res[metric])
            k = min(len(a), len(b))
            out.append(
                {
                    "metric": metric,
                    "against": other,
                    "pairs": k,
                    "mean_a": float(a[:k].mean()),
                    "mean_b": float(b[:k].mean()),
                    "p": paired_wilcoxon(a, b),
                }
            )
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", help="faithfulness_table JSON (the reference run)")
    p.add_argument("run_b", help="faithfulness_table JSON (the changed run, same examples)")
    p.add_argument("--method", default="mp-pi")
    p.add_argument("--labels", default="A,B", help="names of the two runs in the printout")
    args = p.parse_args(argv if argv is not None else sys.argv[1:])
    la, lb = [*args.labels.split(","), "A", "B"][:2]
    with open(args.run_a) as fa, open(args.run_b) as fb:
        rows = compare(json.load(fa), json.load(fb), args.method)
    for r in rows:
        who = f"{args.method} ({la})" if r["against"] == args.method else f"{r['against']} ({la})"
        print(
            f"{r['metric']:7s} {args.method} ({lb}) {r['mean_b']:.3f} vs {who} {r['mean_a']:.3f}: "
            f"{r['pairs']} pairs, p = {r['p']:.2g}"
        )
    return rows


if __name__ == "__main__":
    main()
