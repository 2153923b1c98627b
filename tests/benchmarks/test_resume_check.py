"""promoe.benchmarks.resume_check: kill points are recognised in a run folder, and two runs are compared on
their common rows (the kill-and-resume test of a whole run: tests/test_resume.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promoe.benchmarks.resume_check import differences, reached


def test_kill_points_are_checked(tmp_path: Path) -> None:
    (tmp_path / "train/moe").mkdir(parents=True)
    (tmp_path / "train/moe/metrics.jsonl").write_text("{}\n{}\n")
    (tmp_path / "train/dense").mkdir(parents=True)
    (tmp_path / "train/dense/metrics.jsonl").write_text("{}\n")
    assert reached(tmp_path, "train:3") and not reached(tmp_path, "train:4")
    assert reached(tmp_path, "train/moe:2") and not reached(tmp_path, "train/dense:2")
    assert not reached(tmp_path, "eval:1")
    (tmp_path / "progress").mkdir()
    (tmp_path / "progress/eval.json").write_text(json.dumps({"rows": {"a": {"done": 3}, "b": {"done": 2}}}))
    assert reached(tmp_path, "eval:2") and not reached(tmp_path, "eval:3")
    assert not reached(tmp_path, "analysis")
    with pytest.raises(ValueError, match="kill point"):
        reached(tmp_path, "eval")


def test_differences_cover_common_rows_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d, extra, x in ((a, {"moe-icl": {"rougeL": 1.0}}, 0.5), (b, {}, 0.5)):
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"moe": {"rougeL": x, "per_category": {"QA": [1, 2]}}, **extra}))
        (d / "significance.json").write_text(json.dumps({"p": float("nan"), "rows": {"moe": [0.1]}}))
    (a / "predictions").mkdir()
    (a / "predictions/moe-icl.jsonl").write_text("x")  # a row of one run only
    assert differences(a, b) == []  # rows of one run only are not compared
    (b / "summary.json").write_text(json.dumps({"moe": {"rougeL": 0.5, "per_category": {"QA": [1, 3]}}}))
    assert differences(a, b) == ["summary.json/moe/per_category/QA[1]: 2 != 3"]
    (a / "summary.json").write_text(json.dumps({"moe": {"rougeL": 0.5, "per_category": {"QA": [1, 3]}}}))
    assert differences(a, b) == []  # same rows: significance.json is compared too (NaN equals NaN)
    (b / "significance.json").write_text(json.dumps({"p": 0.5, "rows": {"moe": [0.1]}}))
    assert differences(a, b) == ["significance.json/p: nan != 0.5"]
    for d, text in ((a, "answer\n"), (b, "other\n")):
        (d / "predictions").mkdir(exist_ok=True)
        (d / "predictions/moe.jsonl").write_text(text)
    assert "predictions/moe.jsonl differs" in differences(a, b)
