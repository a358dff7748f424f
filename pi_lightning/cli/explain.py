"""``pi-lightning explain``: explain texts or a whole dataset with any method, on one or many devices.

A few texts on the command line, or a CSV / JSONL / Parquet file, go through the distributed explain
job (:func:`pi_lightning.jobs.explain_dataset`: ``Trainer.predict``, one shard file per predict batch,
resumable). Rank zero then prints a table (prediction, and the features that push toward and against
the explained class), and writes ``explanations.html`` (each text highlighted) and
``explanations.jsonl`` (every row) next to the shards. ``--metrics`` also scores how faithful the
explanations are (AS/IAS AUC and their gap, log-odds, comprehensiveness, sufficiency: the evaluation the
training monitor runs) into ``metrics.json`` and the printed summary.

Examples::

    pi-lightning explain "a gorgeous, witty, seductive movie." "the plot is dull" --method mp-pi
    pi-lightning explain reviews.csv --text-column review --method sp-pi --devices 2 --strategy ddp
    pi-lightning explain --dataset rotten_tomatoes --split train --limit 300 --out outputs/explain-rt
    pi-lightning explain --dataset rotten_tomatoes --split test --limit 50 --metrics
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_options"]

_FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
# files that are not readable data: named, they are refused (not explained as the literal path text)
_OTHER_SUFFIXES = (".txt", ".tsv", ".xlsx", ".xls", ".gz", ".zip")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` method options; values are Python literals when they parse, else strings.

    Example:
        >>> parse_options(["budget=64", "seed=0", "mask=..."])
        {'budget': 64, 'seed': 0, 'mask': '...'}
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Method options are KEY=VALUE (e.g. --option budget=64), got {pair!r}.")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        # "..." is the mask string, not Python's Ellipsis
        out[key.strip()] = parsed if isinstance(parsed, (int, float, str, list, dict, type(None))) else value
    return out


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The examples kept as written, and every option's default after its help: ``(default: X)``,
    unless the help already says what its default is (a default worked out at run time)."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        if action.default is False:
            return f"{text} (default: off)"
        shown = ",".join(action.default) if isinstance(action.default, list) else action.default
        return f"{text} (default: {shown or 'none'})"


def _parser() -> argparse.ArgumentParser:
    from pi_lightning.attributors import available_methods
    from pi_lightning.models import DEFAULT_MODEL

    p = argparse.ArgumentParser(
        prog="pi-lightning explain",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=_HelpFormatter,
    )
    p.add_argument("inputs", nargs="*", help="texts to explain, or one .csv/.jsonl/.parquet file")
    p.add_argument(
        "--dataset",
        choices=["rotten_tomatoes", "imdb"],
        help="the embedded reviews instead of inputs (default: none, explain the inputs)",
    )
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="split of --dataset")
    p.add_argument("--limit", type=int, default=None, help="explain only the first N examples (default: all)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name, hub id or folder")
    p.add_argument(
        "--adapter",
        help="a LoRA adapter folder saved by `pi-lightning finetune` (merged for inference; default: "
        "none, the base model)",
    )
    p.add_argument("--num-labels", type=int, default=2, help="number of classes of the model's head")
    p.add_argument(
        "--label-names",
        help="comma-separated class names, e.g. negative,positive (default: the adapter's saved ones, "
        "else the class indices)",
    )
    p.add_argument("--method", default="sp-pi", choices=available_methods(), help="the attribution method")
    p.add_argument(
        "--granularity",
        default="word",
        choices=["token", "word", "sentence"],
        help="the features that get one score each",
    )
    p.add_argument(
        "--template",
        default=None,
        help="fixed context around the text, with one {text} (default: the adapter's, saved by "
        "`pi-lightning finetune`, else {text})",
    )
    p.add_argument(
        "--ignore-adapter-settings",
        action="store_true",
        help="use --template / --label-names / mask= even where they differ from the adapter's saved ones",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method setting (repeatable): budget=64 (or 2n), seed=0, mask=... (default: the "
        "method's own settings, the adapter's saved mask)",
    )
    p.add_argument(
        "--target", default="predicted", help="the explained class: 'predicted', 'label' or a class index"
    )
    p.add_argument("--text-column", default="text", help="the text column of a data file")
    p.add_argument(
        "--label-column", default=None, help="the label column (default: 'label' when the data has one)"
    )
    p.add_argument(
        "--id-column", default="id", help="the id column of a data file (rows without one: their index)"
    )
    p.add_argument("--out", default="outputs/explain", help="output folder (job.json, shards/, HTML, JSONL)")
    p.add_argument(
        "--format", default="jsonl", choices=["jsonl", "parquet"], help="shard files (parquet needs pyarrow)"
    )
    p.add_argument("--shard-size", type=int, default=32, help="examples per shard (= per predict batch)")
    p.add_argument(
        "--max-tokens", type=int, default=8192, help="token budget per forward batch (bounds memory)"
    )
    p.add_argument("--overwrite", action="store_true", help="discard earlier results in --out")
    p.add_argument(
        "--metrics",
        nargs="?",
        const="all",
        default=None,
        metavar="NAMES",
        help="score the faithfulness of the explanations into metrics.json: all metrics, or a "
        "comma-separated selection of as_auc,ias_auc,log_odds,comprehensiveness,sufficiency (default: off)",
    )
    p.add_argument(
        "--top-k", type=float, default=20.0, help="top-k percent of features for --metrics (default: 20)"
    )
    p.add_argument("--accelerator", default="auto", help="Lightning's accelerator: cpu, gpu, auto")
    p.add_argument("--devices", default="1", help="devices per node (an int, or 'auto')")
    p.add_argument("--num-nodes", type=int, default=1, help="machines (nodes) of a distributed run")
    p.add_argument("--strategy", default="auto", help="e.g. ddp (several devices or nodes)")
    p.add_argument("--precision", default=None, help="e.g. bf16-mixed (default: the Trainer's, 32-true)")
    p.add_argument("--show", type=int, default=20, help="rows printed in the terminal")
    p.add_argument("--html-limit", type=int, default=500, help="examples in explanations.html")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def format_metrics(figures: dict[str, float]) -> str:
    """One line per faithfulness figure: the mean and its 95% half-width.

    Example:
        >>> print(format_metrics({"as_auc": 0.61, "as_auc_ci": 0.05, "gap": 0.2, "accuracy": 0.9}))
        faithfulness (mean +- 95% half-width over the explained examples):
          as_auc             0.6100 +- 0.0500
          gap                0.2000
          accuracy           0.9000
    """
    lines = ["faithfulness (mean +- 95% half-width over the explained examples):"]
    for k, v in figures.items():
        if k.endswith("_ci"):
            continue
        ci = figures.get(f"{k}_ci")
        lines.append(f"  {k:<18} {v:.4f}" + (f" +- {ci:.4f}" if ci is not None else ""))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run ``pi-lightning explain``; returns the exit status (a mistake: one line, status 2)."""
    from pi_lightning.cli._precheck import one_line

    return one_line("explain", _main, argv)


