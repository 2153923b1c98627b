"""Builders shared by the data-layer tests: SNI-schema task records, files, candidate pools, a test-meta export.

Everything is written into ``tmp_path`` (never the real data).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from promoe.data.protocol import select_training_tasks
from promoe.data.schema import Task, task_from_record
from promoe.data.sources import read_test_meta
from promoe.errors import DataError


def _inst(iid: str, inp: str = "in", outputs: Any = ("out",)) -> dict:
    return {"id": iid, "input": inp, "output": list(outputs) if isinstance(outputs, tuple) else outputs}


def _record(name: str | None, *, definition: Any = "Say the label", categories: Any = ("Sentiment Analysis",),
            n: int = 2, pos: int = 1, meta: dict | None = None) -> dict:
    """One task in the SNI task schema (``name=None`` leaves ``_meta.task`` out)."""
    return {
        "Definition": [definition] if isinstance(definition, str) else definition,
        "Categories": list(categories) if isinstance(categories, tuple) else categories,
        "Reasoning": [],
        "Domains": [],
        "Source": [],
        "Positive Examples": [{"input": f"pos in {j}", "output": f"pos out {j}", "explanation": "why"}
                              for j in range(pos)],
        "Negative Examples": [],
        "Instances": [_inst(f"{name or 'inst'}-{i}", f"input {i}", (f"ref{i}", f"alt{i}")) for i in range(n)],
        "_meta": ({"task": name} if name is not None else {}) | (meta or {}),
    }


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One row per line; a ``str`` row is written as is (to make malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _task(name: str, *, n: int = 2, pos: int = 1, collection: str = "user", meta: dict | None = None,
          category: str = "Sentiment Analysis") -> Task:
    rec = _record(name, n=n, pos=pos, categories=(category,), meta=meta)
    return task_from_record(rec, file=f"{name}.json", name=name, collection=collection)


def _data_error(fn, *args, **kwargs) -> DataError:
    """Call ``fn`` and return the single DataError it raises (no chained second error)."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert type(err) is DataError
    assert err.__cause__ is None
    return err


def _candidates() -> list[Task]:
    fam = [_task(f"bb_fam__s{i}", collection="bigbench", meta={"bb_task": "fam"}) for i in range(5)]
    small = [_task(f"bb_small__s{i}", collection="bigbench", meta={"bb_task": "small"}) for i in range(2)]
    return [
        _task("task001_train", collection="sni"),
        _task("task002_not_listed", collection="sni"),
        _task("task003_test", collection="sni"),
        _task("niv1_sub1", collection="niv1", meta={"sni_task": "task001_train"}),
        _task("niv1_sub2", collection="niv1", meta={"sni_task": "task003_test"}),
        _task("niv1_sub3", collection="niv1", meta={"sni_task": "task004_excluded"}),
        _task("bb_overlap", collection="bigbench",
              meta={"bb_task": "overlap", "sni_test_dataset_overlap": ["task003_test"]}),
        _task("bb_empty", n=0, collection="bigbench", meta={"bb_task": "empty"}),
        _task("bb_lonely", collection="bigbench", meta={"bb_task": "lonely"}),
        *fam, *small,
    ]


def _select(seed: int = 0, cap: int = 2):
    return select_training_tasks(_candidates(), train_list={"task001_train", "task005_other"},
                                 test_list={"task003_test"}, max_per_family=cap, seed=seed)


def _meta_export(tmp_path: Path) -> list[Task]:
    rows = [
        {"task": "task901_partial", "category": "Title Generation", "Definition": "Write a title",
         "positive_examples": [{"input": "p0", "output": "o0", "explanation": ""},
                               {"input": "p1", "output": "o1", "explanation": ""}],
         "negative_examples": [],
         "first_instances": [{"input": f"first {j}", "output": f"ref {j}"} for j in range(5)]},
        {"task": "task902_complete", "category": "Word Analogy", "Definition": "Complete the analogy",
         "positive_examples": [{"input": "q0", "output": "r0", "explanation": ""}],
         "first_instances": [{"input": "first 0", "output": "ref 0"}]},
    ]
    return read_test_meta(_write_jsonl(tmp_path / "test_task_meta.jsonl.gz", rows))
