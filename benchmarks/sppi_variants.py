"""SP-PI's place, and what would lift it: SP-PI variants against Random, MP-PI 2n and Kernel SHAP 2n on
the same sentences, paired per sentence, under both value functions (issue 27, item 3).

SP-PI (the paper's Eqn 6) reads the classification head at the end of every word of one unmasked pass
and scores word i by the change it made, phi_i = p_i - p_{i-1}. What can change at **zero extra
passes** is (a) the output space the increments are taken in: the class probability (the default),
the class logit (the paper's text calls p_i "the logit-vector"), the class log-odds (= the margin
between the two logits for a two-class head) and the class log-probability; and (b) the template the
pass reads: the one the adapter was trained with, none (``{text}``: p_0 then needs one one-token
pass), or another prefix. Every variant's attributions are scored with the template the adapter was
trained with (the input a user explains), on the same features. At **2 passes**: the average with SP-PI
on the text in reversed word order (the issue's suggestion; a different input, so a heuristic, not an
estimator of the same game). At **n passes**: the average with the reversed permutation of the *same*
game (v({i..n}) - v({i+1..n}), the suffix chain, n - 1 masked passes): the antithetic two-permutation
Shapley estimate, principled but no longer free.

Every method's attributions of a round of sentences go into one
:func:`~pi_lightning.metrics.evaluate_faithfulness` call per mask (AS and IAS, exact curves), which runs
each distinct masked input once: variants that rank the words alike share their passes. The curves
are probabilities (the paper's metric); the gap of the same curves read in log-odds is reported beside
it (no extra pass) to show whether the metric's output space changes the verdict.

Choose on validation, report on test: ``--split validation`` (Rotten Tomatoes validation sentences
after the first 192, which the default job validates on; test sentences start after the default job's
probe) ranks the zero-extra-pass variants by their
mean AS - IAS gap under the first mask; ``--split test --chosen-from <validation json>`` runs on test
sentences and reports the chosen variant's paired Wilcoxon tests against the default SP-PI, Random,
Kernel SHAP 2n and MP-PI 2n.

Run::

    python -m benchmarks.sppi_variants --split validation --examples 80
    python -m benchmarks.sppi_variants --split test --examples 100 \\
        --chosen-from benchmarks/results/sppi_variants_validation.json
    python -m benchmarks.sppi_variants --model testing:gpt2 --adapter none --examples 2   # smoke test

Writes ``sppi_variants_<split>[_<tag>].{json,md}`` under ``--out``, rewritten after every round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch

from benchmarks._common import (
    add_common_args,
    load_average,
    load_model,
    md_table,
    paired_wilcoxon,
    resolve_template,
    result_stem,
    run_info,
    write_json,
    write_markdown,
)
from pi_lightning.attributors import SPPI, get_attributor
from pi_lightning.data import load_movie_reviews
from pi_lightning.features import Featurizer
from pi_lightning.metrics import evaluate_faithfulness
from pi_lightning.metrics.functional.stats import mean_confidence_interval
from pi_lightning.result import Attribution

__all__ = ["OUTPUT_SPACES", "main", "output_values", "select_sentences"]

#: The output spaces SP-PI's increments can be taken in (``log_prob`` is this benchmark's addition).
OUTPUT_SPACES = ("prob", "logits", "log_odds", "log_prob")
#: Alternative templates (``trained`` is the adapter's own, resolved at run time).
TEMPLATES = {"none": "{text}", "intro": "Here is a movie review: {text}"}
DEFAULT = "sp-pi[prob]"
PEERS = ("random", "mp-pi", "kernel-shap")
#: Sentences of the validation split the default job validates on (``n_val: 192``): skipped.
DEFAULT_JOB_VAL = 192
#: The default job's probe: the first 64 test sentences of at most 16 words (``n_probe``,
#: ``probe_max_words``), explained while it trains; the test sentences here start after them.
DEFAULT_JOB_PROBE = (64, 16)


def default_skip(split: str) -> int:
    """Sentences of ``split`` the default job used (validated on, or explained as its probe): skipped.

    Example:
        >>> default_skip("validation")
        192
    """
    if split == "validation":
        return DEFAULT_JOB_VAL
    count, max_words = DEFAULT_JOB_PROBE
    texts = load_movie_reviews("rotten_tomatoes", "test").texts
    short = [i for i, t in enumerate(texts) if len(t.split()) <= max_words]
    return short[count - 1] + 1


def output_values(logits: torch.Tensor, target: int, output: str) -> torch.Tensor:
    """The attributed value of class ``target`` from logits ``(..., C)`` in float64.

    Example:
        >>> lg = torch.tensor([[0.0, 1.0]])
        >>> [round(float(output_values(lg, 1, o)[0]), 4) for o in OUTPUT_SPACES]
        [0.7311, 1.0, 1.0, -0.3133]
    """
    from pi_lightning.inference import transform_outputs

    if output not in OUTPUT_SPACES:
        raise ValueError(f"Unknown output space {output!r}: expected one of {', '.join(OUTPUT_SPACES)}.")
    if output == "log_prob":
        return torch.log_softmax(logits.double(), dim=-1)[..., target]
    return transform_outputs(logits, output)[..., target]


class _SPPIIn(SPPI):
    """SP-PI with its increments taken in any of :data:`OUTPUT_SPACES` (``log_prob`` included)."""

    def __init__(self, model, tokenizer, *, space: str = "prob", **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.space = space
        output_values(torch.zeros(1, 2), 0, space)  # checks the name

    def outputs(self, logits: torch.Tensor, target: int) -> torch.Tensor:
        return output_values(logits, target, self.space)


def select_sentences(
    split: str, featurizer: Featurizer, count: int, min_features: int, max_features: int, skip: int
) -> tuple[list[str], list[int]]:
    """The first ``count`` Rotten Tomatoes sentences of ``split`` after its first ``skip`` with
    ``min_features..max_features`` words."""
    data = load_movie_reviews("rotten_tomatoes", "val" if split == "validation" else split)
    texts, labels = [], []
    for text, label in list(zip(data.texts, data.labels, strict=True))[skip:]:
        text = " ".join(text.split())
        if text and min_features <= featurizer(text).n <= max_features:
            texts.append(text)
            labels.append(int(label))
            if len(texts) == count:
                break
    if len(texts) < count:
        warnings.warn(
            f"Only {len(texts)} {split} sentences have {min_features}..{max_features} words after the "
            f"first {skip}; asked for {count}.",
            UserWarning,
            stacklevel=2,
        )
    return texts, labels


def variant_names(trained: str) -> list[str]:
    """Every variant, zero extra passes first (``sp-pi[<space>]`` with the trained template,
    ``sp-pi[<space>:<template key>]`` with another), then the 2-pass and n-pass averages."""
    names = [f"sp-pi[{o}]" for o in OUTPUT_SPACES]
    names += [f"sp-pi[{o}:{t}]" for t in TEMPLATES for o in OUTPUT_SPACES]
    names += [f"sp-pi+reversed-text[{o}]" for o in ("prob", "log_odds")]
    names += [f"sp-pi+reversed-perm[{o}]" for o in ("prob", "log_odds")]
    return names


def parse_variant(name: str) -> tuple[str, str, str]:
    """``(kind, output space, template key)`` of a variant name."""
    kind, _, rest = name.partition("[")
    parts = rest.rstrip("]").split(":")
    space, template = parts[0], (parts[1] if len(parts) > 1 else "trained")
    if kind not in ("sp-pi", "sp-pi+reversed-text", "sp-pi+reversed-perm") or space not in OUTPUT_SPACES:
        raise ValueError(f"Unknown variant {name!r}: expected names like {variant_names('')[:3]}.")
    if template != "trained" and template not in TEMPLATES:
        raise ValueError(
            f"Unknown template key {template!r} in {name!r}: expected trained or {list(TEMPLATES)}."
        )
    return kind, space, template


def extra_passes(name: str) -> str:
    kind = parse_variant(name)[0]
    return {"sp-pi": "0", "sp-pi+reversed-text": "+1 (2 passes)", "sp-pi+reversed-perm": "+n-1 (n passes)"}[
        kind
    ]


class VariantRunner:
    """Attributions of every variant and peer for one mask, on the trained template's features."""

    def __init__(self, model, tok, template: str, mask, granularity: str, max_tokens: int, seed: int):
        self.model, self.tok, self.template, self.mask = model, tok, template, mask
        common = {"granularity": granularity, "mask": mask, "max_tokens": max_tokens}
        templates = {"trained": template, **TEMPLATES}
        self.sppi = {
            (o, t): _SPPIIn(model, tok, space=o, template=tt, **common)
            for o in OUTPUT_SPACES
            for t, tt in templates.items()
        }
        self.peers = {p: get_attributor(p, model, tok, template=template, seed=seed, **common) for p in PEERS}
        self.base = self.sppi[("prob", "trained")]
        self.adapter, self.masker = self.base.adapter, self.base.masker
        self._suffix_logits: dict = {}  # per text of the current round: its suffix chain's logits

    def _on(self, a: Attribution, feats, scores: torch.Tensor, passes: float, name: str) -> Attribution:
        """``scores`` as an attribution of the trained template's features (what the metrics perturb)."""
        return Attribution(
            scores=scores.double(),
            features=feats,
            target=a.target,
            method=name,
            output=a.output,
            probs=None,
            forward_passes=passes,
        )

    def attribute(self, texts, labels, names) -> dict[str, list[Attribution]]:
        feats = self.base.featurize(texts)
        self._suffix_logits = {}
        out: dict[str, list[Attribution]] = {}
        cache: dict[tuple[str, str], list[Attribution]] = {}

        def sppi(o, t):
            if (o, t) not in cache:
                cache[(o, t)] = self.sppi[(o, t)].attribute(texts, target=labels)
            return cache[(o, t)]

        for name in names:
            if name in PEERS:
                out[name] = self.peers[name].attribute(texts, target=labels)
                continue
            kind, o, t = parse_variant(name)
            fwd = sppi(o, t)
            for a, f in zip(fwd, feats, strict=True):
                if a.features.texts != f.texts:
                    raise RuntimeError(
                        f"template {t!r} split {f.text!r} into other words: {a.features.texts}"
                    )
            if kind == "sp-pi":
                out[name] = [
                    self._on(a, f, a.scores, a.forward_passes, name) for a, f in zip(fwd, feats, strict=True)
                ]
            elif kind == "sp-pi+reversed-text":
                out[name] = self._reversed_text(fwd, feats, labels, o, t, name)
            else:
                out[name] = self._reversed_perm(fwd, feats, labels, o, name)
        return out

    def _reversed_text(self, fwd, feats, labels, o, t, name) -> list[Attribution]:
        """SP-PI on the words in reversed order, mapped back and averaged with the forward pass."""
        att = self.sppi[(o, t)]
        rev_texts = [" ".join(reversed(f.texts)) for f in feats]
        rev = att.attribute(rev_texts, target=labels)
        res = []
        for a, r, f in zip(fwd, rev, feats, strict=True):
            if tuple(reversed(r.features.texts)) != f.texts:
                raise RuntimeError(f"reversing {f.text!r} changed its words: {r.features.texts}")
            scores = 0.5 * (a.scores + r.scores.flip(0))
            res.append(self._on(a, f, scores, a.forward_passes + r.forward_passes, name))
        return res

    def _reversed_perm(self, fwd, feats, labels, o, name) -> list[Attribution]:
        """The reversed permutation of the same game: v({i..n}) - v({i+1..n}) from the suffix chain
        (n - 1 masked passes plus the empty coalition), averaged with SP-PI's forward chain."""
        res = []
        for a, f, c in zip(fwd, feats, labels, strict=True):
            n = f.n
            if f not in self._suffix_logits:  # (n + 1, C), shared by the output spaces
                # (n + 1, n): row s keeps features s..n-1 (s = 0: all, s = n: none).
                keep = np.arange(n)[None, :] >= np.arange(n + 1)[:, None]
                seqs, _ends = self.masker(f, keep[1:])
                self._suffix_logits[f] = torch.cat(
                    [self.adapter.final_logits([f.input_ids]), self.adapter.final_logits(seqs)]
                )
            v = output_values(self._suffix_logits[f], c, o)
            rev = v[:-1] - v[1:]  # (n,): feature s's contribution when added to {s+1..n}
            res.append(self._on(a, f, 0.5 * (a.scores + rev), a.forward_passes + n, name))
        return res


