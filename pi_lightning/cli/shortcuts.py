"""``pi-lightning shortcuts``: mine shortcut words from an explain job's results, then check them causally.

Reads the rows of a ``pi-lightning explain`` folder, ranks the words against a within-text
permutation null (:func:`pi_lightning.jobs.mine_shortcuts`), masks every significant word (up to a
budget of forward passes) in the texts that hold it, against masking random other words of the same
texts, with the job's model (:func:`pi_lightning.jobs.counterfactual_check`), and
prints the table; writes ``shortcuts.jsonl`` and ``shortcuts.html`` (with highlighted examples), and
a W&B table with ``--wandb-project``.

Example::

    pi-lightning explain train.csv --out outputs/explain-train
    pi-lightning shortcuts outputs/explain-train
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pi-lightning shortcuts",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", help="an explain job folder (written by `pi-lightning explain --out ...`)")
    p.add_argument("--model", help="the explained model (default: the one recorded in the job)")
    p.add_argument("--adapter", help="its LoRA adapter (default: the one recorded in the job)")
    p.add_argument("--min-count", type=int, default=3, help="words seen fewer times are not ranked")
    p.add_argument("--alpha", type=float, default=0.05, help="false discovery rate for 'significant'")
    p.add_argument(
        "--check",
        type=int,
        default=None,
        help="check at most this many significant words by masking (default: all of them, within "
        "--budget; 0: none, no model needed)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=6000,
        help="forward passes the masking check may run (the significant words past it are listed as "
        "unchecked; 0: no limit)",
    )
    p.add_argument(
        "--min-effect",
        type=float,
        default=0.05,
        help="flag a significant word when masking it lowers p(class) by at least this much more than "
        "masking as many random other words of the same texts, or inserting it (with its phrase, at its "
        "usual place) into texts that lack it raises p(class) by this much more than inserting a run of "
        "as many words of another text (the counterfactual nulls), and the other test agrees (effect > 0)",
    )
    p.add_argument(
        "--no-insertion",
        action="store_true",
        help="check by masking only (no insertion test: half the forward passes)",
    )
    p.add_argument(
        "--max-texts", type=int, default=48, help="check at most this many texts per word (0: all)"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=2048,
        help="token budget per forward batch of the masking check (2048 suits a CPU; raise it on a GPU)",
    )
    p.add_argument("--top", type=int, default=20, help="rows printed")
    p.add_argument("--label-names", help="comma-separated class names (default: the job's)")
    p.add_argument(
        "--ignore-adapter-settings",
        action="store_true",
        help="check with the job's template and mask even where they differ from those saved beside the "
        "adapter by `pi-lightning finetune`",
    )
    p.add_argument("--out", help="output folder (default: JOB/shortcuts)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument(
        "--wandb-project",
        help="also log the table to a W&B run of this project (offline unless WANDB_MODE=online)",
    )
    return p


def main(argv: list[str]) -> int:
    """Run ``pi-lightning shortcuts``; returns the exit status (a mistake: one line, status 2)."""
    from pi_lightning.cli._precheck import one_line

    return one_line("shortcuts", _main, argv)


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from pi_lightning.cli._precheck import positive

    positive("--min-count", args.min_count)
    positive("--check", args.check, 0)
    positive("--max-texts", args.max_texts)
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha is a false discovery rate in (0, 1), got {args.alpha}.")
    from pi_lightning.jobs import counterfactual_check, load_results, mine_shortcuts
    from pi_lightning.jobs.explain import load_job, write_atomic
    from pi_lightning.reporting.shortcuts import (
        shortcut_columns,
        shortcut_examples,
        shortcuts_page,
        shortcuts_text,
    )

    job = load_job(args.job)
    results = load_results(args.job)
    meta = job.get("metadata") or {}
    # the settings the attributions were made with, as the rows record them (older job folders: job.json's)
    made_with = (results[0].settings if results else None) or job.get("method_kwargs") or {}
    names = [s.strip() for s in args.label_names.split(",")] if args.label_names else meta.get("label_names")
    adapter = args.adapter or meta.get("adapter")
    from pi_lightning.adapter_settings import read_adapter_settings, resolve_settings

    try:
        saved = read_adapter_settings(adapter)
        names = resolve_settings(saved, {"label_names": names}, allow_mismatch=args.ignore_adapter_settings)[
            "label_names"
        ]
        # the job was explained with its template and mask: the adapter must have been trained with them
        resolve_settings(
            saved,
            {"template": made_with.get("template", "{text}"), "mask": made_with.get("mask", "remove")},
            allow_mismatch=args.ignore_adapter_settings,
            where=f"the adapter {adapter}",
        )
    except ValueError as e:
        raise ValueError(
            f"{e} (the explain job {args.job} used its own; rerun it with the adapter's settings)"
        ) from e
    report = mine_shortcuts(results, min_count=args.min_count, alpha=args.alpha, label_names=names)
    for name, low in (("check", 0), ("budget", 0), ("max_texts", 0), ("max_tokens", 1)):
        v = getattr(args, name)
        if v is not None and v < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {v}.")
    check = args.check is None or args.check > 0
    if check:
        from pi_lightning.models import load_classifier, resolve_model_name

        model_name = args.model or job["model"]
        resolve_model_name(model_name)  # a name that cannot be loaded: one line, before loading anything
        model, tokenizer = load_classifier(model_name, num_labels=len(results[0].probs), adapter=adapter)
        # the check reads the featurization from the rows' settings; rows without them (older job
        # folders) are told job.json's
        recorded = results[0].settings
        older_job = {} if recorded else {k: made_with[k] for k in ("template", "mask") if k in made_with}
        counterfactual_check(
            report,
            results,
            model,
            tokenizer,
            top=args.check,
            budget=args.budget or None,
            **older_job,
            max_tokens=args.max_tokens,
            max_texts=args.max_texts or None,
            min_effect=args.min_effect,
            insertion=not args.no_insertion,
        )
    out = Path(args.out) if args.out else Path(args.job) / "shortcuts"
    jsonl = report.write_jsonl(out / "shortcuts.jsonl")
    page = write_atomic(
        out / "shortcuts.html",
        shortcuts_page(report, examples=shortcut_examples(report, results, top=max(args.top, 5))),
    )
    print(
        f"shortcut candidates over {len(results)} examples ({job['method']}, "
        f"{report.settings['words_tested']} words seen >= {args.min_count} times; * = significant, q < "
        f"{args.alpha}; flip/dprob: masking the word with its phrase; null: as many random other words "
        "masked; effect: dprob - null; insert: inserting it into texts without it, beyond inserting "
        "another text's words; flag YES rem/ins/r+i: by removal, insertion or both, the other agreeing; opp: "
        "one test passed, the other moved p(class) the other way; n/c: not checked)"
    )
    print(shortcuts_text(report, args.top))
    if check:
        s = report.settings
        print(
            f"checked {s['checked']} of {s['significant']} significant words ({s['forward_passes']} forward "
            "passes)"
            + (
                f"; significant but unchecked: {', '.join(s['unchecked_significant'])}"
                if s["unchecked_significant"]
                else ""
            )
        )
        how = "masking lowers" if args.no_insertion else "masking lowers or inserting raises"
        print(
            f"flagged (significant, {how} p(class) by >= {args.min_effect} more than the null"
            + ("" if args.no_insertion else ", the other test agreeing")
            + "): "
            + (
                ", ".join(f"{r['word']} ({r['flagged_by']})" for r in report.rows if r.get("flagged"))
                or "none"
            )
        )
    else:
        print("no masking check (--check 0): nothing is flagged")
    if args.wandb_project:
        from pi_lightning.reporting.logging import log_table_to_wandb

        log_table_to_wandb(
            args.wandb_project,
            "pi/shortcuts",
            shortcut_columns(report, 100),
            out_dir=out,
            job_type="shortcuts",
            config={"job": job},
        )
    print(f"JSONL: {jsonl}\nHTML: {page}")
    return 0
