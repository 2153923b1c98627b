"""promoe.data.sources: task files, packages, folders, the repository layout, the Hugging Face copy, test meta."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoe.data.schema import Example
from promoe.data.sources import (
    load_tasks,
    read_hf_sni,
    read_repo_layout,
    read_task_package,
    read_test_meta,
    tasks_from_rows,
)
from tests.data.helpers import _data_error, _meta_export, _record, _write_json, _write_jsonl

# --------------------------------------------------------------------------------------------------
# valid loading

def test_single_task_file_is_named_after_the_file(tmp_path: Path) -> None:
    rec = _record(None, definition="  Say the label  \n", categories=("Sentiment Analysis", "Other"), n=3)
    f = _write_json(tmp_path / "task001_alpha.json", rec)
    [task] = load_tasks(f)
    assert task.name == "task001_alpha"
    assert task.definition == "Say the label"
    assert task.categories == ("Sentiment Analysis", "Other")
    assert task.category == "Sentiment Analysis"
    assert [i.id for i in task.instances] == ["inst-0", "inst-1", "inst-2"]
    assert task.instances[1].outputs == ("ref1", "alt1")
    assert isinstance(task.instances[1].outputs, tuple)
    assert task.instances[0].origin == "instance"
    assert task.positive_examples == (Example("pos in 0", "pos out 0", "why"),)
    assert task.negative_examples == ()
    assert task.collection == "user" and task.family == "task001_alpha" and task.path == str(f)


@pytest.mark.parametrize("filename", ["pkg.jsonl", "pkg.jsonl.gz"])
def test_package_one_task_per_line_named_by_meta(tmp_path: Path, filename: str) -> None:
    bb_meta = {"collection": "bigbench", "bb_task": "arith"}
    pkg = _write_jsonl(tmp_path / filename, [
        _record("task010_one", n=1),
        "",  # blank lines are skipped
        _record("bb_arith__add", n=2, meta=bb_meta),
        _record("bb_arith__sub", n=2, meta=bb_meta),
    ])
    tasks = load_tasks(pkg)
    assert [t.name for t in tasks] == ["task010_one", "bb_arith__add", "bb_arith__sub"]
    one, add, sub = tasks
    assert one.family == "task010_one" and one.collection == "user"
    assert add.family == sub.family == "bb_arith"
    assert add.collection == "bigbench" and add.meta["bb_task"] == "arith"
    assert add.instances[0].outputs == ("ref0", "alt0")
    assert add.path == f"{pkg}:3"


def test_folder_of_task_files(tmp_path: Path) -> None:
    for name in ("task020_b", "task019_a"):
        _write_json(tmp_path / "flat" / f"{name}.json", _record(name))
        _write_json(tmp_path / "repo" / "tasks" / f"{name}.json", _record(name))
    (tmp_path / "flat" / "README.md").write_text("not a task")
    assert [t.name for t in load_tasks(tmp_path / "flat")] == ["task019_a", "task020_b"]
    assert [t.name for t in load_tasks(tmp_path / "repo")] == ["task019_a", "task020_b"]


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    err = _data_error(load_tasks, tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err) and "no task .json" in str(err)


def test_repo_layout_reads_listed_tasks_and_reports_missing(tmp_path: Path) -> None:
    root = tmp_path / "natural-instructions"
    for name in ("task001_tr", "task002_tr", "task100_te", "task003_unlisted"):
        _write_json(root / "tasks" / f"{name}.json", _record(None, n=2))
    split = root / "splits" / "default"
    split.mkdir(parents=True)
    (split / "train_tasks.txt").write_text("task001_tr\n\ntask999_missing\ntask002_tr\n")
    (split / "test_tasks.txt").write_text("task100_te\n")
    train, missing = read_repo_layout(root, split="train")
    assert [t.name for t in train] == ["task001_tr", "task002_tr"]
    assert missing == ["task999_missing"]
    assert all(t.collection == "sni" for t in train)
    test, missing = read_repo_layout(root, split="test")
    assert [t.name for t in test] == ["task100_te"] and missing == []


def test_task_file_is_named_after_its_file_not_its_meta(tmp_path: Path) -> None:
    # the name becomes part of output paths: a path in _meta.task must not leak into it
    f = _write_json(tmp_path / "task100_ok.json", _record("../evil"))
    assert [t.name for t in load_tasks(f)] == ["task100_ok"]


def test_read_test_meta(tmp_path: Path) -> None:
    partial, complete = _meta_export(tmp_path)
    assert partial.name == "task901_partial" and partial.collection == "sni"
    assert partial.category == "Title Generation" and partial.definition == "Write a title"
    assert [i.id for i in partial.instances][:2] == ["task901_partial-first0", "task901_partial-first1"]
    assert partial.instances[0].outputs == ("ref 0",)


# --------------------------------------------------------------------------------------------------
# bad files: one DataError naming the file

def test_malformed_json_file(tmp_path: Path) -> None:
    f = tmp_path / "task100_bad.json"
    f.write_text('{"Definition": ["x"],\n "Instances": [\n')
    msg = str(_data_error(load_tasks, f))
    assert str(f) in msg and "not valid JSON" in msg and "line 3" in msg


def test_malformed_json_line_in_package(tmp_path: Path) -> None:
    pkg = _write_jsonl(tmp_path / "pkg.jsonl.gz", [_record("task001_a"), _record("task002_b"), '{"Definition": '])
    msg = str(_data_error(load_tasks, pkg))
    assert str(pkg) in msg and "line 3" in msg and "not valid JSON" in msg


def test_corrupt_gzip_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg.jsonl.gz"
    pkg.write_bytes(b"this is not gzip")
    msg = str(_data_error(load_tasks, pkg))
    assert str(pkg) in msg and "cannot be read" in msg


def test_package_line_without_task_name(tmp_path: Path) -> None:
    pkg = _write_jsonl(tmp_path / "pkg.jsonl", [_record("task001_a"), _record(None)])
    err = _data_error(load_tasks, pkg)
    assert err.file == f"{pkg}:2" and err.field == "_meta.task"


def test_same_task_twice_in_one_package(tmp_path: Path) -> None:
    pkg = _write_jsonl(tmp_path / "pkg.jsonl", [_record("task001_a"), _record("task002_b"), _record("task001_a")])
    err = _data_error(read_task_package, pkg)
    assert err.file == f"{pkg}:3" and err.field == "_meta.task" and "'task001_a'" in str(err)
    assert "twice" in str(err)


def test_missing_path_says_what_to_give(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "task001.json"
    err = _data_error(load_tasks, missing)
    assert str(missing) in str(err) and "not found" in str(err)
    assert ".json" in err.fix and ".jsonl" in err.fix


@pytest.mark.parametrize("reader", [
    lambda p: read_task_package(p),
    lambda p: read_repo_layout(p, split="train"),
    lambda p: read_test_meta(p),
])
def test_missing_data_says_how_to_get_it(tmp_path: Path, reader) -> None:
    missing = tmp_path / "no_data_here"
    err = _data_error(reader, missing)
    assert str(missing) in str(err)
    assert "allenai/natural-instructions" in str(err) and "PROMOE_DATA" in str(err)


def test_repo_layout_without_split_list(tmp_path: Path) -> None:
    (tmp_path / "repo" / "tasks").mkdir(parents=True)
    err = _data_error(read_repo_layout, tmp_path / "repo", split="train")
    assert "train_tasks.txt" in str(err) and "split list" in str(err)


@pytest.mark.parametrize("filename", ["tasks.csv", "task.json.gz", "task.txt"])
def test_unknown_file_suffix(tmp_path: Path, filename: str) -> None:
    f = tmp_path / filename
    f.write_text("{}")
    err = _data_error(load_tasks, f)
    assert str(f) in str(err) and "unknown task file type" in str(err) and ".jsonl.gz" in err.fix


# --------------------------------------------------------------------------------------------------
# the Hugging Face copy (rows -> tasks)

def _hf_rows() -> list[dict]:
    return [
        {"task_name": "task001_a", "id": "task001_a-1", "definition": "Def A", "inputs": "x1", "targets": "y1"},
        {"task_name": "task002_b", "id": "task002_b-1", "definition": "Def B", "inputs": "z1",
         "targets": ["w1", "w2"]},
        {"task_name": "task001_a", "id": "task001_a-2", "definition": "Def A", "inputs": "x2", "targets": "y2"},
    ]


def test_tasks_from_rows_groups_instances(tmp_path: Path) -> None:
    tasks = tasks_from_rows(_hf_rows(), file="hf", categories={"task001_a": "Cat A"})
    by_name = {t.name: t for t in tasks}
    assert list(by_name) == ["task001_a", "task002_b"]
    a, b = by_name["task001_a"], by_name["task002_b"]
    assert a.definition == "Def A" and a.category == "Cat A" and b.category == "unknown"
    assert [(i.id, i.input, i.outputs) for i in a.instances] == [("task001_a-1", "x1", ("y1",)),
                                                               ("task001_a-2", "x2", ("y2",))]
    assert b.instances[0].outputs == ("w1", "w2")
    assert a.collection == b.collection == "hf"


def test_tasks_from_rows_missing_column() -> None:
    rows = _hf_rows()
    del rows[1]["targets"]
    err = _data_error(tasks_from_rows, rows, file="hf-copy")
    assert err.field == "targets" and "'targets'" in str(err) and "row 1" in str(err) and "hf-copy" in str(err)


def test_tasks_from_rows_bad_row_is_a_data_error() -> None:
    rows = _hf_rows()
    rows[2]["id"] = "task001_a-1"  # duplicate id within task001_a
    err = _data_error(tasks_from_rows, rows, file="hf-copy")
    assert err.task == "task001_a" and err.field == "Instances[1].id"


@pytest.fixture
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    datasets = pytest.importorskip("datasets")
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    # datasets reads these at import time: patch the module config too
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache", raising=False)
    return datasets


def test_read_hf_sni_from_local_json(tmp_path: Path, hf_offline) -> None:
    rows = _hf_rows()
    rows[1]["targets"] = ["w1"]  # one column type per file (Arrow)
    for r in rows:
        if isinstance(r["targets"], str):
            r["targets"] = [r["targets"]]
    f = _write_jsonl(tmp_path / "hf_train.jsonl", rows)
    tasks = read_hf_sni("json", split="train", data_files=str(f))
    by_name = {t.name: t for t in tasks}
    assert sorted(by_name) == ["task001_a", "task002_b"]
    assert [i.id for i in by_name["task001_a"].instances] == ["task001_a-1", "task001_a-2"]
    assert by_name["task002_b"].instances[0].outputs == ("w1",)


def test_read_hf_sni_missing_column(tmp_path: Path, hf_offline) -> None:
    rows = [{k: v for k, v in r.items() if k != "targets"} for r in _hf_rows()]
    f = _write_jsonl(tmp_path / "hf_no_targets.jsonl", rows)
    err = _data_error(read_hf_sni, "json", split="train", data_files=str(f))
    assert err.field == "targets" and "'targets'" in str(err)


def test_ids_shared_by_two_tasks_scored_together_are_refused_naming_both(tmp_path: Path) -> None:
    one, two = _record("task030_one", n=2), _record("task031_two", n=2)
    for rec in (one, two):  # both number their instances "0", "1"
        for i, inst in enumerate(rec["Instances"]):
            inst["id"] = str(i)
    pkg = _write_jsonl(tmp_path / "two.jsonl", [one, two])
    err = _data_error(load_tasks, pkg)
    assert "'0'" in str(err) and "task030_one" in str(err) and "task031_two" in str(err) and "unique" in str(err)
