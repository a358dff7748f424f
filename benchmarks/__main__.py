"""``python -m benchmarks <table>... | all [--quick]``: run the commands behind RESULTS.md's tables, in order,
and rewrite RESULTS.md's generated blocks from the files they wrote.

Why one entry point: the figures of ``results/RESULTS.md`` came from chains of commands (a run per
value function, then the between-mask tests on their JSON files, ...) that were typed by hand. Here
each table is a list of steps (a benchmark module and its arguments); a step that reads an earlier
step's file names it under ``{out}``. A step runs in this process (``module.main(argv)``), its printout
is also written to its ``log`` file when it has one, and any error stops the run with a non-zero exit.

RESULTS.md holds two kinds of text: dated sections written by hand (what was run when, the readings,
the history of a default) and **generated blocks**, each between

    <!-- generated from: FILE -->
    <!-- end generated: FILE -->

whose content is the results file FILE (a Markdown table as written by the benchmark, or a printout
in a code block). After the steps ran, every block whose FILE is in the output folder is rewritten
from it; the rest of RESULTS.md is left alone.

``--quick`` runs every step on the tiny random GPT-2 with a few texts (seconds per step, figures
meaningless) into a scratch folder (default ``outputs/benchmarks-quick``) and rewrites a copy of
RESULTS.md there: the real code paths of the chain, for CI (``tests/benchmarks/test_entry_point.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import RESULTS

ROOT = RESULTS.parents[1]
QUICK_OUT = ROOT / "outputs" / "benchmarks-quick"
TINY = "--model testing:gpt2 --adapter none --threads 1"


_SHAPLEY_EXACT_METHODS = "mp-pi-counts,mp-pi-ht,kernel-shap,captum-kernelshap,shap-permutation,shap-partition"


@dataclass(frozen=True)
class Step:
    """One command, ``python -m benchmarks.<module> <argv>``; ``quick`` is its tiny version. ``{out}`` in
    the arguments is the output folder, appended as ``--out`` unless ``out=False`` (modules without it);
    ``log`` names a file in the output folder that also gets the printout."""

    module: str
    argv: str
    quick: str
    out: bool = True
    log: str | None = None

    def command(self, quick: bool, out: Path) -> list[str]:
        args = shlex.split((self.quick if quick else self.argv).replace("{out}", str(out)))
        return [*args, "--out", str(out)] if self.out else args


@dataclass(frozen=True)
class Table:
    """A table of RESULTS.md: its steps in order and the files its generated blocks show."""

    title: str
    steps: list[Step]
    files: list[str]
    quick: bool = True  # False: no tiny version (the chain itself trains models); skipped by --quick
    note: str = ""


_SUBSET = "--subset-methods a-last,gae,inputxgrad,lrp,ig,udig,at2 --subset-examples 10"
_QUICK_FAITH = f"{TINY} --examples 2 --max-features 5 --chunk 1"
_QUICK_SUBSET = "--methods random,sp-pi,mp-pi,kernel-shap --subset-methods kernel-shap --subset-examples 1"
_IMDB = "faithfulness_imdb_sentence"
_RT = "faithfulness_rotten_tomatoes_word"


def _masks(full: str, quick: str, tag: str = "") -> list[Step]:
    """A faithfulness table under both value functions: removal and the paper's ``...``."""
    return [
        Step(
            "faithfulness_table",
            f"{full} --threads 1 --mask {mask} --tag {name}{tag}",
            f"{quick} --mask {mask} --tag {name}{tag}",
        )
        for mask, name in (("remove", "remove"), ("...", "dots"))
    ]


def _between_masks(stem: str, tag: str) -> Step:
    argv = f"--remove {{out}}/{stem}_remove.json --dots {{out}}/{stem}_dots.json --tag {tag}"
    return Step("value_function", argv, argv)


#: The zero-extra-pass SP-PI variants sppi_variants runs besides the default (both templates).
_SPPI_FREE = (
    "sp-pi[logits],sp-pi[log_odds],sp-pi[log_prob],sp-pi[prob:none],sp-pi[logits:none],"
    "sp-pi[log_odds:none],sp-pi[log_prob:none]"
)
_LONG = "--reference permutations --dataset imdb --seeds 1 --mask remove --tag long_remove"
_IMDB_50 = "--dataset imdb --examples 50 --max-features 8 --chunk 5"

