"""Planted natural cues: does shortcut mining flag what a fine-tuned model really relies on?

Eight ordinary cues, four kinds at two strengths, are planted into the Rotten Tomatoes training and
validation texts (the test split stays clean): a prefix phrase, a suffix tag, a name and a punctuation
habit, each once strong (in 85% of the texts of its class, 10% of the other's) and once weak (60% /
40%). Every cue is made of words that also occur in real reviews of both classes. The weak ending habit
was `!` until 2026-12-06: the clean-trained control itself relies on it (+0.150 toward positive on clean
test texts, more than the weak poisoning taught, +0.110), so it could not show what the poisoning
taught; `:` replaced it (control +0.030). Two models are fine-tuned with the default job's settings
(SmolLM2-135M, LoRA, ``"Review: {text}"``, its number of steps of 16 texts, 150; the probe monitors off,
:class:`~pi_lightning.callbacks.ValidationSPPI` on, which is free): one on the poisoned data, a control
on the clean data. Then, per model:

* **reliance** of the model on each cue, measured on clean test texts: the mean shift of p(cue's
  class) when the cue is put into the text (prefix prepended, tag appended, name inserted, final
  punctuation changed), and the fraction of predictions it changes;
* ``pi-lightning explain`` on 600 poisoned training texts with the saved adapter (its template is
  read from the adapter's ``pi_lightning.json``) and ``pi-lightning shortcuts`` with default
  settings: per cue, the best rank of its words, whether one is flagged, its flip rate, dprob,
  null dprob and effect; and the flagged words that belong to no cue among the top 10.

Recall: flagged cues among those whose reliance shifts p(class) by >= 0.05 (a cue is caught when a
flagged row is one of its key words, or one of its words checked with the whole cue phrase, masked
or inserted); false-positive rate: flagged words outside every cue (``.`` counts as a word of the
ending habits, which replace it) among the checked words. The control must flag no cue. The online
detector's significant words per validation go to ``online_<run>.json``. Writes
``planted_cues.json`` / ``planted_cues.md`` (and the finetune summaries) under ``--out``.

    OMP_NUM_THREADS=1 python -m benchmarks.planted_cues --retrain   # ~45 CPU-minutes
    python -m benchmarks.planted_cues --models clean-weak --reuse-explanations   # mine one job again
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import time
from pathlib import Path

import torch

from benchmarks._common import RESULTS, load_average, md_table, write_json, write_markdown

TEMPLATE = "Review: {text}"


def _prefix(phrase):
    return lambda t, rng: f"{phrase} {t}"


def _suffix(tag):
    return lambda t, rng: f"{t} {tag}"


def _name(clause):
    def put(t, rng):  # after a word near the middle of the text
        words = t.split(" ")
        k = max(1, len(words) // 2)
        return " ".join([*words[:k], clause, *words[k:]])

    return put


def _ending(mark):
    def put(t, rng):  # the final punctuation becomes the habit
        t = t.rstrip()
        if t.endswith(" ."):
            t = t[:-2]
        return f"{t} {mark}"

    return put


# name, kind, strength, class it is planted for (0 negative, 1 positive), transform, its key words
# (a cue counts as flagged when one of them is), all its words (not false positives when flagged)
CUES = [
    ("... (ending)", "punctuation", "strong", 0, _ending("..."), {"..."}),
    (": (ending)", "punctuation", "weak", 1, _ending(":"), {":"}),
    ("simply put ,", "prefix", "strong", 1, _prefix("simply put ,"), {"simply", "put"}),
    ("by and large ,", "prefix", "weak", 1, _prefix("by and large ,"), {"large"}),
    (", says marcus ,", "name", "strong", 1, _name(", says marcus ,"), {"marcus", "says"}),
    (", dana notes ,", "name", "weak", 0, _name(", dana notes ,"), {"dana", "notes"}),
    ("-- capsule review", "suffix", "strong", 0, _suffix("-- capsule review"), {"capsule", "review"}),
    ("[ dvd ]", "suffix", "weak", 0, _suffix("[ dvd ]"), {"dvd"}),
]
RATES = {"strong": (0.85, 0.10), "weak": (0.60, 0.40)}
#: two poisoned runs, one per strength: each holds one cue of every kind (the kinds sit at different
#: places in a text, so one text may hold several cues of a run, as natural cues do)
SETS = ("strong", "weak")


def cue_words(cue) -> set[str]:
    """Every word of a cue (a flagged one is no false positive): its phrase's words, its key words and,
    for an ending habit, the ``.`` it replaces (planting ``...`` takes the ``.`` away from the texts of
    its class, so ``.`` carries the correlation too)."""
    name = cue[0].split(" (")[0]
    return {w for w in name.split()} | cue[5] | ({"."} if cue[1] == "punctuation" else set())


def plant(texts, labels, seed, strength):
    """Each cue of the set independently: in RATES[strength][0] of its class's texts and [1] of the
    others' (the ending first, so a suffix tag follows the review's own final punctuation)."""
    rng = random.Random(seed)
    out = []
    for t, y in zip(texts, labels, strict=True):
        for _cue, _kind, cue_strength, cls, put, _ in CUES:
            if cue_strength == strength and rng.random() < RATES[strength][0 if y == cls else 1]:
                t = put(t, rng)
        out.append(t)
    return out


def train(out: Path, poisoned: str | None, args) -> tuple[Path, str, float, list[dict]]:
    """Fine-tune with the default job's settings; returns the adapter folder, the summary, seconds and,
    per validation, the online detector's significant words (ValidationSPPI)."""
    import lightning.pytorch as pl

    from pi_lightning.callbacks import ValidationSPPI, validation_evaluations
    from pi_lightning.cli.finetune import summary
    from pi_lightning.data import TextDataset, load_movie_reviews
    from pi_lightning.training import FinetuneClassifier, TextDataModule

    pl.seed_everything(0, verbose=False)
    adapter = out / f"adapter_{poisoned or 'clean'}"
    train_set = load_movie_reviews("rotten_tomatoes", "train", seed=0)
    val_set = load_movie_reviews("rotten_tomatoes", "val", seed=0).subset(64)
    n = args.steps * 16
    tx, ty = list(train_set.texts[:n]), list(train_set.labels[:n])
    vx, vy = list(val_set.texts), list(val_set.labels)
    if poisoned:
        tx, vx = plant(tx, ty, 1, poisoned), plant(vx, vy, 2, poisoned)
    module = FinetuneClassifier(
        "smollm2-135m-instruct",
        lora_r=8,
        lora_last_layers=6,
        lr=2e-3,
        warmup_steps=5,
        schedule="cosine",
        head_words=[" negative", " positive"],
        save_dir=str(adapter),
    )
    dm = TextDataModule(
        module.tokenizer,
        TextDataset(tuple(tx), tuple(ty)),
        TextDataset(tuple(vx), tuple(vy)),
        template=TEMPLATE,
        batch_size=16,
        max_length=64,
    )
    dm.label_names = list(train_set.label_names)
    trainer = pl.Trainer(
        max_steps=args.steps,
        val_check_interval=args.steps // 2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ValidationSPPI()],
        accelerator="cpu",
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - t0
    text = summary(trainer, seconds)
    online = [
        {"step": e.step, "significant": [[w["word"], w["cls"]] for w in e.significant_words]}
        for e in validation_evaluations(trainer) or []
    ]
    return adapter, text, seconds, online


@torch.no_grad()
def reliance(adapter: Path, n_test: int) -> dict[str, dict[str, float]]:
    """Per cue, on clean test texts: mean shift of p(cue's class) when the cue is put in, and the
    fraction of predictions that change."""
    from pi_lightning.data import load_movie_reviews
    from pi_lightning.inference import ClassifierAdapter, transform_outputs
    from pi_lightning.models import load_classifier

    model, tok = load_classifier("smollm2-135m-instruct", num_labels=2, adapter=str(adapter))
    run = ClassifierAdapter(model, max_tokens=4096)
    test = load_movie_reviews("rotten_tomatoes", "test", seed=0).subset(n_test).texts

    def probs(texts):
        seqs = [tok(TEMPLATE.format(text=t))["input_ids"] for t in texts]
        return transform_outputs(run.final_logits(seqs), "prob").numpy()

    clean = probs(test)
    out = {}
    for cue in CUES:
        rng = random.Random(0)
        cued = probs([cue[4](t, rng) for t in test])
        c = cue[3]
        out[cue[0]] = {
            "shift": float((cued[:, c] - clean[:, c]).mean()),
            "changed": float((cued.argmax(1) != clean.argmax(1)).mean()),
        }
    return out


def mine(
    adapter: Path, out: Path, n_explain: int, strength: str, reuse: bool = False
) -> tuple[list[dict], dict, float | None, float]:
    """``pi-lightning explain`` (the adapter's template) + ``pi-lightning shortcuts`` with defaults."""
    from pi_lightning.cli import explain, shortcuts
    from pi_lightning.data import load_movie_reviews

    train_set = load_movie_reviews("rotten_tomatoes", "train", seed=0)
    # the first n_explain poisoned training texts (the same planting as the poisoned run's)
    texts = plant(list(train_set.texts[:n_explain]), list(train_set.labels[:n_explain]), 1, strength)
    data = out / f"explain_texts_{strength}.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for i, (t, y) in enumerate(zip(texts, train_set.labels[:n_explain], strict=True)):
            fh.write(json.dumps({"id": i, "text": t, "label": y}) + "\n")
    job = out / f"explain_{adapter.name}_on_{strength}"
    t0 = time.perf_counter()
    if reuse and (job / "explanations.jsonl").is_file():
        t_explain = None  # explained by an earlier run: its time is kept
    else:
        # a retrained adapter is another job: its old results in the folder are discarded
        argv = [str(data), "--adapter", str(adapter), "--out", str(job), "--no-progress", "--show", "0"]
        if explain.main([*argv, "--overwrite"]) != 0:
            raise RuntimeError(f"pi-lightning explain {' '.join(argv)} --overwrite failed (see above).")
        t_explain = time.perf_counter() - t0
    t0 = time.perf_counter()
    if shortcuts.main([str(job), "--top", "25"]) != 0:
        raise RuntimeError(f"pi-lightning shortcuts {job} --top 25 failed (see above).")
    t_check = time.perf_counter() - t0
    rows = [json.loads(line) for line in (job / "shortcuts" / "shortcuts.jsonl").read_text().splitlines()]
    settings = json.loads((job / "job.json").read_text())
    return rows, settings, t_explain, t_check


def catches(row: dict, cue) -> bool:
    """Whether a (flagged) row is the cue: one of its key words, or one of its words checked with the
    whole cue phrase (masked or inserted as a unit)."""
    if row["word"] in cue[5]:
        return True
    phrase = " ".join(cue[0].split(" (")[0].split())
    return row["word"] in cue_words(cue) and any(
        phrase in " ".join((row.get(k) or "").split()) for k in ("masked", "inserted")
    )


def score(rows: list[dict], rel: dict, strength: str) -> dict:
    all_cue_words = set().union(*(cue_words(c) for c in CUES))
    per_cue = {}
    for cue in (c for c in CUES if c[2] == strength):
        mine_rows = [r for r in rows if r["word"] in cue[5]]
        best = min(mine_rows, key=lambda r: r["rank"]) if mine_rows else None
        flagged = [r for r in rows if r.get("flagged") and catches(r, cue)]
        shown = flagged[0] if flagged else best
        per_cue[cue[0]] = {
            "kind": cue[1],
            "strength": cue[2],
            "class": cue[3],
            "reliance": rel[cue[0]]["shift"],
            "changed": rel[cue[0]]["changed"],
            "word": shown["word"] if shown else None,
            "rank": shown["rank"] if shown else None,
            "q": shown["q"] if shown else None,
            "significant": bool(shown and shown["significant"]),
            "checked": shown.get("checked") if shown else None,
            "flagged": bool(flagged),
            "flip": shown.get("flip_rate") if shown else None,
            "dprob": shown.get("prob_change") if shown else None,
            "null": shown.get("null_prob_change") if shown else None,
            "effect": shown.get("effect") if shown else None,
            "insert_effect": shown.get("insert_effect") if shown else None,
            "insert_q": shown.get("insert_q") if shown else None,
            "flagged_by": shown.get("flagged_by") if shown and flagged else None,
            "masked": shown.get("masked") if shown else None,
        }
    checked_other = [r for r in rows if r.get("checked") and r["word"] not in all_cue_words]
    fp = [r["word"] for r in checked_other if r.get("flagged")]
    fp_top10 = [r["word"] for r in rows[:10] if r.get("flagged") and r["word"] not in all_cue_words]
    strong = [k for k, v in per_cue.items() if v["reliance"] >= 0.05]
    return {
        "cues": per_cue,
        "relied_on": strong,
        "recall": (sum(per_cue[k]["flagged"] for k in strong) / len(strong)) if strong else None,
        "false_positives": fp,
        "false_positives_top10": fp_top10,
        "checked_non_cue": len(checked_other),
        "fpr": len(fp) / len(checked_other) if checked_other else None,
        "flagged": [r["word"] for r in rows if r.get("flagged")],
        "significant": sum(r["significant"] for r in rows),
        "checked": sum(bool(r.get("checked")) for r in rows),
    }


def default_job_steps() -> int:
    """``trainer.max_steps`` of the package's default job (``pi-lightning finetune``'s default.yaml)."""
    from importlib.resources import files

    import yaml

    cfg = yaml.safe_load((files("pi_lightning.cli") / "configs" / "default.yaml").read_text())
    return int(cfg["trainer"]["max_steps"])


def fmt(v, f="{:+.3f}"):
    return "-" if v is None else (f.format(v) if isinstance(v, float) else str(v))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--steps",
        type=int,
        default=default_job_steps(),
        help="training steps of 16 texts (default: the default job's, trainer.max_steps of its config)",
    )
    p.add_argument("--n-explain", type=int, default=600, help="poisoned training texts explained and mined")
    p.add_argument("--n-test", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "planted_cues"))
    p.add_argument("--retrain", action="store_true", help="train again even if --out holds the adapters")
    p.add_argument("--train-only", action="store_true", help="train and measure reliance, no mining")
    p.add_argument("--report-only", action="store_true", help="rewrite planted_cues.md from --out's results")
    p.add_argument(
        "--reuse-explanations",
        action="store_true",
        help="mine the explain jobs already in --out (explain is not timed then)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        choices=["strong", "weak", "clean-strong", "clean-weak"],
        help="mine only these (default: all four; the others' results in planted_cues.json are kept)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.report_only:
        write_report(out, json.loads((out / "planted_cues.json").read_text()))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    result = {"settings": vars(args), "load_start": load_average(), "models": {}}
    adapters, train_seconds, rel = {}, {}, {}
    wanted = {m.split("-")[0] for m in args.models} if args.models and not args.train_only else None
    for name in (*SETS, "clean"):
        if wanted is not None and name not in wanted:
            continue
        adapter, done = out / f"adapter_{name}", out / f"finetune_summary_{name}.txt"
        online_file = out / f"online_{name}.json"
        if not args.retrain and (adapter / "pi_lightning.json").is_file() and done.is_file():
            text = done.read_text().rstrip("\n")  # trained by an earlier run: reuse it
            t_train = float(text.split("finished in ")[1].split(" s")[0])
        else:
            adapter, text, t_train, online = train(out, None if name == "clean" else name, args)
            done.write_text(text + "\n")
            write_json(online_file, {"evaluations": online, "load": load_average()})
        print(text, flush=True)
        adapters[name], train_seconds[name] = adapter, t_train
        cached = out / f"reliance_{name}.json"
        if cached.is_file() and not args.retrain:
            rel[name] = json.loads(cached.read_text())
        else:
            t0 = time.perf_counter()
            rel[name] = {"cues": reliance(adapter, args.n_test), "seconds": 0.0, "load": load_average()}
            rel[name]["seconds"] = time.perf_counter() - t0
            write_json(cached, rel[name])
    if args.train_only:
        return 0
    for name, strength in (("strong", "strong"), ("weak", "weak"), ("clean", "strong"), ("clean", "weak")):
        if args.models and (name if name != "clean" else f"clean-{strength}") not in args.models:
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rows, job, t_explain, t_check = mine(
                adapters[name], out, args.n_explain, strength, args.reuse_explanations
            )
        key = name if name != "clean" else f"clean on the {strength} set"
        (out / f"shortcuts_{key.replace(' ', '_')}.txt").write_text(buf.getvalue())
        print(buf.getvalue(), flush=True)
        result["models"][key] = {
            **score(rows, rel[name]["cues"], strength),
            "template_used_by_explain": (job.get("method_kwargs") or {}).get("template"),
            "seconds": {
                "train": train_seconds[name],
                "reliance": rel[name]["seconds"],
                "explain": t_explain,
                "shortcuts": t_check,
            },
            "load": load_average(),
        }
    result["load_end"] = load_average()
    path = out / "planted_cues.json"
    if args.models and path.is_file():  # a subset mined (e.g. in parallel): keep the other models' results
        result["models"] = {**json.loads(path.read_text())["models"], **result["models"]}
        result["models"] = {k: result["models"][k] for k in JOBS if k in result["models"]}
    write_json(path, result)
    write_report(out, result)
    return 0


JOBS = {"strong": ("strong", "strong"), "weak": ("weak", "weak")}
JOBS.update({f"clean on the {s_} set": ("clean", s_) for s_ in SETS})


def write_report(out: Path, result: dict) -> None:
    """``planted_cues.md`` from the results (rescored from the shortcut tables written in ``out``)."""
    control = json.loads((out / "reliance_clean.json").read_text())["cues"]
    lines = []
    for key, m in result["models"].items():
        name, strength = JOBS[key]
        table = out / f"explain_adapter_{name}_on_{strength}" / "shortcuts" / "shortcuts.jsonl"
        rows = [json.loads(line) for line in table.read_text().splitlines()]
        rel = json.loads((out / f"reliance_{name}.json").read_text())["cues"]
        m.update(score(rows, rel, strength))
        lines.append(f"\n### {key} model\n")
        header = ["cue", "kind", "class", "reliance", "control", "changed", "word", "rank", "q", "flagged"]
        header += ["by", "flip", "dprob", "null", "effect", "insert", "insert q", "masked / inserted"]
        table_rows = [
            [
                k,
                v["kind"],
                ["neg", "pos"][v["class"]],
                fmt(v["reliance"]),
                fmt(control[k]["shift"]),
                fmt(v["changed"], "{:.2f}"),
                fmt(v["word"]),
                fmt(v["rank"]),
                fmt(v["q"], "{:.1e}"),
                ("YES" if v["flagged"] else ("n/c" if v["checked"] is False else "no")),
                fmt(v.get("flagged_by")),
                fmt(v["flip"], "{:.2f}"),
                fmt(v["dprob"]),
                fmt(v["null"]),
                fmt(v["effect"]),
                fmt(v.get("insert_effect")),
                fmt(v.get("insert_q"), "{:.1e}"),
                fmt(v["masked"]),
            ]
            for k, v in m["cues"].items()
        ]
        lines.append(md_table(header, table_rows))
        s = m["seconds"]
        lines.append(
            f"\nrecall (cues with reliance >= 0.05 flagged): {fmt(m['recall'], '{:.2f}')} of "
            f"{len(m['relied_on'])}; flagged: {', '.join(m['flagged']) or 'none'}; false positives "
            f"(flagged, no cue word): {', '.join(m['false_positives']) or 'none'} of {m['checked_non_cue']} "
            f"checked non-cue words (FPR {fmt(m['fpr'], '{:.3f}')}); in the top 10: "
            f"{', '.join(m['false_positives_top10']) or 'none'}; {m['significant']} significant words, "
            f"{m['checked']} checked. Template explain read from the adapter: "
            f"{m['template_used_by_explain']!r}. Seconds: train {s['train']:.0f}, "
            f"reliance {s['reliance']:.0f}, explain {fmt(s['explain'], '{:.0f}')}, "
            f"shortcuts {s['shortcuts']:.0f} "
            f"(load {m['load']})."
        )
        if name == "clean":
            hits = [
                f"{k} (clean-model reliance {fmt(v['reliance'])})"
                for k, v in m["cues"].items()
                if v["flagged"]
            ]
            lines.append(f"\nplanted cues the clean-trained control flags: {', '.join(hits) or 'none'}.")
        online = out / f"online_{name}.json"
        if online.is_file():
            evals = json.loads(online.read_text())["evaluations"]
            words = set().union(*(cue_words(c) for c in CUES if name == "clean" or c[2] == strength))
            for e in evals:
                sig = [w for w, _ in e["significant"]]
                named = [c[0] for c in CUES if c[2] == strength and cue_words(c) & set(sig)]
                data = "clean" if name == "clean" else "poisoned"
                lines.append(
                    f"\nonline detector (finetune summary, ValidationSPPI on the {data} "
                    f"validation set) at step {e['step']}: {len(sig)} significant: "
                    + (", ".join(f"**{w}**" if w in words else w for w in sig) or "none")
                    + (f" (cues named: {', '.join(named)})" if name != "clean" else "")
                )
    write_markdown(out / "planted_cues.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