def _log_odds_auc(curve: torch.Tensor, x: torch.Tensor) -> float:
    p = curve.double().clamp(1e-12, 1 - 1e-12)
    return float(torch.trapezoid(torch.log(p) - torch.log1p(-p), x.double()))


def score(
    runner: VariantRunner, attrs: dict[str, list[Attribution]], points: int | None = None
) -> tuple[dict[str, dict], int]:
    """Per method, per example: AS, IAS, gap (probability curves) and the gap of the same curves in
    log-odds; one :func:`evaluate_faithfulness` call for all methods (shared masked inputs run once)."""
    names = list(attrs)
    flat = [a for m in names for a in attrs[m]]
    res = evaluate_faithfulness(
        flat, runner.adapter, runner.masker, metrics=("as_auc", "ias_auc"), points=points
    )
    out, k = {}, 0
    for m in names:
        e = len(attrs[m])
        sl = slice(k, k + e)
        as_lo = [_log_odds_auc(c, x) for c, x in zip(res.as_curves[sl], res.curve_x[sl], strict=True)]
        ias_lo = [_log_odds_auc(c, x) for c, x in zip(res.ias_curves[sl], res.curve_x[sl], strict=True)]
        out[m] = {
            "as_auc": res.as_auc[sl].tolist(),
            "ias_auc": res.ias_auc[sl].tolist(),
            "gap": res.gap[sl].tolist(),
            "gap_log_odds": [a - b for a, b in zip(as_lo, ias_lo, strict=True)],
            "passes": [float(a.forward_passes or 0.0) for a in attrs[m]],
        }
        k += e
    return out, int(res.forward_passes)


