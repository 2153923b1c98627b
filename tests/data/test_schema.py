"""promoe.data.schema: task records validated; bad input is one DataError naming file, task and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promoe.data.schema import QuirkLog
from promoe.data.sources import load_tasks, read_task_package
from tests.data.helpers import _data_error, _record, _write_json, _write_jsonl


def test_task_without_categories_has_unknown_category(tmp_path: Path) -> None:
    [task] = load_tasks(_write_json(tmp_path / "task002_b.json", _record(None, categories=[])))
    assert task.categories == () and task.category == "unknown"


# --------------------------------------------------------------------------------------------------
# bad input: one DataError naming file, task and field

def _drop(key: str):
    return lambda r: r.pop(key)


def _set(key: str, value: Any):
    return lambda r: r.__setitem__(key, value)


def _set_inst(i: int, key: str, value: Any):
    return lambda r: r["Instances"][i].__setitem__(key, value)


BAD_RECORDS = {
    "missing Definition": (_drop("Definition"), "Definition"),
    "empty Definition": (_set("Definition", [""]), "Definition"),
    "whitespace Definition": (_set("Definition", ["   \n"]), "Definition"),
    "empty Definition string": (_set("Definition", ""), "Definition"),
    "empty Definition list": (_set("Definition", []), "Definition"),
    "numeric Definition": (_set("Definition", 5), "Definition"),
    "missing Instances": (_drop("Instances"), "Instances"),
    "Instances not a list": (_set("Instances", {"id": "x"}), "Instances"),
    "no instances": (_set("Instances", []), "Instances"),
    "empty output list": (_set_inst(0, "output", []), "Instances[0].output"),
    "only blank outputs": (_set_inst(0, "output", ["  "]), "Instances[0].output"),
    "output is a string": (_set_inst(1, "output", "ref"), "Instances[1].output"),
    "non-string reference": (_set_inst(0, "output", [3]), "Instances[0].output[0]"),
    "duplicate instance id": (_set_inst(1, "id", "task100_bad-0"), "Instances[1].id"),
    "missing instance id": (lambda r: r["Instances"][0].pop("id"), "Instances[0]"),
    "empty instance id": (_set_inst(0, "id", " "), "Instances[0].id"),
    "numeric Categories": (_set("Categories", 5), "Categories"),
    "Categories as object": (_set("Categories", {"a": "b"}), "Categories"),
    "non-string category": (_set("Categories", ["ok", 7]), "Categories[1]"),
    "example without output": (lambda r: r["Positive Examples"][0].pop("output"), "Positive Examples[0]"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
@pytest.mark.parametrize("container", ["json", "jsonl"])
def test_bad_record_names_file_task_and_field(tmp_path: Path, case: str, container: str) -> None:
    mutate, field = BAD_RECORDS[case]
    rec = _record("task100_bad", n=2)
    mutate(rec)
    if container == "json":
        path = _write_json(tmp_path / "task100_bad.json", rec)
        file = str(path)
    else:
        path = _write_jsonl(tmp_path / "pkg.jsonl", [_record("task099_fine"), rec])
        file = f"{path}:2"
    err = _data_error(load_tasks, path)
    msg = str(err)
    assert f"file {file!r}" in msg
    assert "task 'task100_bad'" in msg
    assert f"field {field!r}" in msg
    assert (err.file, err.task, err.field) == (file, "task100_bad", field)
    assert err.fix


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    f = _write_json(tmp_path / "task100_list.json", [1, 2])
    assert str(f) in str(_data_error(load_tasks, f))


@pytest.mark.parametrize("bad_name", ["../evil", "sub/task", "..", "a..b", "/abs", ""])
def test_task_name_with_a_path_is_refused(tmp_path: Path, bad_name: str) -> None:
    pkg = _write_jsonl(tmp_path / "pkg.jsonl", [_record(bad_name)])
    err = _data_error(load_tasks, pkg)
    assert err.field == "task name" and repr(bad_name) in str(err) and f"{pkg}:1" in str(err)


def test_task_file_with_an_unsafe_name_is_refused(tmp_path: Path) -> None:
    f = _write_json(tmp_path / "bad name;rm.json", _record("task100_ok"))
    err = _data_error(load_tasks, f)
    assert "'bad name;rm'" in str(err) and str(f) in str(err)


# --------------------------------------------------------------------------------------------------
# the official data's quirks

def test_a_users_file_keeps_refusing_what_official_data_may_have(tmp_path: Path) -> None:
    rec = _record("task100_user", n=2)
    rec["Instances"][0]["output"] = [""]
    path = _write_jsonl(tmp_path / "mine.jsonl", [rec])
    assert "no non-empty reference" in str(_data_error(load_tasks, path))
    quirks = QuirkLog()
    (task,) = read_task_package(path, quirks=quirks)
    assert task.instances[0].outputs == ("",)
    assert ("task100_user", "empty_reference") in [(q.task, q.kind) for q in quirks.quirks]
