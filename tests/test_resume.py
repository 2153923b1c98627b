"""Fault injection: a run killed (SIGKILL) in the middle of training or of evaluation and started again with
the same command ends with exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promoe.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _metric_lines(run: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in run.glob("train/*/metrics.jsonl"))


@pytest.fixture(scope="module")
def reference(tiny_data_root_module: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root_module), "--output-dir", str(out)]) == 0
    return json.loads((out / "smoke/summary.json").read_text())


@pytest.mark.parametrize("stage", ["training", "evaluation"])
def test_killed_run_resumes_to_identical_results(tiny_data_root_module: Path, tmp_path: Path, reference: dict,
                                                 stage: str) -> None:
    tiny_data_root = tiny_data_root_module
    common = ["--preset", "smoke", "--data-root", str(tiny_data_root)]
    # training: a step of the 3 models x 4 steps after a checkpoint; evaluation: once every model is trained
    kill_at = random.Random(os.getpid()).randint(3, 10) if stage == "training" else 12
    run = tmp_path / "b" / "smoke"
    cmd = [sys.executable, str(ROOT / "run_experiment.py"), *common, "--output-dir", str(tmp_path / "b")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _metric_lines(run) < kill_at and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "summary.json").exists(), "the run ended before it was killed"
    again = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed at step" in again.stderr  # from a checkpoint, not from scratch
    assert json.loads((run / "summary.json").read_text()) == reference, f"killed after {kill_at} training steps"
    if stage == "evaluation":  # training was not redone: every model only reloaded its best weights
        assert all(len(p.read_text().splitlines()) == 4 for p in run.glob("train/*/metrics.jsonl"))