def _ci(v) -> tuple[float, float]:
    m, h = mean_confidence_interval(torch.tensor(v, dtype=torch.float64))
    return float(m), float(h)


def paired(a, b) -> dict:
    d = np.asarray(a) - np.asarray(b)
    m, h = _ci(d.tolist())
    return {"difference": m, "ci": h, "p": paired_wilcoxon(a, b), "pairs": len(d), "wins": int((d > 0).sum())}


REFERENCES = (DEFAULT, "random", "kernel-shap", "mp-pi")


def summarise(per: dict[str, dict[str, list]]) -> tuple[dict, dict]:
    rows, tests = {}, {}
    for m, d in per.items():
        rows[m] = {k: _ci(d[k]) for k in ("as_auc", "ias_auc", "gap", "gap_log_odds")}
        rows[m]["passes"] = float(np.mean(d["passes"]))
        tests[m] = {
            ref: {k: paired(d[k], per[ref][k]) for k in ("gap", "as_auc", "ias_auc", "gap_log_odds")}
            for ref in REFERENCES
            if ref in per and ref != m
        }
    return rows, tests


def choose(result: dict, mask: str) -> dict:
    """The zero-extra-pass variant with the highest mean gap under ``mask``, with its test against the
    default."""
    rows, tests = result["masks"][mask]["rows"], result["masks"][mask]["tests"]
    free = [m for m in rows if m.startswith("sp-pi[")]
    best = max(free, key=lambda m: rows[m]["gap"][0])
    return {
        "variant": best,
        "mask": mask,
        "gap": rows[best]["gap"],
        "vs_default": tests[best].get(DEFAULT, {}).get("gap"),
    }


