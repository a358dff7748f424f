"""Which value function should be the default? Removal vs the paper's ``"..."`` on the same examples.

Reads two runs of :mod:`faithfulness_table` made on the same test sentences with the same model,
one with ``--mask remove`` and one with ``--mask ...``, and prints for each mask and method:

* AS AUC (higher is better) and IAS AUC (lower is better), mean over examples;
* the method's margin over Random *under the same mask* (AS: method - Random; IAS: Random - method),
  with a paired Wilcoxon signed-rank p-value (scipy) over examples;
* paired Wilcoxon tests of MP-PI and SP-PI against every other method under the same mask;
* between masks, a paired Wilcoxon test of each method's margin over Random (removal vs ``...``):
  absolute AUCs of the two masks score different games, margins over Random are comparable.

Writes ``value_function.{json,md,png}`` under ``--out``.

Run::

    python -m benchmarks.faithfulness_table --mask remove --template "Review: {text}" --tag vf_remove ...
    python -m benchmarks.faithfulness_table --mask ...    --template "Review: {text}" --tag vf_dots ...
    python -m benchmarks.value_function --remove results/faithfulness_rotten_tomatoes_word_vf_remove.json \\
        --dots results/faithfulness_rotten_tomatoes_word_vf_dots.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks._common import RESULTS, md_table, paired_wilcoxon, write_json, write_markdown

__all__ = ["compare", "main"]


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of two per-example series: a method run on a subset ran on the first examples."""
    k = min(len(a), len(b))
    return np.asarray(a, float)[:k], np.asarray(b, float)[:k]


def _p(a, b) -> float:
    """Two-sided paired Wilcoxon p-value over the common examples (1.0 when the pairs are all equal)."""
    return paired_wilcoxon(a, b, equal=1.0)


