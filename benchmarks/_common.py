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

import torch

__all__ = [
    "RESULTS",
    "add_common_args",
    "load_model",
    "machine",
    "md_table",
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
    from pi_lightning.data import default_model_dir

    return default_model_dir().parent / "benchmark_adapter"


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
        return str(benchmark_adapter_dir() / "adapter")
    return args.adapter


def add_common_args(p: argparse.ArgumentParser, adapter: str | None = "benchmark") -> None:
    """The model / device / precision / output options every benchmark shares."""
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
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
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--max-tokens", type=int, default=8192, help="token budget per forward batch")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON/CSV/Markdown/PNG results")
    p.add_argument(
        "--tag", default=None, help="suffix of the result file names (default: derived from the run)"
    )


def load_model(args: argparse.Namespace):
    """``(model, tokenizer, dtype_name)`` as the common options ask: on the device, in the dtype, eval mode."""
    from pi_lightning.data import load_classifier

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
            "`pi-lightning finetune` (writes outputs/finetune/adapter) or pass --adapter none."
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


def run_info(args: argparse.Namespace, dtype: str, script: str, argv: list[str]) -> dict:
    """Date, machine and the exact command of a run, stored with its results."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(args.device),
        "device": args.device,
        "dtype": dtype,
        "model": args.model,
        "adapter": args.adapter or None,
        "command": " ".join(["python", f"benchmarks/{script}", *argv]),
    }


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)
    return path


def write_markdown(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def md_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
