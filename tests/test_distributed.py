"""Data-parallel training (2 CPU processes, gloo) matches 1-process training with the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "dp_train.py"


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not available")
def test_two_process_training_matches_one_process(tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    _run([sys.executable, str(SCRIPT), str(tmp_path / "one")], tmp_path)
    _run([torchrun, "--standalone", "--nproc-per-node", "2", str(SCRIPT), str(tmp_path / "two")], tmp_path)
    one, two = load_file(str(tmp_path / "one/final.safetensors")), load_file(str(tmp_path / "two/final.safetensors"))
    assert one.keys() == two.keys() and any("hyper" in k for k in one)
    init = load_file(str(tmp_path / "one/init.safetensors"))
    assert all(not torch.equal(init[k], one[k]) for k in one if "hyper" in k or "router" in k)  # it trained
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=2e-5, rtol=1e-4, msg=k)
    m1 = (tmp_path / "one/train/metrics.jsonl").read_text().splitlines()
    m2 = (tmp_path / "two/train/metrics.jsonl").read_text().splitlines()
    assert len(m1) == len(m2) == 4
