"""The short help of ``pi-lightning finetune``: the options a user changes, with the values the job runs.

LightningCLI's own help lists every argument of the Trainer, the model and the data module (about
600 lines) with each *class's* defaults (``template {text}``, ``max_length 128``), while the job runs
the package's ``configs/default.yaml`` (``Review: {text}``, 48), and it needs Lightning imported
(about 10 s on a small CPU). This help is read from the job's configs (``default.yaml``, with
``--fast`` also ``fast.yaml``, then any ``--config`` the user gives) and from the classes' docstrings
and signatures parsed with :mod:`ast`, without importing them: nothing here is copied by hand, and
nothing slow is imported. ``--help-all`` shows LightningCLI's full list.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import textwrap
from functools import cache
from importlib.resources import files
from pathlib import Path

__all__ = [
    "DESCRIPTION",
    "FAST_HELP",
    "OPTIONS",
    "config_file",
    "finetune_help",
    "job_config",
    "schedule_lines",
]

DESCRIPTION = (
    "Fine-tune a decoder-only transformer classifier (LoRA or full) with the pi_lightning callbacks: "
    "explanations of a held-out probe set before the first step (the baseline) and while it trains, the "
    "paired change of each example's faithfulness since the baseline with a verdict per method, free "
    "SP-PI over the validation set, faithfulness metrics (AS/IAS AUC, log-odds, comprehensiveness, "
    "sufficiency) logged to W&B (offline unless WANDB_MODE=online), an HTML report and a one-screen "
    "summary. Defaults: SmolLM2-135M-Instruct on Rotten Tomatoes, about 5 minutes on 2 idle CPU cores."
)
FAST_HELP = (
    "run the same job end to end on a tiny random model and a few examples, in seconds "
    "(adds the package's configs/fast.yaml; writes to outputs/fast)"
)


def config_file(name: str) -> Path:
    """Path of a YAML config shipped with the package (``"default"`` or ``"fast"``).

    Example:
        >>> config_file("fast").name
        'fast.yaml'
    """
    return Path(str(files("pi_lightning.cli") / "configs" / f"{name}.yaml"))


#: The options of the short help, in order: (section, name, module file, class). The module file is
#: relative to the package's root, or ``lightning:...`` for Lightning's.
OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("model", "model_name", "training.py", "FinetuneClassifier"),
    ("model", "finetune", "training.py", "FinetuneClassifier"),
    ("model", "lora_last_layers", "training.py", "FinetuneClassifier"),
    ("model", "lr", "training.py", "FinetuneClassifier"),
    ("model", "save_dir", "training.py", "FinetuneClassifier"),
    ("data", "dataset", "training.py", "ReviewDataModule"),
    ("data", "text_column", "training.py", "ReviewDataModule"),
    ("data", "label_column", "training.py", "ReviewDataModule"),
    ("data", "label_names", "training.py", "ReviewDataModule"),
    ("data", "template", "training.py", "ReviewDataModule"),
    ("data", "max_length", "training.py", "ReviewDataModule"),
    ("data", "n_train", "training.py", "ReviewDataModule"),
    ("data", "n_val", "training.py", "ReviewDataModule"),
    ("data", "n_probe", "training.py", "ReviewDataModule"),
    ("data", "batch_size", "training.py", "ReviewDataModule"),
    ("trainer", "max_steps", "lightning:pytorch/trainer/trainer.py", "Trainer"),
    ("trainer", "val_check_interval", "lightning:pytorch/trainer/trainer.py", "Trainer"),
    ("trainer", "accelerator", "lightning:pytorch/trainer/trainer.py", "Trainer"),
    ("trainer", "precision", "lightning:pytorch/trainer/trainer.py", "Trainer"),
)


def _source(module_file: str) -> Path:
    if module_file.startswith("lightning:"):
        spec = importlib.util.find_spec("lightning")
        return Path(spec.origin).parent / module_file.split(":", 1)[1]
    return Path(__file__).resolve().parents[1] / module_file


@cache
def _init(module_file: str, class_name: str) -> tuple[dict[str, str], dict[str, object]]:
    """``(help, defaults)`` of a class's constructor arguments, from its source: the ``Args:`` entries
    of the class's or ``__init__``'s docstring (``a, b: text`` gives both), and the literal defaults
    of ``__init__``'s signature."""
    tree = ast.parse(_source(module_file).read_text(encoding="utf-8"))
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    helps: dict[str, str] = {}
    for doc in (ast.get_docstring(init), ast.get_docstring(cls)):
        for names, text in _args_section(doc or "").items():
            for name in names:
                helps.setdefault(name, text)
    a = init.args
    defaults: dict[str, object] = {}
    pos = a.posonlyargs + a.args
    with_defaults = pos[len(pos) - len(a.defaults) :]
    pairs = [*zip(with_defaults, a.defaults, strict=True), *zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    for arg, d in pairs:
        if d is not None:
            with contextlib.suppress(ValueError):  # a non-literal default (a call): not shown
                defaults[arg.arg] = ast.literal_eval(d)
    return helps, defaults


def _args_section(doc: str) -> dict[tuple[str, ...], str]:
    """The entries of a (cleaned) Google-style docstring's ``Args:`` section, text joined."""
    out: dict[tuple[str, ...], str] = {}
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    indent, key = None, None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        ind = len(line) - len(line.lstrip())
        if indent is None:
            indent = ind
        if ind < indent:
            break
        head, sep, rest = line.strip().partition(": ")
        if ind == indent and sep and all(p.strip().isidentifier() for p in head.split(",")):
            key = tuple(p.strip() for p in head.split(","))
            out[key] = rest.strip()
        elif key is not None and ind > indent:
            out[key] += " " + line.strip()
    return out


def _first_sentence(text: str) -> str:
    """The help's first sentence (Lightning's entries go on about their class defaults), as plain
    text (reST roles and literals unwrapped)."""
    import re

    text = re.sub(r":\w+:`~?(?:[\w.]*\.)?([^`]+)`", r"\1", text).replace("``", "")
    for end in (". ", ".\n"):
        if end in text:
            return text.split(end, 1)[0] + "."
    return text


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def job_config(argv: list[str]) -> dict:
    """The configuration the job runs before its command-line overrides: ``default.yaml``, with
    ``--fast`` also ``fast.yaml``, then each ``--config`` / ``-c`` file of ``argv``, merged in order."""
    import yaml

    paths = [config_file("default")] + ([config_file("fast")] if "--fast" in argv else [])
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            paths.append(Path(arg.split("=", 1)[1]))
    cfg: dict = {}
    for f in paths:
        cfg = _merge(cfg, yaml.safe_load(Path(f).read_text(encoding="utf-8")) or {})
    return cfg


def _fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value) if value.strip() != value or not value else value
    return str(value)


