"""Benchmark: AT2's fit time and attribution cost, and its AS/IAS AUC beside SP-PI's (and MP-PI's).

AT2 is fitted on ``--fit`` Rotten Tomatoes training sentences from its own random ablations
(``--masks`` per sentence, keep probability 0.5) and then attributes ``--probe`` test sentences
(explained class = the true label, as in the paper). Printed, all from this one run:

* fit: seconds and forward passes;
* attribution cost: AT2's seconds on the probe set divided by the bare forward passes over the
  same inputs (best of ``--repeats``), i.e. the price of recording and combining the attention rows;
* AS AUC (higher is better) and IAS AUC (lower is better), mean and 95% half-width, for AT2,
  SP-PI and, when ``mp-pi`` is registered, MP-PI and AT2 refitted from MP-PI's own masked passes
  (:meth:`AT2.fit_and_attribute`, the callbacks' refit mode).

Run::

    python -m benchmarks.bench_at2                    # tiny random GPT-2 on CPU (code path, seconds)
    python -m benchmarks.bench_at2 --model smollm2-135m-instruct --adapter benchmark --probe 50 --fit 200

``--model`` takes ``testing:gpt2`` (default, tiny random), ``smollm2-135m-instruct`` (the embedded
default; ``--adapter benchmark`` for the cached benchmark model) or any folder / hub id that
:func:`pi_lightning.models.load_classifier` loads; only a fine-tuned classifier gives meaningful AUCs.
Writes ``bench_at2[_<tag>].json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks._common import (
    add_common_args,
    load_model,
    resolve_template,
    result_stem,
    run_info,
    write_json,
)
from pi_lightning.attributors import AT2, available_methods, get_attributor
from pi_lightning.data import load_movie_reviews
from pi_lightning.metrics import evaluate_faithfulness


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, adapter=None, model="testing:gpt2", threads=1)
    parser.add_argument("--fit", type=int, default=32, help="training sentences for AT2")
    parser.add_argument("--probe", type=int, default=16, help="test sentences to attribute and evaluate")
    parser.add_argument("--masks", type=int, default=32, help="AT2 ablations per training sentence")
    parser.add_argument("--repeats", type=int, default=3)
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(raw)
    model, tok, dtype = load_model(args)
    info = run_info(args, dtype, "bench_at2.py", raw)
    template = resolve_template(args)
    train = load_movie_reviews("rotten_tomatoes", "train").subset(args.fit)
    probe = load_movie_reviews("rotten_tomatoes", "test").subset(args.probe)
    common = {"granularity": "word", "template": template, "max_tokens": args.max_tokens}
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    print(
        f"model {args.model} ({L} layers x {H} heads, {model.config._attn_implementation}), device "
        f"{args.device}, "
        f"fit {len(train)} x {args.masks} ablations, probe {len(probe)}"
    )

    at2 = AT2(model, tok, budget=args.masks, **common)
    _, fit_s = _timed(lambda: at2.fit(list(train.texts), target=list(train.labels)))
    print(
        f"AT2 fit (own ablations): {fit_s:.2f} s, {at2.fit_info['forward_passes']} forward passes, "
        f"{at2.fit_info['examples']} examples used, training correlation {at2.fit_info['correlation']:.3f}"
    )

    feats = at2.featurize(list(probe.texts))
    seqs = [list(f.input_ids) for f in feats]
    labels = list(probe.labels)
    bare, t_at2 = [], []
    for _ in range(args.repeats):  # interleaved, best of: the least disturbed run
        bare.append(_timed(lambda: at2.adapter.final_logits(seqs))[1])
        results_at2, t = _timed(lambda: at2.attribute(feats, target=labels))
        t_at2.append(t)
    print(
        f"AT2 attribution: {min(t_at2) * 1e3 / len(feats):.2f} ms/example; bare forward "
        f"{min(bare) * 1e3 / len(feats):.2f} ms/example; ratio {min(t_at2) / min(bare):.2f}x (cost "
        f"'{AT2.cost}')"
    )

    rows = {"at2 (own ablations)": results_at2}
    sppi = get_attributor("sp-pi", model, tok, **common)
    rows["sp-pi"], t = _timed(lambda: sppi.attribute(feats, target=labels))
    if "mp-pi" in available_methods():
        mppi = get_attributor("mp-pi", model, tok, **common)
        rows["mp-pi"], t_mppi = _timed(lambda: mppi.attribute(feats, target=labels))
        refit = AT2(model, tok, **common)
        rows["at2 (refit from mp-pi)"], t_refit = _timed(lambda: refit.fit_and_attribute(rows["mp-pi"]))
        print(
            f"MP-PI: {t_mppi:.2f} s; AT2 refit from its results + attribution: {t_refit:.2f} s "
            f"({refit.fit_info['forward_passes']} forward passes, training correlation "
            f"{refit.fit_info['correlation']:.3f})"
        )
    else:
        print("MP-PI is not registered in this tree: its rows are skipped.")

    print(f"{'method':<24} {'AS AUC':>16} {'IAS AUC':>16}")
    summaries = {}
    for name, atts in rows.items():
        s = evaluate_faithfulness(atts, at2.adapter, at2.masker, metrics=("as_auc", "ias_auc")).summary()
        summaries[name] = s
        print(
            f"{name:<24} {s['as_auc']:>9.3f} ± {s['as_auc_ci']:.3f} {s['ias_auc']:>9.3f} ± "
            f"{s['ias_auc_ci']:.3f}"
        )
    result = {
        **info,
        "template": template,
        "fit_seconds": fit_s,
        "fit_info": {k: v for k, v in at2.fit_info.items() if isinstance(v, (int, float, str))},
        "attribution_ms_per_example": min(t_at2) * 1e3 / len(feats),
        "bare_forward_ms_per_example": min(bare) * 1e3 / len(feats),
        "rows": summaries,
    }
    write_json(result_stem(args, "bench_at2").with_suffix(".json"), result)
    return result


if __name__ == "__main__":
    main()
