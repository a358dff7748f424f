"""Fault injection: no probe text, fault or model variant stops training or yields a silent wrong number.

Each test injects one fault (a logger that raises, an unwritable report folder, an attributor that
raises once, NaN weights, an over-long text, out-of-range labels, a crafted checkpoint, a resume
from a checkpoint taken just before a validation, DDP with a validation set not divisible by the
number of processes) and checks that training reaches ``max_steps``, that a warning says what
failed and what was skipped, that the checkpoint and the report are written, and that no NaN
reaches a log or the report.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from pi_lightning.report import write_report_from_checkpoint


class _RunsCode:
    """Unpickling this object would call ``Path.touch(target)`` (a stand-in for a shell command)."""

    def __init__(self, target) -> None:
        self.target = target

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.target),))


def test_report_from_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"callbacks": {"AttributionMonitor{'method': 'sp-pi'}": {"evals": [], "x": _RunsCode(marker)}}},
               ckpt, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(ValueError, match=r"safe loading \(torch.load\(weights_only=True\)\) refuses"):
        write_report_from_checkpoint(ckpt, tmp_path / "r.html")
    assert not marker.exists()