TABLES: dict[str, Table] = {
    "faithfulness-rt": Table(
        "Faithfulness, Rotten Tomatoes, word level, both value functions (issue 14's powered run)",
        [
            *_masks(f"--examples 200 --max-features 20 {_SUBSET}", f"{_QUICK_FAITH} {_QUICK_SUBSET}"),
            _between_masks(_RT, "rt"),
        ],
        [f"{_RT}_remove.md", f"{_RT}_dots.md", "value_function_rt.md"],
    ),
    "faithfulness-imdb": Table(
        "Faithfulness, IMDB, sentence level, both value functions",
        [
            *_masks(f"{_IMDB_50} {_SUBSET}", f"{_QUICK_FAITH} --dataset imdb {_QUICK_SUBSET}"),
            _between_masks(_IMDB, "imdb"),
        ],
        [
            f"{_IMDB}_remove.md",
            f"{_IMDB}_dots.md",
            "value_function_imdb.md",
        ],
    ),
    "shapley-long": Table(
        "Accuracy against Shapley values on long texts (n = 20, 40, 60) at equal passes, removal game",
        [
            Step(
                "shapley_accuracy",
                f"{_LONG} --permutations 40 --lengths 20,40,60 --inputs 2 --budgets 1,2,4,8 --threads 1",
                f"{TINY} {_LONG} --permutations 10 --lengths 6 --inputs 1 --budgets 1,2"
                " --methods mp-pi,kernel-shap",
            ),
            # MP-PI with the earlier mixture (0.05) against the same references, beside the default
            Step(
                "shapley_accuracy",
                "--reuse-reference {out}/shapley_accuracy_long_remove.json --methods mp-pi@0.05"
                " --budgets 1,2,4,8 --seeds 1 --mask remove --threads 1 --tag long_remove",
                f"{TINY} --reuse-reference {{out}}/shapley_accuracy_long_remove.json --methods mp-pi@0.05"
                " --budgets 1,2 --seeds 1 --mask remove --tag long_remove",
            ),
        ],
        ["shapley_accuracy_long_remove.md"],
    ),
    "long-texts": Table(
        "Long texts (n = 20, 40, 60) at equal passes, >= 20 texts per length, from a resumable cache (#27)",
        [
            Step(
                "long_texts",
                "--lengths 20,40,60 --texts 20 --threads 1",
                f"{TINY} --lengths 6 --texts 2 --permutations 8 --budgets 2,8",
            )
        ],
        ["long_texts.md"],
    ),
    "shapley-exact": Table(
        "Accuracy and ranking accuracy against exact Shapley values (short test sentences, all 2^n inputs)",
        [
            Step(
                "shapley_accuracy",
                "--split test --inputs 36 --min-features 6 --max-features 9 --seeds 3 --budgets 1,2,4,8"
                " --threads 1 --cache-outputs --methods "
                + _SHAPLEY_EXACT_METHODS
                + " --baseline mp-pi-counts,mp-pi-ht",
                f"{TINY} --inputs 1 --min-features 4 --max-features 5 --budgets 1,2 --seeds 1"
                " --cache-outputs",
            )
        ],
        ["shapley_accuracy.md"],
    ),
    "mppi-defensive": Table(
        "MP-PI's defensive mixture, chosen on IMDB validation texts (tiny random GPT-2)",
        [
            Step(
                "mppi_defensive",
                "--lengths 12,24,40",
                f"{TINY} --lengths 6 --texts 1 --seeds 1 --budgets 2 --defensive 0.05,0.7 --permutations 20",
                log="mppi_defensive.txt",
            )
        ],
        ["mppi_defensive.txt"],
    ),
    "sppi-variants": Table(
        "SP-PI's place: its variants (output space, template, a second permutation) against Random, MP-PI"
        " 2n and Kernel SHAP 2n, chosen on validation, reported on test",
        [
            Step(
                "sppi_variants",
                f"--split validation --examples 80 --masks remove --variants {_SPPI_FREE},"
                "sp-pi+reversed-perm[prob],sp-pi+reversed-text[prob] --peers random --points 6 --threads 1"
                " --tag remove",
                f"{TINY} --split validation --examples 2 --max-features 6 --masks remove --peers random"
                " --variants sp-pi[log_odds],sp-pi[prob:none] --tag remove",
            ),
            *[
                Step(
                    "sppi_variants",
                    f"--split test --examples 100 --masks {mask} --variants {variants} --points 6 --threads 1"
                    f" --tag {tag} --chosen-from {{out}}/sppi_variants_validation_remove.json",
                    f"{TINY} --split test --examples 2 --max-features 6 --masks {mask} --tag {tag}"
                    " --variants sp-pi+reversed-perm[log_odds]"
                    " --chosen-from {out}/sppi_variants_validation_remove.json",
                )
                for mask, tag, variants in (
                    ("remove", "remove", f"{_SPPI_FREE},sp-pi+reversed-perm[prob]"),
                    ("...", "dots", "sp-pi[log_odds]"),
                )
            ],
        ],
        ["sppi_variants_validation_remove.md", "sppi_variants_test_remove.md", "sppi_variants_test_dots.md"],
    ),
    "mppi-budget": Table(
        "MP-PI's budget counted in passes run vs masks drawn (tiny random GPT-2, exact Shapley values)",
        [Step("mppi_budget", "--seeds 30", "--seeds 1", log="mppi_budget.txt")],
        ["mppi_budget.txt"],
    ),
    "scaling": Table(
        "Speed and scaling: P', MP-PI's wall time against n and text length, the micro-benchmarks' ratios",
        [
            Step(
                "scaling",
                "--adapter none --ns 8,16,32,64 --widths 4,8,16,32 --texts 1 --repeats 2"
                " --reuse mppi,metrics",
                f"{TINY} --pprime-ns 8,16 --ns 4,8 --widths 2,4 --sentences 3 --texts 1 --repeats 1"
                " --reuse none",
            )
        ],
        ["scaling.md"],
    ),
    "callbacks": Table(
        "Free-mode SP-PI (ValidationSPPI) overhead on a validation loop",
        [
            Step(
                "bench_callbacks",
                "--n-val 64 --repeats 8 --threads 1 --configs none,free --tag cpu",
                "--model testing:gpt2 --n-val 8 --n-probe 2 --repeats 1 --threads 1 --configs none,free"
                " --tag cpu",
                log="bench_callbacks_cpu.txt",
            )
        ],
        ["bench_callbacks_cpu.txt"],
    ),
    "at2": Table(
        "AT2: is the fit worth it? (own ablations vs SP-PI / MP-PI)",
        [
            Step(
                "bench_at2",
                "--model smollm2-135m-instruct --adapter benchmark --fit 64 --probe 20 --repeats 1",
                "--fit 2 --probe 2 --masks 4 --repeats 1 --threads 1",
                log="at2_fit_study.txt",
            )
        ],
        ["at2_fit_study.txt"],
    ),
    "explain-scaling": Table(
        "Explain job: 1 vs 2 processes",
        [
            Step(
                "explain_scaling",
                "--examples 32 --mppi-examples 4 --max-words 16",
                "--model testing:gpt2 --examples 4 --methods sp-pi",
            )
        ],
        ["explain_scaling.md"],
    ),
    "model-accuracy": Table(
        "The benchmark model's accuracy on the Rotten Tomatoes test split",
        [Step("model_accuracy", "", f"{TINY} --examples 6", log="model_accuracy.txt")],
        ["model_accuracy.txt"],
    ),
    "planted-cues": Table(
        "Planted natural cues: does shortcut mining flag what a fine-tuned model relies on?",
        [Step("planted_cues", "--out {out}/planted_cues", "", out=False)],
        ["planted_cues/planted_cues.md"],
        quick=False,
        note="trains three SmolLM2 adapters (~50 CPU-minutes); no tiny version",
    ),
}

