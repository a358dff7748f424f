"""Callbacks under sharded strategies: every rank issues the same number of forward passes in a monitor
evaluation, whatever the probe size (FSDP / DeepSpeed ZeRO-3 deadlock otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pi_lightning.callbacks._distributed import equal_forward_passes


def test_no_process_group_is_a_no_op(gpt2_model):
    with equal_forward_passes(gpt2_model, 0) as counts:
        gpt2_model(input_ids=torch.tensor([[1, 2]]))
    assert counts == {"real": 0, "padded": 0}


@pytest.mark.slow
def test_equal_forward_passes_per_rank(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run(
        [sys.executable, str(Path(__file__).parent / "lockstep_script.py"), str(tmp_path)],
        check=True,
        env=env,
        timeout=400,
        capture_output=True,
    )
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert set(r0["calls"]) == {f"{m}/{n}" for m in ("sp-pi", "mp-pi") for n in (1, 7, 8)}
    assert r0["calls"] == r1["calls"]  # what FSDP needs
    for key in r0["calls"]:
        assert r0["calls"][key] == max(
            r0["real"][key], r1["real"][key]
        )  # padded to the busiest rank, no more
    # without the padding the ranks would have differed (probe size 1: one rank has nothing to explain)
    assert r1["real"]["sp-pi/1"] == 0 and r0["real"]["sp-pi/1"] > 0
    assert r0["real"]["sp-pi/7"] != r1["real"]["sp-pi/7"]


@pytest.mark.slow
def test_fsdp_cpu_uneven_shards(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / "fsdp.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            str(Path(__file__).parent / "fsdp_script.py"),
            str(out),
        ],
        check=True,
        env=env,
        timeout=400,
        capture_output=True,
    )
    r0, r1 = json.loads(out.read_text())
    assert (r0["examples"], r1["examples"]) == (4, 3)
    assert r0["real"] + r0["padded"] == r1["real"] + r1["padded"] and r0["padded"] + r1["padded"] > 0
    assert r0["max_err"] < 1e-6 and r1["max_err"] < 1e-6  # sharded parameters, same attributions
