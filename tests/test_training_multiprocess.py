"""Training with more than one process (issue 15.6): two CPU ranks over gloo, launched by torchrun
(what `accelerate launch --multi_gpu` runs on GPUs), each rank on its own half of every batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "helpers" / "multiprocess_train.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, steps: int, stop_at: int | None = None, procs: int = 2) -> list[str]:
    args = [str(out), str(steps)] + ([str(stop_at)] if stop_at is not None else [])
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), str(SCRIPT)] if procs > 1 else [sys.executable, str(SCRIPT)]) + args
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return [line for line in p.stdout.splitlines() if line.startswith("RANK")]


def _log(out: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["tokens"], r["lr_llm"]) for r in map(json.loads, open(out / "log.jsonl"))]


def _weights(out: Path) -> dict:
    art = out / "artifact"
    return {**load_file(str(art / "predictor.safetensors")), **load_file(str(art / "llm" / "adapter_model.safetensors"))}


@pytest.mark.slow
def test_two_ranks_match_one_process_and_resume_exactly(tmp_path):
    ranks = _run(tmp_path / "ddp", 4)
    assert sorted(ranks) == ["RANK 0 OF 2 STEPS 4", "RANK 1 OF 2 STEPS 4"]  # two processes really trained
    _run(tmp_path / "single", 4, procs=1)
    _run(tmp_path / "resumed", 4, stop_at=2)  # interrupted after 2 steps ...
    _run(tmp_path / "resumed", 4)  # ... and continued from its checkpoint
    single, ddp, resumed = (_log(tmp_path / n) for n in ("single", "ddp", "resumed"))
    # the same global batch: the same loss, token count and LR schedule at every step
    for a, b in zip(single, ddp):
        assert a[0] == b[0] and a[2] == b[2] and a[3] == pytest.approx(b[3]) and a[1] == pytest.approx(b[1], rel=1e-4)
    assert ddp == resumed
    w1, w2, w3 = (_weights(tmp_path / n) for n in ("single", "ddp", "resumed"))
    for k in w1:  # stored in bf16: equal up to its rounding
        assert (w1[k].float() - w2[k].float()).abs().max() <= 1e-2 * max(1.0, w1[k].float().abs().max().item()), k
        assert (w2[k].float() == w3[k].float()).all(), k