def validation_choice(result: dict, mask: str) -> dict:
    """:func:`choose` with the reason it gives, as the test run reads it back (``--chosen-from``)."""
    best = choose(result, mask)
    t = best["vs_default"]
    reason = (
        "it is the default"
        if best["variant"] == DEFAULT
        else f"gap {best['gap'][0]:+.3f}, {t['difference']:+.3f} over the default, p = {t['p']:.2g}"
    )
    return {**best, "chosen_on": result["split"], "reason": reason}


def attach_choice(args, path: str) -> dict:
    """Give a finished test run (its JSON under ``--out``) the validation run's choice, without running
    anything: for a test run started before its validation run had finished."""
    stem = result_stem(args, f"sppi_variants_{args.split}")
    with open(stem.with_suffix(".json")) as fh:
        result = json.load(fh)
    with open(path) as fh:
        earlier = json.load(fh)
    result["chosen"] = {
        **earlier["chosen"],
        "chosen_on": f"{earlier['split']} ({path}, {earlier['examples']} sentences; attached after the run)",
    }
    write(args, result, result)
    return result


def _label(m: str) -> str:
    return {"random": "Random", "mp-pi": "MP-PI 2n", "kernel-shap": "Kernel SHAP 2n"}.get(
        m, m + (" (default)" if m == DEFAULT else "")
    )


