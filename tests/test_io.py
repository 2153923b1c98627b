"""promoe.io: reading the official prediction and reference files; files written whole, with plain
permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from promoe.io import atomic_write_text, read_predictions, read_references
from promoe.metrics import Reference
from tests.helpers import write_lines


def test_read_predictions(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [
        {"id": "1", "prediction": "yes"},
        "",                                   # blank lines are skipped
        {"id": "2", "prediction": "你好"},
        {"id": "1", "prediction": "no"},      # a later line for an id wins
    ])
    assert read_predictions(path) == {"1": "no", "2": "你好"}


def test_read_references(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [
        {"id": "1", "references": ["yes", "Yes."], "task_id": "t1", "task_category": "Question Answering",
         "track": "default"},
        {"id": "2", "references": ["no"], "task_id": "t2", "task_category": "Misc."},  # no track
    ])
    assert read_references(path) == [
        Reference(id="1", references=("yes", "Yes."), task_id="t1", task_category="Question Answering"),
        Reference(id="2", references=("no",), task_id="t2", task_category="Misc.", track="default"),
    ]


def test_atomic_write_replaces_whole_files_with_plain_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out" / "f.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second" and [p.name for p in target.parent.iterdir()] == ["f.txt"]
    old = os.umask(0o022)
    try:
        atomic_write_text(target, "third")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable by others, as open() would make it
