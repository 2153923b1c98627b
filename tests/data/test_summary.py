"""promoe.data.summary: counts and reasons of a split, and of empty splits."""

from __future__ import annotations

from pathlib import Path

from promoe.data.protocol import build_test_tasks, carve_validation
from promoe.data.splits import TaskSplits
from promoe.data.summary import summarize
from tests.data.helpers import _meta_export, _select


def test_summary_reports_counts_and_reasons(tmp_path: Path) -> None:
    pool, decisions = _select()
    train, val = carve_validation(pool, 2, seed=0)
    test = build_test_tasks(_meta_export(tmp_path), [], max_instances=2, positive_examples=True)
    splits = TaskSplits(train, val, test, decisions, {"train:sni": "sni/train.jsonl.gz"})
    text = summarize(splits)
    for name, tasks in (("train", train), ("val", val), ("test", test)):
        assert f"{name}: {len(tasks)} tasks, {sum(len(t.instances) for t in tasks)} instances" in text
    left = [d for d in decisions if not d.kept]
    assert f"left out: {len(left)} candidate tasks" in text
    for reason in ("is an SNI test task", "not on the SNI training list (SNI excluded it)",
                   "shares a source dataset with an SNI test task", "BIG-bench family capped",
                   "has no instances"):
        assert reason in text
    assert "instances by origin: instance 3, positive_example 3" in text
    assert "Title Generation" in text and "sources: train:sni <- sni/train.jsonl.gz" in text
    assert "task002_not_listed" not in text
    detailed = summarize(splits, show_excluded=True)
    assert all(f"{d.task}: {d.reason}" in detailed for d in left)


def test_summary_of_empty_splits() -> None:
    text = summarize(TaskSplits([], [], []))
    assert "train: 0 tasks, 0 instances" in text and "test: 0 tasks, 0 instances" in text
    assert "left out: 0 candidate tasks" in text
