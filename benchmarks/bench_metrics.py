"""Benchmark: AS + IAS evaluation costs <= 1.2x the bare forward passes it issues.

Evaluates SP-PI attributions of 32 texts (8-40 words) on a tiny random GPT-2 classifier with
:func:`pi_lightning.metrics.evaluate_faithfulness` (metrics ``as_auc`` and ``ias_auc``), records
the sequences it sends to ``ClassifierAdapter.forward_positions``, and times that bare call on the
same sequences. The ratio (evaluation / bare forward passes, best of interleaved repeats: the
least disturbed run on a shared CPU) is the overhead of ordering, masking, de-duplication and AUC.
It also times the evaluation with the model call replayed from memory, i.e. the overhead alone.
Run: ``python -m benchmarks.bench_metrics`` (writes ``bench_metrics[_<tag>].json`` under ``--out``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from benchmarks._common import add_common_args, load_model, result_stem, run_info, write_json
from pi_lightning.attributors import SPPI
from pi_lightning.metrics import evaluate_faithfulness
from pi_lightning.testing import CORPUS

GOAL = 1.2


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, adapter=None, model="testing:gpt2", threads=1)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    raw = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(raw)
    model, tok, dtype = load_model(args)
    info = run_info(args, dtype, "bench_metrics.py", raw)

    rng = random.Random(0)
    words = " ".join(CORPUS).replace(".", "").split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 40))) for _ in range(args.examples)]
    sppi = SPPI(model, tok, template="Review: {text}\nSentiment:")
    atts = sppi.attribute(texts, target=1)
    adapter, masker = sppi.adapter, sppi.masker

    issued = []
    bare_call = adapter.forward_positions

    def recording(seqs, positions=None):
        issued.append((seqs, positions))
        return bare_call(seqs, positions)

    adapter.forward_positions = recording
    res = evaluate_faithfulness(atts, adapter, masker, metrics=("as_auc", "ias_auc"))  # warm-up + record
    adapter.forward_positions = bare_call
    ((seqs, positions),) = issued

    t_eval, t_bare = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        evaluate_faithfulness(atts, adapter, masker, metrics=("as_auc", "ias_auc"))
        t_eval.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bare_call(seqs, positions)
        t_bare.append(time.perf_counter() - t0)
    e, b = min(t_eval), min(t_bare)

    # The overhead alone: the same evaluation with the model call answered from memory.
    recorded = bare_call(seqs, positions)
    adapter.forward_positions = lambda *_a, **_k: recorded
    t_over = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        evaluate_faithfulness(atts, adapter, masker, metrics=("as_auc", "ias_auc"))
        t_over.append(time.perf_counter() - t0)
    adapter.forward_positions = bare_call
    o = statistics.median(t_over)
    n_feats = sum(a.features.n for a in atts)
    print(
        f"examples={len(atts)} features={n_feats} masked inputs run={res.forward_passes} "
        f"(AS+IAS rows {2 * (n_feats + len(atts))}) tokens={sum(map(len, seqs))} "
        f"max_tokens={adapter.max_tokens} threads={args.threads} repeats={args.repeats}"
    )
    print(
        f"evaluation {e * 1e3:.1f} ms (best), bare forward passes {b * 1e3:.1f} ms (best), "
        f"overhead alone {o * 1e3:.1f} ms (median, model call replayed)"
    )
    print(
        f"ratio evaluation / bare forward = {e / b:.3f} (goal <= {GOAL}): "
        f"{'PASS' if e / b <= GOAL else 'FAIL'}"
    )
    print(f"ratio (bare + overhead alone) / bare = {(b + o) / b:.3f}")
    print(f"mean AS AUC {float(res.as_auc.mean()):.4f}, mean IAS AUC {float(res.ias_auc.mean()):.4f}")
    result = {
        **info,
        "examples": len(atts),
        "features": n_feats,
        "masked_inputs_run": res.forward_passes,
        "evaluation_seconds_best": e,
        "bare_forward_seconds_best": b,
        "overhead_alone_seconds_median": o,
        "ratio": e / b,
        "goal": GOAL,
        "as_auc_mean": float(res.as_auc.mean()),
        "ias_auc_mean": float(res.ias_auc.mean()),
    }
    write_json(result_stem(args, "bench_metrics").with_suffix(".json"), result)
    return result


if __name__ == "__main__":
    main()
