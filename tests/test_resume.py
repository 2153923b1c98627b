"""Fault injection: a run killed (SIGKILL) in the middle of training and started again with the same
command ends with exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from promoe.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _metric_lines(run: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in run.glob("train/*/metrics.jsonl"))


def test_killed_training_resumes_to_identical_results(tiny_data_root: Path, tmp_path: Path) -> None:
    common = ["--preset", "smoke", "--data-root", str(tiny_data_root)]
    assert main(["run", *common, "--output-dir", str(tmp_path / "a")]) == 0
    reference = json.loads((tmp_path / "a/smoke/summary.json").read_text())

    kill_at = random.Random(os.getpid()).randint(3, 10)  # a step of the 3 models x 4 steps, after a checkpoint
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
