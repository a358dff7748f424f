"""Shared plumbing of the benchmark scripts: arguments, model loading, machine line, result files.

Every benchmark takes the same ``--model``, ``--adapter``, ``--device`` and ``--dtype`` options so that
one command runs on the CPU (float32) or on a GPU (``--device cuda --dtype bf16``), and writes its
figures as JSON plus a Markdown table under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "RESULTS",
    "adapter_template",
    "add_common_args",
    "add_output_args",
    "benchmark_adapter_dir",
    "coalition_game",
    "ensure_benchmark_adapter",
    "load_average",
    "load_model",
    "machine",
    "md_table",
    "resolve_template",
    "result_stem",
    "run_info",
    "write_json",
    "write_markdown",
]

RESULTS = Path(__file__).resolve().parent / "results"
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def benchmark_adapter_dir() -> Path:
    """The cache folder of the benchmark model's LoRA adapter (``adapter/`` + the ``config.yaml`` it was
    trained with), beside the converted default model under the package's cache root."""
    from pi_lightning.models import default_model_dir

    return default_model_dir().parent / "benchmark_adapter"


def ensure_benchmark_adapter(finetune_args: tuple[str, ...] = ()) -> Path:
    """The cached benchmark adapter folder; trained once if absent, reused by every later run.

    The benchmark model is the package's default main job (``pi-lightning finetune``: SmolLM2-135M,
    150 LoRA steps on Rotten Tomatoes, template ``"Review: {text}"``, label-word head; test accuracy
    0.819 +- 0.026 on 854 sentences, see benchmarks/results/RESULTS.md). When the cache holds no
    adapter, it is trained here through that job (``pi_lightning.cli.finetune.run``, the default
    config plus ``finetune_args``) into a temporary folder that is renamed into place when complete,
    so an interrupted training leaves no half-written cache.
    """
    folder = benchmark_adapter_dir()
    adapter = folder / "adapter"
    if (adapter / "adapter_config.json").is_file():
        return adapter
    import shutil
    import warnings

    from pi_lightning.cli.finetune import run

    warnings.warn(
        f"No benchmark adapter cached at {adapter}: training it once with `pi-lightning finetune` "
        "(the default config; minutes on a CPU). Later runs reuse it.",
        UserWarning,
        stacklevel=2,
    )
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    run(
        [
            *finetune_args,
            "--model.save_dir",
            str(work / "adapter"),
            "--trainer.default_root_dir",
            str(work),
            "--trainer.logger.init_args.save_dir",
            str(work),
        ]
    )
    if not (work / "adapter" / "adapter_config.json").is_file():
        raise RuntimeError(
            f"`pi-lightning finetune` finished but wrote no adapter to {work / 'adapter'}; "
            "check its output above, or pass --adapter with an adapter folder of your own."
        )
    if not (work / "config.yaml").is_file():  # the job's config is where its logger put it
        found = sorted(work.rglob("config.yaml"))
        if found:
            shutil.copy(found[0], work / "config.yaml")
    shutil.rmtree(folder, ignore_errors=True)
    work.rename(folder)
    return adapter


def adapter_template(adapter: str | None) -> str | None:
    """The prompt template an adapter was fine-tuned with, read from the ``config.yaml`` that
    ``pi-lightning finetune`` writes beside its adapter folder (``None`` when there is none)."""
    if not adapter:
        return None
    config = Path(adapter).parent / "config.yaml"
    if not config.is_file():
        return None
    import yaml

    with open(config) as fh:
        cfg = yaml.safe_load(fh) or {}
    return (cfg.get("data") or {}).get("template")


def resolve_template(args: argparse.Namespace) -> str:
    """``--template`` if given, else the adapter's training template, else ``"{text}"``."""
    if args.template:
        return args.template
    return adapter_template(_adapter_path(args)) or "{text}"


def _adapter_path(args: argparse.Namespace) -> str | None:
    if not args.adapter or args.adapter.lower() == "none":
        return None
    if args.adapter == "benchmark":
        return str(ensure_benchmark_adapter())
    return args.adapter


def add_common_args(
    p: argparse.ArgumentParser,
    adapter: str | None = "benchmark",
    model: str = "smollm2-135m-instruct",
    threads: int | None = None,
) -> None:
    """The model / device / precision / output options every benchmark shares (the defaults of
    ``--adapter``, ``--model`` and ``--threads`` are the script's: code-path benchmarks default to the
    tiny random ``testing:gpt2`` and no adapter)."""
    p.add_argument(
        "--model",
        default=model,
        help="smollm2-135m-instruct (embedded), testing:gpt2, a local folder or hub id",
    )
    p.add_argument(
        "--adapter",
        default=adapter,
        help="'benchmark' (the cached benchmark model), a LoRA adapter folder written by "
        "`pi-lightning finetune`, or 'none'",
    )
    p.add_argument(
        "--template",
        default=None,
        help="prompt template (default: the one the adapter was trained with, from its config.yaml)",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--dtype",
        "--precision",
        dest="dtype",
        default=None,
        help="fp32 | bf16 | fp16 (default: fp32 on cpu, bf16 on cuda)",
    )
    p.add_argument("--max-tokens", type=int, default=8192, help="token budget per forward batch")
    add_output_args(p, threads)


