"""Faithfulness table in the layout of the paper's Tables 2, 3, 5 and 6, on our own fine-tuned model.

Every registered method (Random, A-Last, SP-PI, GAE, Inp x Grad, LRP, IG, Kernel SHAP, shap's Permutation
and Partition explainers, MP-PI, UDIG, AT2) explains the true class of the same test examples through one
:class:`~pi_lightning.metrics.ProbeEvaluator` per method (the evaluation the training monitor runs),
which attributes, then runs, with the mask every method is built with (removal by default, ``--mask
...`` for the paper's), the activation study (AS AUC, higher is better), the inverse study (IAS AUC,
lower is better) and DIG/UDIG's log-odds (lower), comprehensiveness (higher) and sufficiency (lower)
at top-20%. Each row gives the mean and the 95% half-width over examples, the declared cost, the forward-pass
equivalents each method reported and its seconds per example. Paired two-sided Wilcoxon tests
(scipy) of MP-PI and of SP-PI against every other method say whether the differences are
distinguishable from noise at this sample size, and the run records whether the paper's ordering
holds (MP-PI best overall; SP-PI best among the methods of cost <= 1x).

The examples run in rounds of ``--chunk``: every method explains a round, then all result files are
rewritten from the examples done so far (a run stopped early still leaves a table, marked PARTIAL).
Methods named in ``--subset-methods`` run on the first ``--subset-examples`` examples only (the
costly ones, when the full set is out of reach); their paired tests use those common examples.

The model defaults to the cached benchmark adapter (``--adapter benchmark``, trained once if absent)
and the template to the one the adapter was trained with (its ``config.yaml``).

Data: Rotten Tomatoes test sentences at word level (default; sentences of at most ``--max-features``
words), or IMDB test reviews at sentence level (``--dataset imdb``: ``<br />`` tags replaced by
spaces, reviews cut after ``--max-features`` sentences). AT2 is fitted first on ``--at2-fit``
training texts (its own random ablations; the fit time is reported separately).

Run (one command; the adapter comes from ``pi-lightning finetune``)::

    python -m benchmarks.faithfulness_table --examples 32 --max-features 20
    python -m benchmarks.faithfulness_table --dataset imdb --examples 8 --max-features 8
    python -m benchmarks.faithfulness_table --device cuda --examples 500     # bf16 on a GPU
    python -m benchmarks.faithfulness_table --model testing:gpt2 --adapter none --examples 3   # smoke test

Writes ``faithfulness_<dataset>_<granularity>[_<tag>].{json,csv,md,png}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import (
    add_common_args,
    benchmark_adapter_dir,
    load_model,
    md_table,
    paired_wilcoxon,
    resolve_template,
    run_info,
    write_json,
    write_markdown,
)
from pi_lightning.attributors import available_methods, get_attributor
from pi_lightning.attributors._shapley import mask_distribution
from pi_lightning.data import load_movie_reviews
from pi_lightning.features import Featurizer
from pi_lightning.metrics import METRICS, ProbeEvaluator
from pi_lightning.metrics.evaluator import ScoredExample
from pi_lightning.metrics.functional.stats import mean_confidence_interval

__all__ = ["PAPER_ORDER", "main"]

#: Rows in the order of the paper's tables.
PAPER_ORDER = (
    "random",
    "a-last",
    "sp-pi",
    "gae",
    "inputxgrad",
    "lrp",
    "ig",
    "kernel-shap",
    "shap-permutation",
    "shap-partition",
    "mp-pi",
    "udig",
    "at2",
)
LABELS = {
    "random": "Random",
    "a-last": "A-Last",
    "sp-pi": "SP-PI",
    "gae": "GAE",
    "inputxgrad": "Inp×Grad",  # noqa: RUF001 - the paper's row label
    "lrp": "LRP",
    "ig": "IG",
    "kernel-shap": "Kernel SHAP",
    "shap-permutation": "shap Permutation",
    "shap-partition": "shap Partition",
    "mp-pi": "MP-PI",
    "udig": "UDIG",
    "at2": "AT2",
}
#: Higher is better for these metrics, lower for the others.
HIGHER = {
    "as_auc": True,
    "ias_auc": False,
    "log_odds": False,
    "comprehensiveness": True,
    "sufficiency": False,
}
CHEAP_COSTS = ("0", "1x")


def select_texts(
    dataset: str,
    split: str,
    granularity: str,
    max_features: int,
    count: int,
    featurizer: Featurizer,
    min_features: int = 2,
    cut: bool = False,
    skip: int = 0,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> tuple[list[str], list[int]]:
    """The first ``count`` texts of a split with ``min_features..max_features`` features, after the
    first ``skip`` such texts and leaving out those in ``exclude`` (whitespace-normalised texts).

    Word level keeps texts that are short enough (or, with ``cut``, cuts longer ones after their
    ``max_features``-th word: long texts of a given length); sentence level cuts a review after its
    ``max_features``-th sentence (the paper's setting for long IMDB reviews, shortened for CPU).
    """
    data = load_movie_reviews(dataset, split)
    texts, labels = [], []
    for text, label in zip(data.texts, data.labels, strict=False):
        text = " ".join(text.replace("<br />", " ").split())
        if not text or text in exclude:
            continue
        f = featurizer(text)
        if (cut or granularity == "sentence") and f.n > max_features:
            text = text[: f.char_spans[max_features - 1][1]]
            f = featurizer(text)
        if min_features <= f.n <= max_features:
            if skip > 0:
                skip -= 1
                continue
            texts.append(text)
            labels.append(int(label))
        if len(texts) == count:
            break
    if len(texts) < count:
        warnings.warn(
            f"Only {len(texts)} {split} texts of {dataset} have {min_features}..{max_features} "
            f"{granularity} features; asked for {count}.",
            UserWarning,
            stacklevel=2,
        )
    return texts, labels


#: Methods that draw at random: each takes ``seed``, and derives every text's draws from it and the text
#: (:func:`~pi_lightning.attributors.base.text_rng`), so no two texts share a draw.
SEEDED = ("mp-pi", "kernel-shap", "shap-permutation", "random", "at2")


def default_job_texts(adapter: str | None, dataset: str) -> set[str]:
    """The texts of ``dataset`` the job that trained ``adapter`` used (whitespace-normalised): its
    validation subset (``n_val``) and its test probes (``n_probe`` texts of at most ``probe_max_words``
    words), read from the ``config.yaml`` beside the adapter; empty when there is none or the job
    trained on another dataset."""
    if not adapter:
        return set()
    config = Path(adapter).parent / "config.yaml"
    if not config.is_file():
        return set()
    import yaml

    data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    if data.get("dataset") != dataset:
        return set()
    seed = int(data.get("seed") or 0)
    val = load_movie_reviews(dataset, "val", seed=seed).texts
    used = list(val[: data["n_val"]] if data.get("n_val") is not None else val)
    words = data.get("probe_max_words")
    probes = [
        t
        for t in load_movie_reviews(dataset, "test", seed=seed).texts
        if words is None or len(t.split()) <= words
    ]
    used += probes[: int(data.get("n_probe") or 16)]
    return {" ".join(t.replace("<br />", " ").split()) for t in used}


def _method_kwargs(name: str, seed: int, budget: str | None = None) -> dict:
    kw = {"seed": seed} if name in SEEDED else {}
    if budget is not None and name in ("mp-pi", "kernel-shap", "shap-permutation", "shap-partition"):
        kw["budget"] = budget
    return kw


def ordering(rows: dict[str, dict], per_example: dict[str, dict]) -> dict:
    """Does the paper's ordering hold? MP-PI best overall, SP-PI best among cost <= 1x, per metric."""
    out = {}
    for metric in ("as_auc", "ias_auc"):
        sign = 1 if HIGHER[metric] else -1
        entry = {}
        for who, pool in (
            ("mp-pi", [m for m in rows]),
            ("sp-pi", [m for m in rows if rows[m]["cost"] in CHEAP_COSTS]),
        ):
            if who not in rows:
                continue
            others = [m for m in pool if m != who]
            if not others:
                continue
            best_other = max(others, key=lambda m: sign * rows[m][metric])
            holds = sign * rows[who][metric] >= sign * rows[best_other][metric]
            entry[who] = {
                "best": holds,
                "runner_up" if holds else "beaten_by": best_other,
                "difference": rows[who][metric] - rows[best_other][metric],  # means over each one's examples
                "wilcoxon_p": paired_wilcoxon(per_example[who][metric], per_example[best_other][metric]),
                "pool": "all methods" if who == "mp-pi" else "cost <= 1x",
            }
        out[metric] = entry
    return out


def _plot(path: Path, curves: dict[str, dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.linspace(0, 1, 21)
    for name, c in curves.items():
        style = "-" if name in ("mp-pi", "sp-pi") else "--"
        lw = 2.2 if name in ("mp-pi", "sp-pi") else 1.0
        axes[0].plot(x, c["as"], style, lw=lw, label=LABELS.get(name, name))
        axes[1].plot(x, c["ias"], style, lw=lw, label=LABELS.get(name, name))
    axes[0].set_title("Activation study (higher is better)")
    axes[1].set_title("Inverse activation study (lower is better)")
    for ax in axes:
        ax.set_xlabel("fraction of features activated")
        ax.set_ylabel("p(true class)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pairwise_tests(per_example: dict[str, dict], methods=("mp-pi", "sp-pi")) -> dict:
    """Paired two-sided Wilcoxon p-values of each of ``methods`` against every other method, per metric
    (AS, IAS and their gap AS - IAS), on the examples both were run on (the first ``min`` of their counts:
    subsets are prefixes)."""
    out: dict[str, dict] = {}
    for who in methods:
        if who not in per_example:
            continue
        out[who] = {}
        for other, d in per_example.items():
            if other == who:
                continue
            out[who][other] = {}
            for m in ("as_auc", "ias_auc", "gap"):
                a, b = per_example[who][m], d[m]
                k = min(len(a), len(b))
                out[who][other][m] = {
                    "difference": float((a[:k] - b[:k]).mean()) if k else float("nan"),
                    "p": paired_wilcoxon(a[:k], b[:k]),
                    "pairs": k,
                }
    return out


def _paired_table(tests: dict) -> str:
    """MP-PI's and SP-PI's paired differences to every other method (AS, IAS, gap) with their p-values."""
    rows = []
    for who, against in tests.items():
        for other, t in against.items():
            rows.append(
                [
                    f"{LABELS.get(who, who)} − {LABELS.get(other, other)}",  # noqa: RUF001 - a minus sign
                    t["as_auc"]["pairs"],
                    *[
                        f"{t[m]['difference']:+.3f} (p = {t[m]['p']:.2g})"
                        for m in ("as_auc", "ias_auc", "gap")
                    ],
                ]
            )
    if not rows:
        return ""
    head = ["paired difference", "pairs", "AS (p)", "IAS (p)", "gap (p)"]
    return "\nPaired differences (two-sided Wilcoxon):\n\n" + md_table(head, rows)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--dataset", default="rotten_tomatoes", choices=("rotten_tomatoes", "imdb"))
    p.add_argument(
        "--granularity", default=None, help="word | sentence (default: word for RT, sentence for IMDB)"
    )
    p.add_argument("--examples", type=int, default=32, help="examples (the paper: 500 test examples)")
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "val", "validation"),
        help="the data split the examples come from: 'val' (validation, for choosing settings) or 'test' "
        "(for reporting; the default)",
    )
    p.add_argument(
        "--skip",
        type=int,
        default=0,
        help="skip the first SKIP eligible texts of the split (e.g. those an earlier reported table used)",
    )
    p.add_argument(
        "--keep-default-job-texts",
        action="store_true",
        help="keep the texts the benchmark adapter's training job used (its validation subset and test "
        "probes); they are left out by default",
    )
    p.add_argument(
        "--budget",
        default=None,
        help="budget of the sampling methods (MP-PI, Kernel SHAP, shap's explainers), e.g. '2n' (default: "
        "each method's own, 2n)",
    )
    p.add_argument(
        "--points",
        type=int,
        default=None,
        help="AS/IAS curve points per text (default: exact curves, every step; fewer passes when lower)",
    )
    p.add_argument(
        "--max-features", type=int, default=None, help="default 20 words (RT) / 8 sentences (IMDB)"
    )
    p.add_argument("--methods", default=",".join(PAPER_ORDER), help="comma-separated registered names")
    p.add_argument(
        "--subset-methods",
        default="",
        help="comma-separated methods run only on the first --subset-examples examples (the costly ones)",
    )
    p.add_argument("--subset-examples", type=int, default=None, help="examples of the --subset-methods")
    p.add_argument(
        "--chunk",
        type=int,
        default=10,
        help="examples per round: every method runs on a round, then the results so far are written",
    )
    p.add_argument(
        "--mask",
        default="remove",
        help="mask of the perturbation methods and the metrics: 'remove' (the library default) or '...' "
        "(the paper's)",
    )
    p.add_argument(
        "--resume",
        default=None,
        help="JSON of an earlier run of this script on the same data, template and mask: its examples "
        "are kept and the run continues after them (its methods not in --methods stay as they are)",
    )
    p.add_argument("--top-k", type=float, default=20.0, help="top-k percent for log-odds/comp./suff.")
    p.add_argument("--at2-fit", type=int, default=32, help="training texts for AT2's fit")
    p.add_argument("--seed", type=int, default=0)
    argv = list(argv) if argv is not None else None
    import sys

    raw = argv if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    granularity = args.granularity or ("sentence" if args.dataset == "imdb" else "word")
    max_features = args.max_features or (8 if granularity == "sentence" else 20)
    args.max_features = max_features  # resolved, recorded with the results
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    subset = {m.strip() for m in args.subset_methods.split(",") if m.strip()}
    unknown = [m for m in [*methods, *subset] if m not in available_methods()]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}: expected names from {available_methods()}.")
    if args.chunk < 1:
        raise ValueError(f"--chunk must be a positive number of examples, got {args.chunk}.")

    model, tok, dtype = load_model(args)
    template = resolve_template(args)
    info = run_info(args, dtype, "faithfulness_table.py", raw)
    mask = args.mask if args.mask in ("remove", "pad", "unk") or not args.mask.isdigit() else int(args.mask)
    common = {
        "granularity": granularity,
        "template": template,
        "mask": mask,
        "max_tokens": args.max_tokens,
    }
    featurizer = Featurizer(tok, granularity, template)
    split = "val" if args.split == "validation" else args.split
    args.split = split  # resolved, recorded with the results
    excluded = set() if args.keep_default_job_texts else default_job_texts(info["adapter"], args.dataset)
    texts, labels = select_texts(
        args.dataset,
        split,
        granularity,
        max_features,
        args.examples,
        featurizer,
        skip=args.skip,
        exclude=excluded,
    )
    if not texts:
        raise ValueError(f"No {args.dataset} {split} text has 2..{max_features} {granularity} features.")
    info["selection"] = {
        "split": split,
        "skip": args.skip,
        "excluded_default_job_texts": len(excluded),
        "texts": texts,
    }
    n_feats = [featurizer(t).n for t in texts]
    limit = {
        m: (args.subset_examples if m in subset and args.subset_examples else len(texts)) for m in methods
    }
    print(
        f"{info['model']} + {info['adapter']} on {info['device']}/{dtype}; {args.dataset} {split}, "
        f"{len(texts)} examples, {granularity} level, n = {min(n_feats)}..{max(n_feats)} "
        f"(mean {np.mean(n_feats):.1f}); "
        f"template {template!r}; mask {mask!r}; explained class = true label; "
        f"subset {sorted(subset)} on {args.subset_examples} examples",
        flush=True,
    )

    attributors, extras = {}, {}
    for name in methods:
        att = get_attributor(name, model, tok, **common, **_method_kwargs(name, args.seed, args.budget))
        extra = {}
        if name == "at2":
            train, train_y = select_texts(
                args.dataset, "train", granularity, max_features, args.at2_fit, featurizer
            )
            t0 = time.perf_counter()
            att.fit(train, target=train_y)
            extra = {
                "at2_fit_seconds": time.perf_counter() - t0,
                "at2_fit_passes": att.fit_info["forward_passes"],
                "at2_fit_examples": len(train),
                "at2_train_correlation": att.fit_info["correlation"],
            }
        if name == "mp-pi":  # P' is computed once per n and cached: time it apart from the attributions
            t0 = time.perf_counter()
            for n in sorted(set(n_feats)):
                mask_distribution(n, att.use_splus, att.distribution, defensive=att.defensive)
            extra = {"p_prime_seconds_all_n": time.perf_counter() - t0}
        attributors[name], extras[name] = att, extra

    # Per method one evaluator (attribute -> score -> aggregate), fed round by round; `seconds` adds the
    # attribution time of a resumed run's examples to the evaluator's own.
    evaluators = {
        name: ProbeEvaluator(
            att, target="label", top_k=args.top_k, chunk=max(args.chunk, 1), refit=False, points=args.points
        )
        for name, att in attributors.items()
    }
    seconds = {name: 0.0 for name in methods}
    costs = {name: att.cost for name, att in attributors.items()}
    first = 0
    if args.resume:
        first, earlier = _resume(args, info, template, mask, granularity, len(texts))
        for name, (examples, secs, cost, extra) in earlier.items():
            if name not in evaluators:  # kept as it was: it ran on the first examples only
                evaluators[name] = ProbeEvaluator(
                    next(iter(attributors.values())), target="label", top_k=args.top_k
                )
                limit[name] = first
            evaluators[name].extend(examples)
            seconds[name], costs[name] = secs, cost
            extras[name] = {**extra, **extras.get(name, {})}
        info["resumed_from"] = {"path": args.resume, "examples": first}
    result: dict = {}
    for start in range(first, len(texts), args.chunk):
        t_round = time.perf_counter()
        for name in methods:
            stop = min(start + args.chunk, len(texts), limit[name])
            if stop > start:
                evaluators[name].update(texts[start:stop], labels[start:stop], index=range(start, stop))
        done = min(start + args.chunk, len(texts))
        print(f"  examples {done}/{len(texts)}: round {time.perf_counter() - t_round:.1f} s", flush=True)
        spent = {n: seconds.get(n, 0.0) + ev.attribution_seconds for n, ev in evaluators.items()}
        result = _write(
            args, info, template, mask, granularity, texts, n_feats, evaluators, spent, extras, done, costs
        )
    return result


def _resume(args, info, template, mask, granularity, planned) -> tuple[int, dict]:
    """The examples of an earlier run, to extend each method's evaluator with: ``(examples done,
    {method: (scored examples, seconds, cost, extras)})``. Per-example metrics are kept exactly; curves
    and passes as their means over the earlier examples (all the tables use), and as many of them
    correctly predicted as the recorded accuracy says."""
    import json

    path = args.resume
    old = json.loads(Path(path).read_text())
    same = (
        ("dataset", args.dataset),
        ("granularity", granularity),
        ("template", template),
        ("max_features", args.max_features),
        ("split", args.split),
    )
    for key, now in same:
        if key in old and old[key] != now:
            raise ValueError(
                f"--resume {path}: its {key} is {old[key]!r}, this run's {now!r}; resume the same run."
            )
    if old["adapter"] == "benchmark":  # runs that recorded the option, not the cached folder it names
        old["adapter"] = str(benchmark_adapter_dir() / "adapter")
    if str(old["mask"]) != str(mask) or old["model"] != info["model"] or old["adapter"] != info["adapter"]:
        raise ValueError(
            f"--resume {path}: mask/model/adapter {old['mask']!r}/{old['model']!r}/{old['adapter']!r} differ "
            f"from this run's {mask!r}/{info['model']!r}/{info['adapter']!r}; resume the same run."
        )
    done = int(old["examples"])
    if done > planned:
        raise ValueError(
            f"--resume {path} has {done} examples, more than the {planned} of this run (--examples)."
        )
    correct = round(old["model_accuracy_on_examples"] * done)
    out = {}
    for name, row in old["rows"].items():
        count = int(row.get("examples", done))
        values = old["per_example"][name]
        curves = old["mean_curves"][name]
        examples = [
            ScoredExample(
                i=i,
                scores=[],
                target=0,
                prediction=0 if i < correct else 1,
                label=0,
                passes=row["forward_passes_per_example"],
                values={
                    **{m: values[m][i] for m in METRICS},
                    "gap": values["as_auc"][i] - values["ias_auc"][i],
                },
                curves={"as": list(curves["as"]), "ias": list(curves["ias"])},
            )
            for i in range(count)
        ]
        extra = {k: v for k, v in row.items() if k.startswith(("at2_", "p_prime_"))}
        out[name] = (examples, row["seconds_per_example"] * count, row["cost"], extra)
    return done, out


def _write(
    args, info, template, mask, granularity, texts, n_feats, evaluators, seconds, extras, done, costs
) -> dict:
    """Summaries (each method's evaluator record), paired tests and the four result files from the
    examples run so far."""
    rows: dict[str, dict] = {}
    per_example: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    accuracy = float("nan")
    for name, ev in evaluators.items():
        if not ev.examples:
            continue
        record = ev.compute()
        figures = record.metrics
        per_example[name] = {m: torch.tensor(ev.values(m), dtype=torch.float64) for m in METRICS}
        per_example[name]["gap"] = per_example[name]["as_auc"] - per_example[name]["ias_auc"]
        count = len(record.scores)
        s = {}
        for m in METRICS:
            s[m], s[f"{m}_ci"] = figures[m], figures.get(f"{m}_ci", float("nan"))
        s["gap"], s["gap_ci"] = mean_confidence_interval(per_example[name]["gap"])
        rows[name] = {
            "method": LABELS.get(name, name),
            "cost": costs[name],
            "examples": count,
            **s,
            "forward_passes_per_example": figures.get("forward_passes_per_example", float("nan")),
            "seconds_per_example": seconds[name] / count,
            **extras[name],
        }
        curves[name] = {k: np.asarray(record.curves[k][1]) for k in ("as", "ias")}
        if len(rows) == 1:
            accuracy = figures.get("accuracy", float("nan"))
    order = ordering(rows, per_example)
    tests = pairwise_tests(per_example)
    tag = f"_{args.tag}" if args.tag else ""
    stem = Path(args.out) / f"faithfulness_{args.dataset}_{granularity}{tag}"
    n_done = n_feats[:done]
    partial = done < len(texts)
    result = {
        **info,
        "dataset": args.dataset,
        "split": args.split,
        "granularity": granularity,
        "max_features": args.max_features,
        "examples": done,
        "examples_planned": len(texts),
        "partial": partial,
        "features_min": min(n_done),
        "features_max": max(n_done),
        "features_mean": float(np.mean(n_done)),
        "template": template,
        "mask": mask,
        "top_k": args.top_k,
        "model_accuracy_on_examples": accuracy,
        "rows": rows,
        "ordering": order,
        "wilcoxon": tests,
        "per_example": {k: {m: v.tolist() for m, v in d.items()} for k, d in per_example.items()},
        "mean_curves": {k: {c: v.tolist() for c, v in d.items()} for k, d in curves.items()},
    }
    write_json(stem.with_suffix(".json"), result)
    cols = ["method", "cost", "examples", "forward_passes_per_example", "seconds_per_example"]
    for m in (*METRICS, "gap"):
        cols += [m, f"{m}_ci"]
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", *cols])
        for name, r in rows.items():
            w.writerow([name, *[r[c] for c in cols]])

    def cell(r, m):
        ci = r[f"{m}_ci"]
        return f"{r[m]:.3f} ± {ci:.3f}" if math.isfinite(ci) else f"{r[m]:.3f}"

    def pval(who, name, m):
        t = tests.get(who, {}).get(name)
        return "" if t is None else f"{t[m]['p']:.2g}"

    table = md_table(
        [
            "Method",
            "Cost (passes run/ex)",
            "n ex",
            "AS AUC ↑",
            "p vs MP-PI",
            "p vs SP-PI",
            "IAS AUC ↓",
            "p vs MP-PI",
            "p vs SP-PI",
            "gap AS−IAS ↑",  # noqa: RUF001 - a minus sign
            "p vs MP-PI",
            "p vs SP-PI",
            "log-odds ↓",
            "comp. ↑",
            "suff. ↓",
            "fwd/ex",
            "s/ex",
        ],
        [
            [
                r["method"],
                f"{r['cost']} ({r['forward_passes_per_example']:.1f})",
                r["examples"],
                cell(r, "as_auc"),
                pval("mp-pi", name, "as_auc"),
                pval("sp-pi", name, "as_auc"),
                cell(r, "ias_auc"),
                pval("mp-pi", name, "ias_auc"),
                pval("sp-pi", name, "ias_auc"),
                cell(r, "gap"),
                pval("mp-pi", name, "gap"),
                pval("sp-pi", name, "gap"),
                cell(r, "log_odds"),
                cell(r, "comprehensiveness"),
                cell(r, "sufficiency"),
                f"{r['forward_passes_per_example']:.1f}",
                f"{r['seconds_per_example']:.2f}",
            ]
            for name, r in rows.items()
        ],
    )
    subset_note = ""
    short = [r["method"] for r in rows.values() if r["examples"] < done]
    if short:
        subset_note = (
            f" {', '.join(short)} ran on the first {min(r['examples'] for r in rows.values())} examples only "
            "(cost); their paired tests use those common examples."
        )
    lines = [
        f"### Faithfulness: {args.dataset}, {granularity} level{' (PARTIAL)' if partial else ''}\n",
        (
            f"{done} {args.split} examples{f' of {len(texts)} planned' if partial else ''} (n = "
            f"{min(n_done)}..{max(n_done)} "
            f"{granularity}s, mean {np.mean(n_done):.1f}), explained class = true label, template "
            f"`{template!r}`, "
            f"mask `{mask}`, top-k {args.top_k:g}%; model accuracy on these examples {accuracy:.3f}. "
            "95% half-widths over examples; p: paired two-sided Wilcoxon against MP-PI / "
            f"SP-PI. Cost: the budget, and the forward passes each method ran per example.{subset_note}\n"
        ),
        f"Date {info['date']}; machine: {info['machine']}; {info['device']}/{info['dtype']}.\n",
        f"Command: `{info['command']}`\n",
        table,
        _paired_table(tests),
    ]
    for metric, entry in order.items():
        for who, e in entry.items():
            verdict = "holds" if e["best"] else f"does NOT hold (beaten by {LABELS.get(e['beaten_by'])})"
            other = e.get("runner_up") or e.get("beaten_by")
            lines.append(
                f"- {LABELS[who]} best on {metric.upper().replace('_', ' ')} among {e['pool']}: "
                f"{verdict}; difference to {LABELS.get(other)} {e['difference']:+.3f}, "
                f"paired Wilcoxon p = {e['wilcoxon_p']:.3g}\n"
            )
    if "at2" in rows:
        r = rows["at2"]
        lines.append(
            f"- AT2 fitted on {r['at2_fit_examples']} training texts ({r['at2_fit_passes']} forward "
            f"passes, {r['at2_fit_seconds']:.1f} s, training correlation {r['at2_train_correlation']:.3f}).\n"
        )
    lines.append(f"\n![AS/IAS curves]({stem.name}.png)\n")
    write_markdown(stem.with_suffix(".md"), "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines))
    _plot(
        stem.with_suffix(".png"),
        curves,
        f"{info['model']} + {info['adapter']}; {args.dataset} {granularity} level, {done} examples, "
        f"mask {mask}",
    )
    print(f"wrote {stem}.{{json,csv,md,png}}", flush=True)
    return result


if __name__ == "__main__":
    main()
