"""Explain real Rotten Tomatoes sentences with SP-PI on the embedded SmolLM2-135M model.

The default model comes without a sentiment head, so this script first fits its classification
head as a linear probe (logistic regression on the last hidden state, the backbone untouched) on a
few hundred training sentences, then prints SP-PI word attributions for test sentences as a table.

    python recipes/explain_default.py            # the embedded default (no network needed)
    python recipes/explain_default.py --model gpt2 --n-probe 512   # any hub id or local folder
"""

from __future__ import annotations

import argparse
import time

import torch

from pi_lightning import SPPI
from pi_lightning.data import load_movie_reviews
from pi_lightning.features import Featurizer
from pi_lightning.inference import ClassifierAdapter, model_mode, token_budget_batches
from pi_lightning.models import DEFAULT_MODEL, load_classifier


def fit_linear_probe(
    model, tokenizer, texts, labels, template: str, max_tokens: int = 4096, l2: float = 1e-2
) -> float:
    """Fit ``model.score`` by logistic regression on hidden states; returns train accuracy (last token).

    Every position of the text is a training row (labelled with its sentence's label, each
    sentence weighted equally), so the head also reads prefixes sensibly: SP-PI's intermediate
    predictions are then meaningful, not only the final one.
    """
    adapter = ClassifierAdapter(model, max_tokens=max_tokens)
    fz = Featurizer(tokenizer, template=template)
    seqs = fz.encode(texts)  # the explainers' own encoding of the template
    start = len(fz.prefix_ids)
    feats = [None] * len(seqs)
    grabbed: list[torch.Tensor] = []
    handle = adapter.head.register_forward_hook(lambda m, inp, out: grabbed.append(inp[0]))
    try:
        with model_mode(model):
            for batch in token_budget_batches([len(s) for s in seqs], max_tokens):
                # (B, width) right-padded: token t of a sequence is column t.
                ids, mask = adapter.pad([seqs[i] for i in batch], padding_side="right")
                grabbed.clear()
                model(input_ids=ids, attention_mask=mask)
                hidden = grabbed[-1]
                for r, i in enumerate(batch):
                    feats[i] = hidden[r, start - 1 : len(seqs[i])].float()
    finally:
        handle.remove()
    X = torch.cat(feats).double()
    y = torch.cat([torch.full((len(f),), lab) for f, lab in zip(feats, labels, strict=False)])
    w = torch.cat([torch.full((len(f),), 1.0 / len(f), dtype=torch.double) for f in feats])
    last = torch.cumsum(torch.tensor([len(f) for f in feats]), 0) - 1
    scale = X.std(0).mean()
    W = torch.zeros(adapter.num_labels, X.shape[1], dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([W], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        nll = torch.nn.functional.cross_entropy((X / scale) @ W.T, y, reduction="none")
        loss = (w * nll).sum() / w.sum() + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        adapter.head.weight.copy_((W / scale).to(adapter.head.weight.dtype))
        return float((((X[last] / scale) @ W.T).argmax(-1) == y[last]).double().mean())


def format_table(attr, label_names) -> str:
    """One example as a readable table: word, score and a signed bar."""
    scores = attr.scores
    top = float(scores.abs().max()) or 1.0
    probs = attr.probs.tolist()
    lines = [
        f"  text: {attr.features.text}",
        f"  predicted: {label_names[attr.prediction]} (p={probs[attr.prediction]:.2f}), explained class: "
        f"{label_names[attr.target]}, p0={attr.base_value:.3f}",
        f"  {'word':<18}{'SP-PI':>9}  ",
    ]
    for text, s in zip(attr.features.texts, scores.tolist(), strict=False):
        width = round(10 * abs(s) / top)
        bar = ("+" * width).ljust(10) if s >= 0 else ("-" * width).rjust(10)
        side = f"{'':10}|{bar}" if s >= 0 else f"{bar}|"
        lines.append(f"  {text[:18]:<18}{s:>+9.4f}  {side}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="hub id or local folder (default: embedded SmolLM2)"
    )
    p.add_argument("--n-probe", type=int, default=192, help="training sentences for the linear probe head")
    p.add_argument("--n-explain", type=int, default=4, help="test sentences to explain")
    p.add_argument("--template", default="Movie review: {text}")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    model, tok = load_classifier(args.model, num_labels=2, seed=args.seed)
    train = load_movie_reviews("rotten_tomatoes", "train", seed=args.seed).subset(args.n_probe)
    test = load_movie_reviews("rotten_tomatoes", "test", seed=args.seed).subset(args.n_explain)
    acc = fit_linear_probe(model, tok, train.texts, train.labels, args.template)
    print(
        f"model {args.model}: linear-probe head fitted on {len(train)} sentences (train acc {acc:.2f}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    t1 = time.perf_counter()
    results = SPPI(model, tok, granularity="word", template=args.template).attribute(
        test.texts, target=list(test.labels)
    )
    print(
        f"SP-PI on {len(results)} test sentences in {time.perf_counter() - t1:.2f}s "
        "(phi_i = change in p(class) after word i; sum = p_n - p_0)\n"
    )
    for attr, label in zip(results, test.labels, strict=False):
        print(f"[true: {test.label_names[label]}]")
        print(format_table(attr, test.label_names))
        print()


if __name__ == "__main__":
    main()