def add_output_args(p: argparse.ArgumentParser, threads: int | None = None) -> None:
    """``--threads``, ``--out`` and ``--tag``: the options of every benchmark, including those that
    build their own models (part of :func:`add_common_args`)."""
    p.add_argument(
        "--threads", type=int, default=threads, help=f"torch CPU threads (default: {threads or 'torch'})"
    )
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON/CSV/Markdown/PNG results")
    p.add_argument(
        "--tag", default=None, help="suffix of the result file names (default: derived from the run)"
    )


def load_model(args: argparse.Namespace):
    """``(model, tokenizer, dtype_name)`` as the common options ask: on the device, in the dtype, in
    eval mode (``--threads`` applied first)."""
    from pi_lightning.models import load_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was given but torch sees no CUDA device; run with --device cpu.")
    name = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if name not in _DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(_DTYPES)}, got {name!r}.")
    adapter = _adapter_path(args)
    if adapter is not None and not Path(adapter, "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"No LoRA adapter at {adapter!r} (adapter_config.json missing). Produce it with "
            "`pi-lightning finetune` (writes outputs/finetune/adapter), or pass --adapter benchmark "
            "(the cached benchmark model) or --adapter none."
        )
    model, tok = load_classifier(args.model, adapter=adapter)
    model = model.to(device=args.device, dtype=_DTYPES[name]).eval()
    return model, tok, name


def machine(device: str) -> str:
    """One line naming the machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    line = f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device == "cuda" and torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name()}"
    return line


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (what ``uptime`` prints): how shared the machine was."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return [round(x, 2) for x in load]


def run_info(args: argparse.Namespace, dtype: str | None, script: str, argv: list[str]) -> dict:
    """Date, machine, load and the exact command of a run, stored with its results (scripts without
    the model options, :func:`add_output_args` only, record no model)."""
    device = getattr(args, "device", "cpu")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(device),
        "load_average_at_start": load_average(),
        "device": device,
        "dtype": dtype,
        "model": getattr(args, "model", None),
        "adapter": _adapter_path(args) if hasattr(args, "adapter") else None,
        "command": " ".join(["python", "-m", f"benchmarks.{script.removesuffix('.py')}", *argv]),
    }


def result_stem(args: argparse.Namespace, name: str) -> Path:
    """``<--out>/<name>[_<--tag>]``: where a benchmark writes its result files."""
    return Path(args.out) / (f"{name}_{args.tag}" if args.tag else name)


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)
    return path


def write_markdown(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cosine(a, b) -> float:
    """Cosine similarity of two vectors, clipped to [-1, 1] (nan when either is zero).

    For parallel vectors the rounded quotient lands on either side of 1 by about 1e-16, depending on
    the BLAS kernel the CPU selects: a reported cosine never exceeds 1.

    >>> cosine([3.0, 4.0], [6.0, 8.0]), cosine([1.0, 0.0], [0.0, 3.0])
    (1.0, 0.0)
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0)) if na > 0 and nb > 0 else float("nan")


def paired_wilcoxon(a, b, equal: float = float("nan")) -> float:
    """Two-sided paired Wilcoxon p-value (scipy) of two per-example series (arrays or CPU tensors).

    A method run on a subset ran on the first examples, so the series are paired on their first
    ``min(len(a), len(b))`` entries. Fewer than 2 pairs gives NaN; pairs that are all equal give
    ``equal`` (NaN by default: no test is possible).
    """
    from scipy.stats import wilcoxon

    k = min(len(a), len(b))
    x, y = np.asarray(a, dtype=np.float64)[:k], np.asarray(b, dtype=np.float64)[:k]
    if k < 2:
        return float("nan")
    if np.allclose(x - y, 0):
        return equal
    return float(wilcoxon(x, y).pvalue)


def md_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def coalition_game(adapter, masker, features, target: int, output: str = "prob", prefix: bool = False):
    """The model as a function of coalitions (the value function every Shapley benchmark scores).

    Returns ``f(z)``: ``z`` is a ``(K, n)`` array or tensor of coalitions (1/True = feature present,
    any float > 0.5 counts as present, as Captum and shap pass them); each row is masked with
    ``masker`` and run once through ``adapter``, and ``f`` returns the float64 ``(K,)`` ``output``
    ("prob", "logits" or "log_odds") of class ``target`` at the masked input's last token (the
    full-input game, what Kernel SHAP, Captum and shap estimate). With ``prefix=True`` it returns
    ``(K, 2)``: column 0 read at the end of the coalition's last active feature (PI's prefix game;
    the empty coalition at the end of the fixed context when there is one, else at the last token of
    the fully masked text), column 1 the full-input game.
    """
    from pi_lightning.inference import transform_outputs

    def f(z):
        z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
        # (K, n) float or bool -> (K, n) bool coalitions.
        Z = z.reshape(-1, features.n) > 0.5
        seqs, ends = masker(features, Z)
        if not prefix:
            return transform_outputs(adapter.final_logits(seqs), output)[:, target]
        n = features.n
        last = np.where(Z.any(1), n - 1 - np.argmax(Z[:, ::-1], axis=1), n - 1)
        positions = [[int(ends[r, last[r]]), len(s) - 1] for r, s in enumerate(seqs)]
        if features.context_end > 0:  # with a fixed context, f(empty) is read at its last token
            for r in np.flatnonzero(~Z.any(1)):
                positions[r][0] = features.context_end - 1
        logits = adapter.forward_positions(seqs, positions)
        # K x (2, C) -> (K, 2, C) -> the target's output at the two positions.
        return transform_outputs(torch.stack(logits), output)[..., target]

    return f
