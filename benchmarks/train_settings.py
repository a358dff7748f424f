"""Training settings of the main job against validation accuracy and CPU cost; the probe gap they give.

One run trains the recipe's model (:class:`~pi_lightning.training.FinetuneClassifier`: LoRA on the
last layers, the given template, LR schedule and head initialisation) for ``--steps`` steps of
``--batch-size`` Rotten Tomatoes training sentences, then reports:

* validation accuracy on the first ``--val`` sentences of the **validation** split (settings are
  chosen on it; the test split is never used for that), and the zero-shot accuracy before training;
* CPU seconds and wall seconds per training step, with the load average next to them (on a shared
  machine the wall time is inflated; CPU seconds per step are what extrapolates to an idle one);
* with ``--gap-examples N``: SP-PI on N test sentences (the main job's probe source) under
  ``--mask``, the AS - IAS gap with its 95% CI from the exact curves and from ``--fractions``
  fixed fractions, their per-example difference, the passes and CPU seconds each took, and the
  probe size at which the gap's half-width would be a third of its distance from 0.

Every run appends one JSON line (with the machine line and command) to ``--out``/train_settings.jsonl.
The model is built by the training module itself (the base model from ``--model``, LoRA added), so
this script takes ``benchmarks/_common``'s output options only.

    python -m benchmarks.train_settings --template "Review: {text}" --head-words " negative" " positive" \\
        --warmup 5 --schedule cosine --gap-examples 48
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from scipy import stats

from benchmarks._common import add_output_args, run_info

__all__ = ["main"]


def _batch(ids, labels, pad):
    width = max(len(x) for x in ids)
    # (B, width) right-padded ids and mask
    x = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, s in enumerate(ids):
        x[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return x, mask, torch.tensor(labels)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--template", default="{text}")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--schedule", default="constant", choices=("constant", "cosine"))
    p.add_argument("--lora-last-layers", type=int, default=6)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--head-words", nargs="*", default=None)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--val", type=int, default=256, help="validation sentences (>= 256 to choose settings)")
    p.add_argument("--gap-examples", type=int, default=0)
    p.add_argument("--gap-max-words", type=int, default=40)
    p.add_argument("--mask", default="remove")
    p.add_argument("--fractions", type=int, default=11)
    add_output_args(p)
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pi_lightning.data import load_movie_reviews
    from pi_lightning.features import Featurizer
    from pi_lightning.training import FinetuneClassifier

    torch.manual_seed(0)
    module = FinetuneClassifier(
        args.model,
        lora_last_layers=args.lora_last_layers,
        lora_r=args.lora_r,
        lr=args.lr,
        warmup_steps=args.warmup,
        schedule=args.schedule,
        head_words=args.head_words,
    )
    tok, model = module.tokenizer, module.model
    source = "rotten_tomatoes"
    train = load_movie_reviews(source, "train", seed=0)
    val = load_movie_reviews(source, "val", seed=0).subset(args.val)

    def encode(texts):
        return Featurizer(tok, template=args.template, max_length=args.max_length).encode(texts)

    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    used = order[: args.steps * args.batch_size]
    tr_ids, tr_labels = encode([train.texts[i] for i in used]), [train.labels[i] for i in used]
    va_ids, va_labels = encode(list(val.texts)), list(val.labels)

    def accuracy() -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(va_ids), 32):
                x, m, y = _batch(va_ids[i : i + 32], va_labels[i : i + 32], tok.pad_token_id)
                correct += int((model(input_ids=x, attention_mask=m).logits.argmax(-1) == y).sum())
        model.train()
        return correct / len(va_ids)

    acc0 = accuracy()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: module.lr_factor(s, args.steps))
    model.train()
    c0, w0 = time.process_time(), time.perf_counter()
    for s in range(args.steps):
        sl = slice(s * args.batch_size, (s + 1) * args.batch_size)
        x, m, y = _batch(tr_ids[sl], tr_labels[sl], tok.pad_token_id)
        model(input_ids=x, attention_mask=m, labels=y).loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    cpu_train, wall_train = time.process_time() - c0, time.perf_counter() - w0
    out = {
        **run_info(args, "fp32", "train_settings.py", raw),
        **{k: v for k, v in vars(args).items() if k != "out"},
    }
    out.update(
        acc_zero_shot=acc0,
        val_acc=accuracy(),
        cpu_s_per_step=cpu_train / args.steps,
        wall_s_per_step=wall_train / args.steps,
        loadavg=os.getloadavg(),  # at the end of training (run_info has it at the start)
        torch_threads=torch.get_num_threads(),
    )
    if args.gap_examples:
        from pi_lightning.attributors import SPPI
        from pi_lightning.metrics import evaluate_faithfulness
        from pi_lightning.metrics.functional import mean_confidence_interval

        model.eval()
        test = load_movie_reviews(source, "test", seed=0)
        keep = [i for i, t in enumerate(test.texts) if len(t.split()) <= args.gap_max_words][
            : args.gap_examples
        ]
        sppi = SPPI(model, tok, granularity="word", template=args.template, mask=args.mask)
        atts = sppi.attribute([test.texts[i] for i in keep], target=[test.labels[i] for i in keep])
        runs = {}
        for fr in (None, args.fractions):
            c = time.process_time()
            res = evaluate_faithfulness(
                atts, sppi.adapter, sppi.masker, metrics=["as_auc", "ias_auc"], points=fr
            )
            gap, half = mean_confidence_interval(res.gap)
            sd = float(res.gap.std())
            need = None
            if gap != 0:  # smallest N with t_{N-1} * sd / sqrt(N) <= |gap| / 3
                need = next(
                    (n for n in range(3, 5000) if stats.t.ppf(0.975, n - 1) * sd / n**0.5 <= abs(gap) / 3),
                    None,
                )
            runs["exact" if fr is None else f"fractions_{fr}"] = {
                "gap": gap,
                "gap_ci": half,
                "as_auc": float(res.as_auc.mean()),
                "ias_auc": float(res.ias_auc.mean()),
                "passes": res.forward_passes,
                "cpu_s": time.process_time() - c,
                "probe_size_needed": need,
                "per_example": res.gap.tolist(),
            }
        exact, fast = runs["exact"]["per_example"], runs[f"fractions_{args.fractions}"]["per_example"]
        err = [abs(a - b) for a, b in zip(exact, fast, strict=False)]
        out["gap"] = runs
        out["features"] = [a.features.n for a in atts]
        out["fraction_gap_error"] = {"mean_abs": sum(err) / len(err), "max_abs": max(err)}
    print(json.dumps({k: v for k, v in out.items() if k != "gap"}))
    if "gap" in out:
        for k, r in out["gap"].items():
            print(
                f"  {k}: gap {r['gap']:+.3f} ± {r['gap_ci']:.3f} (AS {r['as_auc']:.3f}, IAS "
                f"{r['ias_auc']:.3f}), "
                f"{r['passes']} passes, {r['cpu_s']:.1f} CPU s, probe size for CI <= |gap|/3: "
                f"{r['probe_size_needed']}"
            )
    path = Path(args.out) / "train_settings.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
