"""Fault injection: a run killed (SIGKILL) in the middle of training, of an evaluation pass, of few-shot
fine-tuning or of the analysis, and started again with the same command, continues from what it saved and
ends with exactly the numbers of an uninterrupted run.

Cross-cutting (every stage's resume in one whole run), so at the top level of tests/; the helpers of
promoe.benchmarks.resume_check have their own tests in tests/benchmarks/test_resume_check.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from promoe.benchmarks.resume_check import differences, run_until
from promoe.cli import main

ROOT = Path(__file__).resolve().parents[1]


OVERRIDES = ["eval.batch_size=1"]  # 3 test tasks, 1 instance each: 3 batches per pass to kill in between


@pytest.fixture(scope="module")
def reference(tiny_data_root_module: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root_module), "--output-dir", str(out),
                 *OVERRIDES]) == 0
    return out / "smoke"


# where to kill (a random point in a range: see src/promoe/benchmarks/resume_check.py), what the re-run's log must show
STAGES = {
    # a step of the 3 models x 4 steps, after a checkpoint: it resumes from the checkpoint
    "training": ("train:{}", (3, 10), "resumed at step"),
    # the zero-shot pass (3 batches of every row) after a batch or two
    "evaluation": ("eval:{}", (1, 2), "resumed at"),
    # few-shot fine-tuning (3 test tasks) after a task or two
    "few-shot": ("fewshot:{}", (1, 2), "resumed at"),
    # the analysis: summary.json is written, REPORT.md not yet
    "analysis": ("analysis", (0, 0), "already evaluated, kept"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_run_resumes_to_identical_results(tiny_data_root_module: Path, tmp_path: Path, reference: Path,
                                                 stage: str) -> None:
    point, (lo, hi), resumed = STAGES[stage]
    point = point.format(random.Random(os.getpid()).randint(lo, hi))
    run = tmp_path / "b" / "smoke"
    cmd = [sys.executable, str(ROOT / "run_experiment.py"), "--preset", "smoke", "--data-root",
           str(tiny_data_root_module), "--output-dir", str(tmp_path / "b"), *OVERRIDES]
    killed, _ = run_until(cmd, run, point, timeout=300)
    assert killed, f"the run ended before {point}"
    again = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert resumed in again.stderr, again.stderr[-2000:]  # from what was saved, not from scratch
    assert json.loads((run / "summary.json").read_text()).keys() == json.loads((reference / "summary.json").read_text()).keys()
    assert differences(run, reference) == [], f"killed at {point}"
    assert not list(run.glob("progress/*.json"))  # progress files go once their rows are written
    if stage != "training":  # training was not redone: every model only reloaded its best weights
        assert all(len(p.read_text().splitlines()) == 4 for p in run.glob("train/*/metrics.jsonl"))
