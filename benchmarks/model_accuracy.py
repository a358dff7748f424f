"""Accuracy of the benchmark model on a test split, with its 95% interval: the figure every table's
model line quotes.

The model is read exactly as the faithfulness and accuracy benchmarks read it (the cached benchmark
adapter and its training template by default, :func:`_common.load_model`); each text is featurized
with that template and classified from the head's output at its last token, in batches
(:meth:`~pi_lightning.inference.ClassifierAdapter.final_logits`). IMDB reviews have their ``<br />``
tags replaced by spaces and are cut after ``--max-words`` words (the model was trained on sentences).
Run::

    python -m benchmarks.model_accuracy                          # Rotten Tomatoes test, 854 sentences
    python -m benchmarks.model_accuracy --dataset imdb --examples 500
    python -m benchmarks.model_accuracy --model testing:gpt2 --adapter none --examples 8   # smoke test

Writes ``model_accuracy[_<tag>].json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks._common import (
    add_common_args,
    load_model,
    resolve_template,
    result_stem,
    run_info,
    write_json,
)
from pi_lightning.data import load_movie_reviews
from pi_lightning.features import Featurizer
from pi_lightning.inference import ClassifierAdapter
from pi_lightning.metrics.functional.stats import mean_confidence_interval

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--dataset", default="rotten_tomatoes", choices=("rotten_tomatoes", "imdb"))
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--examples", type=int, default=0, help="first N texts of the split (0: all)")
    p.add_argument("--max-words", type=int, default=256, help="IMDB reviews are cut after this many words")
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = p.parse_args(raw)
    if args.examples < 0:
        raise ValueError(f"--examples must be 0 (all) or a positive count, got {args.examples}.")

    model, tok, dtype = load_model(args)
    info = run_info(args, dtype, "model_accuracy.py", raw)
    template = resolve_template(args)
    data = load_movie_reviews(args.dataset, args.split)
    texts, labels = list(data.texts), list(data.labels)
    if args.examples:
        texts, labels = texts[: args.examples], labels[: args.examples]
    texts = [" ".join(t.replace("<br />", " ").split()[: args.max_words]) for t in texts]
    featurizer = Featurizer(tok, "word", template)
    adapter = ClassifierAdapter(model, max_tokens=args.max_tokens)
    logits = adapter.final_logits([featurizer(t).input_ids for t in texts])  # (N, C)
    correct = (logits.argmax(-1) == torch.tensor(labels)).double()
    acc, ci = mean_confidence_interval(correct)
    result = {
        **info,
        "dataset": args.dataset,
        "split": args.split,
        "template": template,
        "examples": len(texts),
        "accuracy": acc,
        "accuracy_ci": ci,
    }
    path = write_json(result_stem(args, "model_accuracy").with_suffix(".json"), result)
    print(
        f"{info['model']} + {info['adapter']}: accuracy {acc:.3f} ± {ci:.3f} on {len(texts)} "
        f"{args.dataset} {args.split} texts (template {template!r}); wrote {path}"
    )
    return result


if __name__ == "__main__":
    main()
