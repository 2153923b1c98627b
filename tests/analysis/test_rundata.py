"""promoe.analysis.rundata: reading a run folder, with clear errors for missing or broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from promoe.analysis.rundata import load_run, task_rows
from tests.analysis.helpers import ALL_ROWS, SYN_TASKS, synthetic_run, write_metrics


def test_load_run_reads_rows_in_report_order(tmp_path: Path) -> None:
    run = tmp_path / "run"
    synthetic_run(run)
    write_metrics(run / "train" / "promoe" / "metrics.jsonl")
    data = load_run(run)
    assert list(data.scores) == list(ALL_ROWS)  # not the files' alphabetical order
    assert list(data.routing) == [m for m in ALL_ROWS if m in data.routing]
    assert data.test_tasks == set(SYN_TASKS) and len(data.curves["promoe"]) == 22
    assert data.task_categories()["task999_train"] == "title_generation"  # from task_embeddings.npz only
    assert task_rows(data.scores["promoe"], {"task000_syn", "elsewhere"}).keys() == {"task000_syn"}


def test_load_run_without_scores_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scores"):
        load_run(tmp_path)


def test_load_run_bad_task_embeddings_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    synthetic_run(run, rows=("promoe",), embeddings=False)
    np.savez(run / "task_embeddings.npz", task_names=np.array(["a", "b"]), embeddings=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="task_embeddings.npz.*do not match"):
        load_run(run)
