"""``pi-lightning shortcuts``: mine shortcut words from an explain job's results, then check them causally.

Reads the rows of a ``pi-lightning explain`` folder, ranks the words against a within-text
permutation null (:func:`pi_lightning.jobs.mine_shortcuts`), masks each of the top candidates in
every text that holds it with the job's model (:func:`pi_lightning.jobs.counterfactual_check`), and
prints the table; writes ``shortcuts.jsonl`` and ``shortcuts.html`` (with highlighted examples), and
a W&B table with ``--wandb-project``.

Example::

    pi-lightning explain train.csv --out outputs/explain-train
    pi-lightning shortcuts outputs/explain-train --check 10
"""

from __future__ import annotations

import argparse
import os
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
        "--check", type=int, default=10, help="candidates checked by masking (0: none, no model needed)"
    )
    p.add_argument(
        "--min-effect",
        type=float,
        default=0.1,
        help="flag a significant word when masking it lowers p(class) by at least this much",
    )
    p.add_argument("--max-texts", type=int, default=None, help="check at most this many texts per word")
    p.add_argument("--top", type=int, default=20, help="rows printed")
    p.add_argument("--label-names", help="comma-separated class names (default: the job's)")
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
    from pi_lightning.jobs.explain import load_job
    from pi_lightning.reporting import highlight

    job = load_job(args.job)
    results = load_results(args.job)
    meta = job.get("metadata") or {}
    names = [s.strip() for s in args.label_names.split(",")] if args.label_names else meta.get("label_names")
    report = mine_shortcuts(results, min_count=args.min_count, alpha=args.alpha, label_names=names)
    if args.check > 0:
        from pi_lightning.models import load_classifier, resolve_model_name

        model_name = args.model or job["model"]
        resolve_model_name(model_name)  # a name that cannot be loaded: one line, before loading anything
        adapter = args.adapter or meta.get("adapter")
        model, tokenizer = load_classifier(model_name, num_labels=len(results[0]["probs"]), adapter=adapter)
        kw = job.get("method_kwargs") or {}
        counterfactual_check(
            report,
            results,
            model,
            tokenizer,
            top=args.check,
            granularity=kw.get("granularity"),
            template=kw.get("template", "{text}"),
            mask=kw.get("mask"),
            max_tokens=int(kw.get("max_tokens", 8192)),
            max_texts=args.max_texts,
            min_effect=args.min_effect,
        )
    out = Path(args.out) if args.out else Path(args.job) / "shortcuts"
    jsonl = report.write_jsonl(out / "shortcuts.jsonl")
    examples = {}
    for row in report.rows[: max(args.check, 5)]:
        holders = [r for r in results if any(f.strip().lower() == row["word"] for f in r["features"])][:3]
        examples[row["word"]] = [highlight(r["text"], r["char_spans"], r["scores"]) for r in holders]
    page = report.write_html(out / "shortcuts.html", examples=examples)
    print(
        f"shortcut candidates over {len(results)} examples ({job['method']}, "
        f"{report.settings['words_tested']} words seen >= {args.min_count} times; * = significant, q < "
        f"{args.alpha}; flip/dprob: masking check)"
    )
    print(report.table(args.top))
    flagged = [r["word"] for r in report.rows if r.get("flagged")]
    print(
        f"flagged (significant, masking lowers p(class) by >= {args.min_effect}): "
        f"{', '.join(flagged) or 'none'}"
        if args.check > 0
        else "no masking check (--check 0): nothing is flagged"
    )
    if args.wandb_project:
        import wandb

        run = wandb.init(
            project=args.wandb_project,
            dir=str(out),
            job_type="shortcuts",
            mode=os.environ.get("WANDB_MODE", "offline"),
            config={"job": job},
        )
        try:
            report.log_wandb(run)
        finally:
            run.finish()
    print(f"JSONL: {jsonl}\nHTML: {page}")
    return 0
