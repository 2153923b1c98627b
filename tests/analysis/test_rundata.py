"""promoe.analysis.rundata: reading a run folder, with clear errors for missing or broken files (also
``experts/clusters.json`` and ``experts/matrix.json`` of a run with specialised experts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from promoe.analysis.rundata import load_run, task_rows
from promoe.errors import DataError
from tests.analysis.helpers import (
    ALL_ROWS,
    EXPERT_LOSS,
    SYN_TASKS,
    expert_files,
    synthetic_run,
    write_experts,
    write_metrics,
)


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


def test_load_run_reads_specialised_experts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    synthetic_run(run, rows=("promoe",), embeddings=False)
    assert load_run(run).experts is None
    write_experts(run)
    experts = load_run(run).experts
    assert experts.clusters == expert_files()[0] and experts.matrix == expert_files()[1]
    assert experts.column_best() == [0, 1, 0, None] and experts.own_best() == (2, 3)
    (run / "experts" / "matrix.json").unlink()  # a run stopped during the specialisation
    experts = load_run(run).experts
    assert experts.matrix is None and experts.own_best() == (0, 0)


def _bad_matrix(**change: object) -> dict:
    return expert_files()[1] | change


def _loss(e: int, c: int, v: object) -> list[list]:
    loss = [list(r) for r in EXPERT_LOSS]
    loss[e][c] = v
    return loss


@pytest.mark.parametrize(("clusters", "matrix", "match"), [
    (None, _bad_matrix(loss=EXPERT_LOSS[:3]), r"matrix.json', field 'loss': must be 4 experts x 4 clusters"),
    (None, _bad_matrix(loss=[r[:3] for r in EXPERT_LOSS]), r"field 'loss': must be 4 experts x 4 clusters.*"
                                                           r"4 rows of lengths \[3, 3, 3, 3\]"),
    (None, _bad_matrix(loss=_loss(1, 2, "2.4")), r"field 'loss': loss\[1\]\[2\] is '2.4'; every entry must be "
                                                 r"a finite number or null"),
    (None, _bad_matrix(loss=_loss(0, 0, float("nan"))), r"loss\[0\]\[0\] is nan"),
    (None, _bad_matrix(loss=_loss(0, 0, True)), r"loss\[0\]\[0\] is True"),
    (None, _bad_matrix(loss=_loss(2, 3, 1.0)), r"column 3 mixes numbers and null"),
    (None, _bad_matrix(experts="4"), r"field 'experts': must be a positive integer"),
    (None, _bad_matrix(val_examples=[1, 2]), r"field 'val_examples': must be 4 non-negative integers"),
    (None, _bad_matrix(best_on_own=3), r"field 'best_on_own': is 3 but the loss matrix gives 2"),
    (None, _bad_matrix(output_distance=[[0.0, 0.1]] * 4), r"field 'output_distance': must be 4 experts x 4 experts"),
    (None, _bad_matrix(weight_distance=[[0.0, -1.0, 0.0, 0.0]] * 4), r"field 'weight_distance': must be 4 experts"),
    (expert_files()[0] | {"n": 3, "sizes": [3, 3, 2]}, None,
     r"matrix.json', field 'clusters': is 4 but experts/clusters.json has 3 clusters"),
    (expert_files()[0] | {"sizes": [3, 2, 2]}, None, r"clusters.json', field 'sizes': must be 4 non-negative"),
    (expert_files()[0] | {"val": {"val0": 4}}, None, r"clusters.json', field 'val': must map each val task"),
])
def test_load_run_bad_experts_is_a_clear_error(tmp_path: Path, clusters: dict | None, matrix: dict | None,
                                               match: str) -> None:
    run = tmp_path / "run"
    synthetic_run(run, rows=("promoe",), embeddings=False)
    write_experts(run, clusters, matrix)
    with pytest.raises(DataError, match=match) as e:
        load_run(run)
    assert "(fix: " in str(e.value)


def test_test_groups_are_read_from_splits_json(tmp_path: Path) -> None:
    """splits.json's test_groups are the bootstrap's groups; a run from before them has none; a broken map is one
    clear error naming the file and field."""
    run = tmp_path / "run"
    synthetic_run(run, rows=("moe", "promoe"), embeddings=False)
    assert load_run(run).groups is None
    groups = {t: f"rule:r{i % 3}" for i, t in enumerate(SYN_TASKS)}
    (run / "splits.json").write_text(json.dumps({"test": SYN_TASKS, "test_groups": groups}))
    assert load_run(run).groups == groups
    (run / "splits.json").write_text(json.dumps({"test": SYN_TASKS, "test_groups": {SYN_TASKS[0]: 3}}))
    with pytest.raises(DataError, match="test_groups") as e:
        load_run(run)
    assert "splits.json" in str(e.value)