BEGIN = "<!-- generated from: {} -->"
END = "<!-- end generated: {} -->"
_BLOCK = re.compile(r"<!-- generated from: (?P<file>\S+) -->\n.*?<!-- end generated: (?P=file) -->", re.S)


def blocks(text: str) -> list[str]:
    """The files named by the generated blocks of a RESULTS.md text, in order."""
    return [m.group("file") for m in _BLOCK.finditer(text)]


def _content(path: Path) -> str:
    text = path.read_text().strip("\n")
    if path.suffix == ".md":
        return text
    return f"```\n{text}\n```"  # a printout: verbatim


def render(results_md: Path, out: Path) -> list[str]:
    """Rewrite every generated block of ``results_md`` whose file is in ``out``; return those files."""
    done = []

    def fill(m: re.Match) -> str:
        name = m.group("file")
        path = out / name
        if not path.is_file():
            return m.group(0)
        done.append(name)
        return f"{BEGIN.format(name)}\n{_content(path)}\n{END.format(name)}"

    results_md.write_text(_BLOCK.sub(fill, results_md.read_text()))
    return done


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def run_step(step: Step, quick: bool, out: Path) -> None:
    argv = step.command(quick, out)
    print(f"$ python -m benchmarks.{step.module} {' '.join(argv)}", flush=True)
    module = importlib.import_module(f"benchmarks.{step.module}")
    t0 = time.perf_counter()
    if step.log is None:
        result = module.main(argv)
    else:
        with open(out / step.log, "w") as fh, contextlib.redirect_stdout(_Tee(sys.stdout, fh)):
            result = module.main(argv)
    if isinstance(result, int) and result != 0:  # scripts that return an exit status
        raise RuntimeError(f"benchmarks.{step.module} exited with status {result}")
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmarks behind results/RESULTS.md and rewrite its generated blocks.",
        epilog="tables: " + "; ".join(f"{k}: {t.title}" for k, t in TABLES.items()),
    )
    p.add_argument("tables", nargs="+", metavar="TABLE", help="table names (see below), 'all' or 'list'")
    p.add_argument(
        "--quick", action="store_true", help="tiny random model, a few texts: checks the code paths"
    )
    p.add_argument(
        "--out", help="results folder (default: benchmarks/results; with --quick outputs/benchmarks-quick)"
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rewrite RESULTS.md's blocks from --out's files",
    )
    args = p.parse_args(argv)
    if args.tables == ["list"]:
        return args
    names = list(TABLES) if args.tables == ["all"] else args.tables
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        p.error(
            f"unknown table(s) {', '.join(unknown)}: expected 'all', 'list' or some of {', '.join(TABLES)}"
        )
    args.tables = names
    return args


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    if args.tables == ["list"]:
        for name, t in TABLES.items():
            print(f"{name:18s} {t.title}" + (f" [full only: {t.note}]" if not t.quick else ""))
        return {}
    out = Path(args.out) if args.out else (QUICK_OUT if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    results_md = out / "RESULTS.md"
    if out.resolve() != RESULTS.resolve():
        # a scratch folder gets its own copy of RESULTS.md to rewrite; the committed one is left alone
        shutil.copyfile(RESULTS / "RESULTS.md", results_md)
    known = set(blocks(results_md.read_text()))
    for name in args.tables:
        missing = [f for f in TABLES[name].files if f not in known]
        if missing:
            raise ValueError(
                f"RESULTS.md has no generated block for {', '.join(missing)} (table {name!r}): add "
                f"'{BEGIN.format(missing[0])}' and '{END.format(missing[0])}' where the table belongs"
            )
    ran, skipped = [], []
    if not args.render_only:
        for name in args.tables:
            table = TABLES[name]
            if args.quick and not table.quick:
                skipped.append(name)
                print(f"== {name}: skipped with --quick ({table.note})", flush=True)
                continue
            print(f"== {name}: {table.title}", flush=True)
            for step in table.steps:
                run_step(step, args.quick, out)
            ran.append(name)
    rendered = render(results_md, out)
    print(f"Rewrote {len(rendered)} generated block(s) of {results_md}", flush=True)
    return {
        "out": str(out),
        "results_md": str(results_md),
        "ran": ran,
        "skipped": skipped,
        "rendered": rendered,
    }


if __name__ == "__main__":
    main()
