"""Fault injection: a run killed (SIGKILL) in the middle of training, of an evaluation pass, of few-shot
fine-tuning or of the analysis, and started again with the same command, continues from what it saved and
ends with exactly the numbers of an uninterrupted run."""

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


OVERRIDES = ["eval.batch_size=1"]  # 3 test tasks, 1 instance each: 3 batches per pass to kill in between
RESULTS = ("summary.json", "significance.json")  # every number of the run


def _metric_lines(run: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in run.glob("train/*/metrics.jsonl"))


def _units_done(progress: Path) -> int:
    try:
        return min(r["done"] for r in json.loads(progress.read_text())["rows"].values())
    except (FileNotFoundError, json.JSONDecodeError, ValueError):
        return 0


def _results(run: Path) -> dict:
    return {name: json.loads((run / name).read_text()) for name in RESULTS}


@pytest.fixture(scope="module")
def reference(tiny_data_root_module: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root_module), "--output-dir", str(out),
                 *OVERRIDES]) == 0
    return _results(out / "smoke")


# when to kill, and what the re-run's log must show
STAGES = {
    # a step of the 3 models x 4 steps, after a checkpoint: it resumes from the checkpoint
    "training": (lambda run, k: _metric_lines(run) >= k, (3, 10), "resumed at step"),
    # the zero-shot pass (3 batches of every row) after a batch or two
    "evaluation": (lambda run, k: _units_done(run / "progress/eval.json") >= k, (1, 2), "resumed at"),
    # few-shot fine-tuning (3 test tasks) after a task or two
    "few-shot": (lambda run, k: _units_done(run / "progress/fewshot.json") >= k, (1, 2), "resumed at"),
    # the analysis: summary.json is written, REPORT.md not yet
    "analysis": (lambda run, k: (run / "summary.json").exists(), (0, 0), "already evaluated, kept"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_run_resumes_to_identical_results(tiny_data_root_module: Path, tmp_path: Path, reference: dict,
                                                 stage: str) -> None:
    reached, (lo, hi), resumed = STAGES[stage]
    kill_at = random.Random(os.getpid()).randint(lo, hi)
    run = tmp_path / "b" / "smoke"
    cmd = [sys.executable, str(ROOT / "run_experiment.py"), "--preset", "smoke", "--data-root",
           str(tiny_data_root_module), "--output-dir", str(tmp_path / "b"), *OVERRIDES]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not reached(run, kill_at) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "REPORT.md").exists(), "the run ended before it was killed"
    again = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert resumed in again.stderr, again.stderr[-2000:]  # from what was saved, not from scratch
    assert _results(run) == reference, f"killed in {stage} at {kill_at}"
    assert not list(run.glob("progress/*.json"))  # progress files go once their rows are written
    if stage != "training":  # training was not redone: every model only reloaded its best weights
        assert all(len(p.read_text().splitlines()) == 4 for p in run.glob("train/*/metrics.jsonl"))