def _margins(run: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per method, per-example margins over Random: AS (method - Random), IAS (Random - method)."""
    pe = run["per_example"]
    out = {}
    for m, d in pe.items():
        if m == "random":
            continue
        a, r_as = _paired(d["as_auc"], pe["random"]["as_auc"])
        i, r_ias = _paired(d["ias_auc"], pe["random"]["ias_auc"])
        out[m] = {"as": a - r_as, "ias": r_ias - i}
    return out


def compare(remove: dict, dots: dict) -> dict:
    """Everything the module docstring lists, as a dict (see :func:`main` for the tables)."""
    for key in ("dataset", "granularity", "template", "adapter"):
        if remove.get(key) != dots.get(key):
            raise ValueError(
                f"The two runs differ in {key!r}: {remove.get(key)!r} vs {dots.get(key)!r}; "
                "compare runs on the same examples and model."
            )
    out: dict = {
        # Both runs select the same test texts in the same order: a shorter (partial) run's examples
        # are the first ones of the other, and the between-mask tests use those.
        "examples": min(remove["examples"], dots["examples"]),
        "examples_remove": remove["examples"],
        "examples_dots": dots["examples"],
        "dataset": remove.get("dataset", "rotten_tomatoes"),
        "granularity": remove.get("granularity", "word"),
        "template": remove["template"],
        "adapter": remove["adapter"],
        "model_accuracy_on_examples": remove.get("model_accuracy_on_examples"),
        "masks": {},
    }
    for name, run in (("remove", remove), ("...", dots)):
        pe = run["per_example"]
        margins = _margins(run)
        rows = {}
        for m, d in pe.items():
            a, i = np.array(d["as_auc"]), np.array(d["ias_auc"])
            row = {
                "as_auc": float(a.mean()),
                "ias_auc": float(i.mean()),
                "forward_passes_per_example": run["rows"][m].get("forward_passes_per_example"),
            }
            if m in margins:
                row.update(
                    as_margin=float(margins[m]["as"].mean()),
                    ias_margin=float(margins[m]["ias"].mean()),
                    as_margin_p=_p(a, pe["random"]["as_auc"]),
                    ias_margin_p=_p(i, pe["random"]["ias_auc"]),
                )
            for ref in ("mp-pi", "sp-pi"):
                if ref in pe and m != ref:
                    row[f"as_p_vs_{ref}"] = _p(pe[ref]["as_auc"], a)
                    row[f"ias_p_vs_{ref}"] = _p(pe[ref]["ias_auc"], i)
            rows[m] = row
        out["masks"][name] = rows
    between = {}
    mr, md = _margins(remove), _margins(dots)
    for m in sorted(set(mr) & set(md)):
        k = min(len(mr[m]["as"]), len(md[m]["as"]))
        between[m] = {
            "examples": k,
            "as_margin_remove": float(mr[m]["as"][:k].mean()),
            "as_margin_dots": float(md[m]["as"][:k].mean()),
            "as_p": _p(mr[m]["as"], md[m]["as"]),
            "ias_margin_remove": float(mr[m]["ias"][:k].mean()),
            "ias_margin_dots": float(md[m]["ias"][:k].mean()),
            "ias_p": _p(mr[m]["ias"], md[m]["ias"]),
        }
    out["margin_remove_vs_dots"] = between
    return out


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in res["margin_remove_vs_dots"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    x = np.arange(len(methods))
    for ax, key, title in (
        (axes[0], "as", "AS AUC margin over Random ↑"),
        (axes[1], "ias", "IAS AUC margin over Random ↑"),
    ):
        r = [res["margin_remove_vs_dots"][m][f"{key}_margin_remove"] for m in methods]
        d = [res["margin_remove_vs_dots"][m][f"{key}_margin_dots"] for m in methods]
        ax.bar(x - 0.2, r, 0.4, label="remove")
        ax.bar(x + 0.2, d, 0.4, label="'...'")
        ax.set_xticks(x, methods, rotation=20, fontsize=8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{res['dataset']} test, {res['granularity']} level, {res['examples']} common examples, "
        f"template {res['template']!r}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remove", required=True, help="faithfulness_table JSON of the --mask remove run")
    ap.add_argument("--dots", required=True, help="faithfulness_table JSON of the --mask ... run")
    ap.add_argument("--out", default=str(RESULTS), help="folder for the JSON/Markdown/PNG results")
    ap.add_argument("--tag", default=None, help="suffix of the result file names")
    args = ap.parse_args(argv)
    res = compare(json.loads(Path(args.remove).read_text()), json.loads(Path(args.dots).read_text()))
    res["inputs"] = {"remove": args.remove, "dots": args.dots}
    tag = f"_{args.tag}" if args.tag else ""
    stem = Path(args.out) / f"value_function{tag}"
    write_json(stem.with_suffix(".json"), res)
    title = (
        f"# Which value function: removal vs '...' ({res['dataset']} test, {res['granularity']} level; "
        f"{res['examples_remove']} examples with removal, {res['examples_dots']} with '...', the first "
        f"{res['examples']} common; same model, template {res['template']!r})"
    )
    lines = [title, ""]
    for mask, rows in res["masks"].items():
        table = []
        for m, r in rows.items():
            table.append(
                [
                    m,
                    f"{r['as_auc']:.3f}",
                    f"{r['ias_auc']:.3f}",
                    "" if "as_margin" not in r else f"{r['as_margin']:+.3f} (p={r['as_margin_p']:.2g})",
                    "" if "ias_margin" not in r else f"{r['ias_margin']:+.3f} (p={r['ias_margin_p']:.2g})",
                    ""
                    if "as_p_vs_mp-pi" not in r
                    else f"{r['as_p_vs_mp-pi']:.2g} / {r['ias_p_vs_mp-pi']:.2g}",
                    f"{r['forward_passes_per_example']:.1f}",
                ]
            )
        lines += [
            f"## mask {mask!r}",
            "",
            md_table(
                [
                    "method",
                    "AS AUC ↑",
                    "IAS AUC ↓",
                    "AS - Random",
                    "Random - IAS",
                    "p vs MP-PI (AS / IAS)",
                    "passes",
                ],
                table,
            ),
            "",
        ]
    table = [
        [
            m,
            b["examples"],
            f"{b['as_margin_remove']:+.3f}",
            f"{b['as_margin_dots']:+.3f}",
            f"{b['as_p']:.2g}",
            f"{b['ias_margin_remove']:+.3f}",
            f"{b['ias_margin_dots']:+.3f}",
            f"{b['ias_p']:.2g}",
        ]
        for m, b in res["margin_remove_vs_dots"].items()
    ]
    lines += [
        "## Margin over Random, removal vs '...' (paired Wilcoxon over examples)",
        "",
        md_table(
            [
                "method",
                "pairs",
                "AS margin remove",
                "AS margin '...'",
                "p",
                "IAS margin remove",
                "IAS margin '...'",
                "p",
            ],
            table,
        ),
        "",
    ]
    text = "\n".join(lines)
    write_markdown(stem.with_suffix(".md"), text)
    _plot(res, stem.with_suffix(".png"))
    print(text)
    return res


if __name__ == "__main__":
    main()