def _looks_like_file(arg: str) -> bool:
    """Whether a single input names a file (an existing one, or a data-file suffix) rather than a text."""
    return Path(arg).is_file() or (
        not any(c.isspace() for c in arg) and Path(arg).suffix.lower() in _FILE_SUFFIXES + _OTHER_SUFFIXES
    )


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from pi_lightning.attributors.base import check_method_kwargs
    from pi_lightning.cli._precheck import positive
    from pi_lightning.data import load_examples
    from pi_lightning.models import resolve_model_name

    # Every check of the command line comes before the model loads (seconds to minutes).
    for name, value in (
        ("--limit", args.limit),
        ("--shard-size", args.shard_size),
        ("--max-tokens", args.max_tokens),
    ):
        positive(name, value)
    positive("--num-labels", args.num_labels, 2)
    target: Any = args.target
    if target not in ("predicted", "label"):
        try:
            target = int(target)
        except ValueError:
            target = None
        if target is None or not 0 <= target < args.num_labels:
            raise ValueError(
                f"--target must be 'predicted', 'label' or a class index in 0..{args.num_labels - 1}, got "
                f"{args.target!r}."
            )
    options = parse_options(args.option)
    metrics: Any = False
    if args.metrics is not None:
        from pi_lightning.metrics import ProbeEvaluator

        metrics = True if args.metrics == "all" else [m.strip() for m in args.metrics.split(",") if m.strip()]
        ProbeEvaluator.check_settings(metrics=None if metrics is True else metrics, top_k=args.top_k)
    names = [s.strip() for s in args.label_names.split(",")] if args.label_names else None
    from pi_lightning.adapter_settings import read_adapter_settings, resolve_settings

    saved = read_adapter_settings(args.adapter)
    settings = resolve_settings(
        saved,
        {"template": args.template, "label_names": names, "mask": options.get("mask")},
        allow_mismatch=args.ignore_adapter_settings,
        where=f"the adapter {args.adapter}",
    )
    template, names = settings["template"] or "{text}", settings["label_names"]
    if settings["mask"] not in (None, "remove") and "mask" not in options:
        options["mask"] = settings["mask"]
    if saved is not None:
        print(
            f"using the adapter's settings: template {template!r}, classes {names}, "
            f"mask {options.get('mask', 'remove')!r}"
        )
    method_kwargs = {"granularity": args.granularity, "template": template, **options}
    check_method_kwargs(args.method, method_kwargs)
    if bool(args.inputs) == bool(args.dataset):
        raise ValueError("give texts, one data file, or --dataset (exactly one of them).")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file: give a folder for the results.")
    resolve_model_name(args.model)
    single = len(args.inputs) == 1 and _looks_like_file(args.inputs[0])
    if args.dataset:
        from pi_lightning.data import load_movie_reviews

        reviews = load_movie_reviews(args.dataset, args.split)
        names = names or list(reviews.label_names)
        source: Any = reviews.subset(args.limit) if args.limit else reviews
    else:
        source = args.inputs[0] if single else list(args.inputs)
    # the one reader of examples: files, columns and labels checked here, before the model loads
    examples = load_examples(
        source,
        text_column=args.text_column,
        label_column=args.label_column,
        id_column=args.id_column,
        label_names=names,
    )
    data: Any = list(examples.rows)[: args.limit] if args.limit else list(examples.rows)
    names = names or (list(examples.label_names) if examples.label_names else None)
    if target == "label" and any(r["label"] is None for r in data):
        raise ValueError(
            "--target label needs a label for every example: name the label column (--label-column) or "
            "use --target predicted."
        )
    from pi_lightning.jobs import explain_dataset, load_results
    from pi_lightning.jobs.explain import write_atomic
    from pi_lightning.models import load_classifier

    devices: Any = args.devices if args.devices == "auto" else int(args.devices)
    model, tokenizer = load_classifier(args.model, num_labels=args.num_labels, adapter=args.adapter)
    trainer_kwargs = {
        "accelerator": args.accelerator,
        "devices": devices,
        "num_nodes": args.num_nodes,
        "strategy": args.strategy,
        "enable_progress_bar": not args.no_progress,
    }
    if args.precision:
        trainer_kwargs["precision"] = args.precision
    summary = explain_dataset(
        model,
        tokenizer,
        data,
        out,
        method=args.method,
        method_kwargs=method_kwargs,
        target=target,
        max_tokens=args.max_tokens,
        shard_size=args.shard_size,
        format=args.format,
        label_names=names,
        model_name=args.model,
        metadata={
            "adapter": args.adapter and str(Path(args.adapter).resolve()),
            "num_labels": args.num_labels,
            "label_names": names,
        },
        overwrite=args.overwrite,
        metrics=metrics,
        top_k=args.top_k,
        **trainer_kwargs,
    )
    if not summary.is_global_zero:
        return 0
    from pi_lightning.reporting.explanations import explanations_page, explanations_text

    rows = load_results(out)
    write_atomic(
        out / "explanations.jsonl",
        "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows),
    )
    html_path = write_atomic(
        out / "explanations.html",
        explanations_page(rows[: args.html_limit], names, f"{args.method} explanations of {args.model}"),
    )
    passes = [r.forward_passes for r in rows if r.forward_passes is not None]
    print(
        f"{args.method}: {len(rows)} examples explained ({summary.shards - summary.skipped} shards run now, "
        f"{summary.skipped} finished before); {sum(passes) / max(len(passes), 1):.1f} forward passes per "
        "example"
    )
    if args.show > 0:
        print(explanations_text(rows[: args.show], names))
        if len(rows) > args.show:
            print(f"... {len(rows) - args.show} more rows (--show N)")
    if summary.metrics is not None:
        print(format_metrics(summary.metrics))
        print(f"metrics: {out / 'metrics.json'}")
    print(f"HTML: {html_path}\nJSONL: {out / 'explanations.jsonl'} (shards: {out / 'shards'})")
    return 0