def _fmt_p(t) -> str:
    return "" if t is None else f"{t['difference']:+.3f} (p={t['p']:.2g})"


def write(args, info, result: dict) -> None:
    stem = result_stem(args, f"sppi_variants_{args.split}")
    curves = "exact" if result["points"] is None else f"at {result['points']} fixed fractions of the words"
    write_json(stem.with_suffix(".json"), result)
    lines = [
        f"### SP-PI variants, Rotten Tomatoes {args.split} sentences"
        f"{' (PARTIAL)' if result['partial'] else ''}\n",
        f"{result['examples']} sentences ({result['features_min']}..{result['features_max']} words, mean "
        f"{result['features_mean']:.1f}; {args.split} split after its first {result['skip']}), "
        f"explained class = true label, metrics on the trained template `{result['template']!r}`, "
        f"AS/IAS curves {curves} "
        "(probability of the class); means with 95% half-widths; paired two-sided Wilcoxon over sentences "
        "(difference of means, p). `gap lo`: the gap of the same curves read in log-odds (no extra pass). "
        f"Templates: trained = `{result['template']!r}`, "
        + ", ".join(f"{k} = `{v!r}`" for k, v in TEMPLATES.items())
        + ".\n",
        f"Date {info['date']}; machine: {info['machine']}; load average at start "
        f"{info['load_average_at_start']}, at the end {result['load_average_at_end']}.\n",
        f"Command: `{info['command']}`\n",
    ]
    for mask, block in result["masks"].items():
        rows, tests = block["rows"], block["tests"]
        table = []
        for m, r in rows.items():
            t = tests[m]
            table.append(
                [
                    _label(m),
                    extra_passes(m) if m not in PEERS else ("0" if m == "random" else "2n"),
                    f"{r['passes']:.1f}",
                    f"{r['as_auc'][0]:.3f}",
                    f"{r['ias_auc'][0]:.3f}",
                    f"{r['gap'][0]:+.3f} ± {r['gap'][1]:.3f}",
                    f"{r['gap_log_odds'][0]:+.2f}",
                    *[_fmt_p(t.get(ref, {}).get("gap")) for ref in REFERENCES],
                ]
            )
        lines += [
            f"\n**mask `{mask}`** ({block['metric_passes']} masked passes for the metrics of all rows)\n\n",
            md_table(
                [
                    "method",
                    "extra passes",
                    "passes/ex",
                    "AS ↑",
                    "IAS ↓",
                    "gap ↑",
                    "gap lo ↑",
                    "gap vs SP-PI default",
                    "vs Random",
                    "vs Kernel SHAP 2n",
                    "vs MP-PI 2n",
                ],
                table,
            ),
        ]
    if "variant" in result.get("chosen", {}):
        c = result["chosen"]
        lines.append(
            f"\nChosen on {c['chosen_on']}: **{c['variant']}** (highest mean gap under `{c['mask']}` "
            f"among the zero-extra-pass variants; {c['reason']}).\n"
        )
    write_markdown(stem.with_suffix(".md"), "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines))
    print(f"wrote {stem}.{{json,md}}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--examples", type=int, default=80)
    p.add_argument("--min-features", type=int, default=4)
    p.add_argument("--max-features", type=int, default=20)
    p.add_argument(
        "--skip",
        type=int,
        default=None,
        help="sentences of the split skipped first (default: those the default job used: its 192 validation "
        "sentences, or the test sentences up to the last of its 64 probe sentences)",
    )
    p.add_argument("--masks", default="remove,...", help="comma-separated masks; the first chooses")
    p.add_argument("--variants", default="all", help="'all' or comma-separated variant names (default kept)")
    p.add_argument(
        "--peers", default=",".join(PEERS), help="comma-separated peers (Random, MP-PI, Kernel SHAP)"
    )
    p.add_argument(
        "--chosen-from",
        default=None,
        help="the validation run's JSON: its chosen variant is run here and reported against the references",
    )
    p.add_argument(
        "--attach-choice",
        default=None,
        help="the validation run's JSON: give this split's finished run under --out (same --tag) its choice "
        "and rewrite its files; runs nothing",
    )
    p.add_argument(
        "--points",
        type=int,
        default=None,
        help="AS/IAS curves at this many fixed fractions of the words (default: exact, every step)",
    )
    p.add_argument("--chunk", type=int, default=5, help="sentences per round (results rewritten after each)")
    p.add_argument("--seed", type=int, default=0)
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    if args.examples < 1 or args.chunk < 1:
        raise ValueError(f"--examples and --chunk must be positive, got {args.examples} and {args.chunk}.")
    skip = args.skip if args.skip is not None else default_skip(args.split)
    if args.attach_choice:
        return attach_choice(args, args.attach_choice)
    masks = [m.strip() for m in args.masks.split(",") if m.strip()]
    model, tok, dtype = load_model(args)
    template = resolve_template(args)
    info = run_info(args, dtype, "sppi_variants.py", raw)
    variants = (
        variant_names(template) if args.variants == "all" else [v.strip() for v in args.variants.split(",")]
    )
    chosen = None
    if args.chosen_from:
        with open(args.chosen_from) as fh:
            earlier = json.load(fh)
        chosen = {**earlier["chosen"], "chosen_on": f"{earlier['split']} ({args.chosen_from})"}
        if chosen["variant"] not in variants:
            variants.append(chosen["variant"])
    if DEFAULT not in variants:
        variants.insert(0, DEFAULT)
    for v in variants:
        parse_variant(v)
    peers = [q.strip() for q in args.peers.split(",") if q.strip()]
    bad = [q for q in peers if q not in PEERS]
    if bad:
        raise ValueError(f"Unknown peer(s) {bad}: expected some of {', '.join(PEERS)}.")
    names = [*variants, *peers]

    featurizer = Featurizer(tok, "word", template)
    texts, labels = select_sentences(
        args.split, featurizer, args.examples, args.min_features, args.max_features, skip
    )
    n_feats = [featurizer(t).n for t in texts]
    print(
        f"{info['model']} + {info['adapter']}: {len(texts)} {args.split} sentences (skip {skip}), n = "
        f"{min(n_feats)}..{max(n_feats)}; template {template!r}; masks {masks}; {len(names)} methods",
        flush=True,
    )
    runners = {m: VariantRunner(model, tok, template, m, "word", args.max_tokens, args.seed) for m in masks}
    per = {m: {name: {} for name in names} for m in masks}
    metric_passes = {m: 0 for m in masks}
    result: dict = {}
    t_start = time.perf_counter()
    for start in range(0, len(texts), args.chunk):
        part, ys = texts[start : start + args.chunk], labels[start : start + args.chunk]
        t0 = time.perf_counter()
        for m, runner in runners.items():
            scored, passes = score(runner, runner.attribute(part, ys, names), args.points)
            metric_passes[m] += passes
            for name, d in scored.items():
                for k, v in d.items():
                    per[m][name].setdefault(k, []).extend(v)
        done = start + len(part)
        print(f"  {done}/{len(texts)} sentences: round {time.perf_counter() - t0:.1f} s", flush=True)
        blocks = {}
        for m in masks:
            rows, tests = summarise(per[m])
            blocks[m] = {
                "rows": rows,
                "tests": tests,
                "metric_passes": metric_passes[m],
                "per_example": per[m],
            }
        result = {
            **info,
            "split": args.split,
            "skip": skip,
            "examples": done,
            "examples_planned": len(texts),
            "partial": done < len(texts),
            "features_min": min(n_feats[:done]),
            "features_max": max(n_feats[:done]),
            "features_mean": float(np.mean(n_feats[:done])),
            "template": template,
            "templates": TEMPLATES,
            "points": args.points,
            "masks": blocks,
            "seconds": time.perf_counter() - t_start,
            "load_average_at_end": load_average(),
        }
        if chosen is not None:
            result["chosen"] = chosen
        elif args.split == "validation":  # the choice is made on validation only
            result["chosen"] = validation_choice(result, masks[0])
        write(args, info, result)
    return result


if __name__ == "__main__":
    main()