def schedule_lines(cfg: dict) -> list[str]:
    """What the job explains and when, one line per callback of ``cfg`` that explains, from the
    callbacks' ``init_args`` and their classes' own defaults for what the config leaves out."""
    trainer = cfg.get("trainer", {})
    max_steps, every = trainer.get("max_steps"), trainer.get("val_check_interval")
    n_probe = cfg.get("data", {}).get("n_probe")
    lines = []
    if every:
        lines.append(f"training: {max_steps} steps, a validation every {every} steps")
    for cb in trainer.get("callbacks") or []:
        path = cb.get("class_path", "") if isinstance(cb, dict) else str(cb)
        args = cb.get("init_args", {}) if isinstance(cb, dict) else {}
        name = path.rsplit(".", 1)[-1]
        if name == "AttributionMonitor":
            _, d = _init("callbacks/attribution_monitor.py", "AttributionMonitor")
            get = {**d, **args}.get
            when = ["baseline (step 0)"] if get("baseline") else []
            if get("at_steps"):
                when.append("after steps " + ", ".join(str(s) for s in get("at_steps")))
            if get("at_fractions"):
                fr = ", ".join(f"{f:g}" for f in get("at_fractions"))
                when.append(f"at fractions {fr} of max_steps ({max_steps})")
            if get("every_n_val"):
                n = get("every_n_val")
                when.append("at every validation" if n == 1 else f"at every {n}th validation")
            if get("every_n_steps"):
                when.append(f"every {get('every_n_steps')} steps")
            if get("at_end"):
                when.append("at the end")
            probe = (
                min(p for p in (get("probe_size"), n_probe) if p) if get("probe_size") or n_probe else "all"
            )
            kw = ", ".join(f"{k}={_fmt(v)}" for k, v in (get("method_kwargs") or {}).items())
            lines.append(
                f"{get('method')} on {probe} probe examples ({kw or 'method defaults'}): "
                + ("; ".join(when) or "never")
            )
        elif name == "ValidationSPPI":
            lines.append("SP-PI over the validation set at every validation (from its forward pass)")
        elif name == "HTMLReport":
            lines.append("HTML report and its state (pi-lightning report <folder>) at the end")
    return lines


def finetune_help(argv: list[str], description: str = DESCRIPTION, fast_help: str = FAST_HELP) -> str:
    """The short help of ``pi-lightning finetune`` for ``argv`` (its ``--fast`` and ``--config``)."""
    cfg = job_config(argv)
    width = 100
    out = [
        "usage: pi-lightning finetune [--fast] [--config FILE] [--SECTION.OPTION VALUE ...]",
        "",
        textwrap.fill(description, width),
        "",
        "What the job runs" + (" (with --fast)" if "--fast" in argv else "") + ", from its config:",
    ]
    for line in schedule_lines(cfg):
        out.append(textwrap.fill(line, width, initial_indent="  ", subsequent_indent="    "))
    out += ["", "Options (value: what the job runs):"]
    for section, name, module_file, cls in OPTIONS:
        helps, defaults = _init(module_file, cls)
        value = cfg.get(section, {}).get(name, defaults.get(name))
        out.append(f"  --{section}.{name} {_fmt(value)}")
        text = _first_sentence(" ".join(helps.get(name, "").split()))
        if text:
            out.append(textwrap.fill(text, width, initial_indent="      ", subsequent_indent="      "))
    out += [
        "  --fast",
        textwrap.fill(fast_help, width, initial_indent="      ", subsequent_indent="      "),
        "  --config FILE",
        "      a YAML file of options (merged over the job's config; repeatable).",
        "",
        "Every other option of the Trainer, the model and the data (and the callbacks) is listed by",
        "'pi-lightning finetune --help-all' (LightningCLI's full help: class defaults, before the job's",
        "config). Print the job's whole config with 'pi-lightning finetune --print_config'.",
    ]
    return "\n".join(out)
