"""The data layer: task records, readers, splits, Tk-Instruct prompts, summary, and the config loader.

Everything runs on tiny SNI-schema task records written into ``tmp_path`` (never the real data).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from promoe.config import DataConfig
from promoe.data.prompts import demonstrations, encode_prompt, task_prompt
from promoe.data.schema import Example, Instance, QuirkLog, Task, task_from_record
from promoe.data.sources import (
    load_tasks,
    positive_example_instances,
    read_hf_sni,
    read_repo_layout,
    read_task_package,
    read_test_meta,
    tasks_from_rows,
)
from promoe.data.splits import (
    TaskSplits,
    build_test_tasks,
    carve_validation,
    load_splits,
    select_training_tasks,
)
from promoe.data.summary import summarize
from promoe.errors import DataError

# --------------------------------------------------------------------------------------------------
# builders


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


# --------------------------------------------------------------------------------------------------
# 1. valid loading


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


def test_task_without_categories_has_unknown_category(tmp_path: Path) -> None:
    [task] = load_tasks(_write_json(tmp_path / "task002_b.json", _record(None, categories=[])))
    assert task.categories == () and task.category == "unknown"


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


# --------------------------------------------------------------------------------------------------
# 2. bad input: one DataError naming file, task and field


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


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    f = _write_json(tmp_path / "task100_list.json", [1, 2])
    assert str(f) in str(_data_error(load_tasks, f))


@pytest.mark.parametrize("bad_name", ["../evil", "sub/task", "..", "a..b", "/abs", ""])
def test_task_name_with_a_path_is_refused(tmp_path: Path, bad_name: str) -> None:
    pkg = _write_jsonl(tmp_path / "pkg.jsonl", [_record(bad_name)])
    err = _data_error(load_tasks, pkg)
    assert err.field == "task name" and repr(bad_name) in str(err) and f"{pkg}:1" in str(err)


def test_task_file_is_named_after_its_file_not_its_meta(tmp_path: Path) -> None:
    # the name becomes part of output paths: a path in _meta.task must not leak into it
    f = _write_json(tmp_path / "task100_ok.json", _record("../evil"))
    assert [t.name for t in load_tasks(f)] == ["task100_ok"]


def test_task_file_with_an_unsafe_name_is_refused(tmp_path: Path) -> None:
    f = _write_json(tmp_path / "bad name;rm.json", _record("task100_ok"))
    err = _data_error(load_tasks, f)
    assert "'bad name;rm'" in str(err) and str(f) in str(err)


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
# 3. the Hugging Face copy (rows -> tasks)


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


# --------------------------------------------------------------------------------------------------
# 4. splits


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


def test_select_training_tasks_protocol() -> None:
    kept, decisions = _select()
    names = [t.name for t in kept]
    assert names == sorted(names)
    reasons = {d.task: d.reason for d in decisions}
    # every candidate gets exactly one decision with a reason
    assert Counter(d.task for d in decisions) == Counter(t.name for t in _candidates())
    assert all(d.reason for d in decisions)
    assert {d.task for d in decisions if d.kept} == set(names)
    assert {"task001_train", "niv1_sub1", "bb_lonely", "bb_small__s0", "bb_small__s1"} <= set(names)
    assert "SNI test task task003_test" in reasons["task003_test"]
    assert "SNI test task task003_test" in reasons["niv1_sub2"]
    assert "not on the SNI training list" in reasons["task002_not_listed"]
    assert "task004_excluded" in reasons["niv1_sub3"]
    assert "shares a source dataset" in reasons["bb_overlap"] and "task003_test" in reasons["bb_overlap"]
    assert reasons["bb_empty"] == "has no instances"
    fam_kept = [n for n in names if n.startswith("bb_fam__")]
    assert len(fam_kept) == 2
    capped = [d for d in decisions if d.task.startswith("bb_fam__") and not d.kept]
    assert len(capped) == 3 and all("bb_fam" in d.reason and "capped at 2" in d.reason for d in capped)
    assert {d.collection for d in decisions if d.task.startswith("niv1_")} == {"niv1"}


def test_family_cap_is_deterministic_and_seeded() -> None:
    def fam(seed: int) -> list[str]:
        return [t.name for t in _select(seed)[0] if t.name.startswith("bb_fam__")]

    assert fam(0) == fam(0)
    assert _select(3) == _select(3)
    assert len({tuple(fam(s)) for s in range(10)}) > 1
    assert all(len(fam(s)) == 2 for s in range(10))


def test_family_cap_zero_and_large() -> None:
    kept, _ = _select(cap=100)
    assert sum(t.name.startswith("bb_fam__") for t in kept) == 5
    kept, decisions = _select(cap=0)
    assert kept == [] and not any(d.kept for d in decisions)


def _pool() -> list[Task]:
    tasks = [_task(f"task{i:03d}_single", collection="sni") for i in range(8)]
    tasks += [_task(f"bb_f{f}__s{i}", collection="bigbench", meta={"bb_task": f"f{f}"})
              for f in range(3) for i in range(3)]
    return tasks


def test_carve_validation_holds_out_whole_families() -> None:
    pool = _pool()
    train, val = carve_validation(pool, 5, seed=0)
    assert (train, val) == carve_validation(pool, 5, seed=0)
    tn, vn = {t.name for t in train}, {t.name for t in val}
    assert not tn & vn and tn | vn == {t.name for t in pool}
    # relative order of the input is kept on both sides
    order = [t.name for t in pool]
    assert [t.name for t in train] == [n for n in order if n in tn]
    assert [t.name for t in val] == [n for n in order if n in vn]
    assert {t.family for t in train}.isdisjoint({t.family for t in val})
    assert 5 <= len(val) <= 5 + 2  # stops once ~5 tasks are held out; a family of 3 may overshoot by 2
    assert carve_validation(pool, 0, seed=0) == (pool, [])
    assert len({tuple(t.name for t in carve_validation(pool, 5, seed=s)[1]) for s in range(10)}) > 1


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


def test_read_test_meta(tmp_path: Path) -> None:
    partial, complete = _meta_export(tmp_path)
    assert partial.name == "task901_partial" and partial.collection == "sni"
    assert partial.category == "Title Generation" and partial.definition == "Write a title"
    assert [i.id for i in partial.instances][:2] == ["task901_partial-first0", "task901_partial-first1"]
    assert partial.instances[0].outputs == ("ref 0",)


def test_build_test_tasks(tmp_path: Path) -> None:
    meta = _meta_export(tmp_path)
    full = task_from_record(
        _record("task902_complete", n=10, pos=0) | {"Domains": ["Toys"]}, file="t.json",
        name="task902_complete", collection="sni")
    out = build_test_tasks(meta, [full], max_instances=3, positive_examples=False)
    partial, complete = out
    assert [i.id for i in partial.instances] == [f"task901_partial-first{j}" for j in range(3)]
    assert [i.id for i in complete.instances] == [f"task902_complete-{j}" for j in range(3)]
    assert complete.instances[0].outputs == ("ref0", "alt0")  # all references of the complete task
    assert complete.definition == "Complete the analogy" and complete.category == "Word Analogy"
    assert complete.domains == ("Toys",)
    assert all(i.origin == "instance" for t in out for i in t.instances)

    out = build_test_tasks(meta, [full], max_instances=3, positive_examples=True)
    partial, complete = out
    pos = [i for i in partial.instances if i.origin == "positive_example"]
    assert [i.origin for i in partial.instances] == ["instance"] * 3 + ["positive_example"] * 2
    assert [(i.input, i.outputs) for i in pos] == [("p0", ("o0",)), ("p1", ("o1",))]
    assert len({i.id for i in partial.instances}) == len(partial.instances)
    # the export's positive examples are used for the complete task (it has none of its own here)
    assert [i.input for i in complete.instances if i.origin == "positive_example"] == ["q0"]


def test_load_splits_with_missing_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOE_DATA", str(tmp_path / "absent"))
    err = _data_error(load_splits, DataConfig(root=None))
    assert str(tmp_path / "absent") in str(err) and "PROMOE_DATA" in str(err)


def test_load_splits_offline_end_to_end(tiny_data_root: Path) -> None:
    cfg = DataConfig(root=str(tiny_data_root), val_tasks=1, max_subtasks_per_family=2,
                     test_max_instances_per_task=2, train_collections=["sni", "niv1", "bigbench"])
    splits = load_splits(cfg)
    assert {t.name for t in splits.test} == {"task901_toy_entailment", "task902_toy_titles",
                                             "task903_toy_complete"}
    assert not {t.name for t in splits.train} & {t.name for t in splits.val}
    assert len(splits.val) >= 1
    kept = {d.task: d.split for d in splits.decisions if d.kept}
    assert {n for n, s in kept.items() if s == "val"} == {t.name for t in splits.val}
    assert {n for n, s in kept.items() if s == "train"} == {t.name for t in splits.train}
    assert sum(t.name.startswith("bb_family__") for t in splits.train + splits.val) == 2


def test_official_protocol_by_default(tiny_data_root: Path) -> None:
    """SNI training tasks only, every test task with all its instances, quirks read as Tk-Instruct does."""
    splits = load_splits(DataConfig(root=str(tiny_data_root), val_tasks=1))
    pool = splits.train + splits.val
    assert {t.collection for t in pool} == {"sni"} and len(pool) == 5
    assert splits.sources.keys() == {"test", "train:sni"}
    # test: the complete task keeps its 10 instances, the partial ones what the export has (1, 2)
    assert splits.test_available == {"task901_toy_entailment": 1, "task902_toy_titles": 2,
                                     "task903_toy_complete": 10}
    n_real = {t.name: sum(i.origin == "instance" for i in t.instances) for t in splits.test}
    assert n_real == splits.test_available and splits.test_per_task == 100
    # the empty-reference instance is kept with an empty target; the first Definition string is used
    qa = next(t for t in pool if t.name == "task801_toy_qa")
    assert qa.instances[5].outputs == ("",) and len(qa.instances) == 6
    assert next(t for t in pool if t.name == "task805_toy_sentiment2").definition.startswith("Solve task805")
    kinds = {(q.task, q.kind) for q in splits.quirks}
    assert ("task801_toy_qa", "empty_reference") in kinds
    assert ("task805_toy_sentiment2", "multi_definition") in kinds
    assert sum(k == "empty_reasoning" for _, k in kinds) == 6  # 5 training tasks + the complete test task
    text = summarize(splits)
    assert "official-data quirk empty_reference: 1 in 1 tasks" in text and "Instances[5]" in text
    assert "multi_definition" in text and "test instances available: 13 in 3 tasks" in text
    assert "meta-training pool (train + val): 5 tasks over 3 categories" in text
    # tasks of the official training list that the package does not hold are counted as left out
    missing = {d.task for d in splits.decisions if not d.kept}
    assert missing == {"task001_toy_niv1", "task062_bigbench_repeat"}
    assert "2  on the SNI training list but not in the offline package" in text


def test_caps_and_short_test_tasks_are_counted(tiny_data_root: Path) -> None:
    splits = load_splits(DataConfig(root=str(tiny_data_root), val_tasks=1, max_train_instances_per_task=4,
                                    test_max_instances_per_task=5, test_positive_examples=False))
    assert splits.capped == {"train": 5 * 2, "test": 10 - 5}
    assert splits.test_per_task == 5
    text = summarize(splits)
    assert "2 test tasks have fewer than 5 real instances (0 have none)" in text
    assert "task901_toy_entailment: 1" in text and "task902_toy_titles: 2" in text
    assert "instances left out by the per-task caps: 10 train" in text
    # quirks are those of what is used: task801's empty-reference instance (its 6th) is capped out
    assert {q.kind for q in splits.quirks} == {"multi_definition", "empty_reasoning"}
    # a task of the official list that an extra collection supplies is not "missing from the package"
    extra = load_splits(DataConfig(root=str(tiny_data_root), val_tasks=1, train_collections=["sni", "niv1"]))
    assert {d.task for d in extra.decisions if not d.kept and "not in the offline package" in d.reason} == {
        "task062_bigbench_repeat"}
    assert not any(q.task.startswith("niv1") for q in extra.quirks)  # only the SNI packages have quirks
    assert any(q.task.startswith("task8") for q in extra.quirks)


def test_a_users_file_keeps_refusing_what_official_data_may_have(tmp_path: Path) -> None:
    rec = _record("task100_user", n=2)
    rec["Instances"][0]["output"] = [""]
    path = _write_jsonl(tmp_path / "mine.jsonl", [rec])
    assert "no non-empty reference" in str(_data_error(load_tasks, path))
    quirks = QuirkLog()
    (task,) = read_task_package(path, quirks=quirks)
    assert task.instances[0].outputs == ("",)
    assert ("task100_user", "empty_reference") in [(q.task, q.kind) for q in quirks.quirks]


def test_official_repository_layout_end_to_end(tmp_path: Path) -> None:
    """data.source=sni_repo: the listed files, the first 100 instances of a test task, quirks counted."""
    repo = tmp_path / "natural-instructions"
    trains = [f"task{i:03d}_tr" for i in range(1, 5)]
    for i, name in enumerate(trains):
        rec = _record(None, n=3, categories=(["Alpha", "Beta"][i % 2],))
        if i == 0:
            rec["Instances"][2]["output"] = [""]  # an official quirk: read, kept, counted
        _write_json(repo / "tasks" / f"{name}.json", rec)
    _write_json(repo / "tasks/task900_te.json", _record(None, n=120, categories=("Textual Entailment",)))
    split = repo / "splits/default"
    split.mkdir(parents=True)
    (split / "train_tasks.txt").write_text("\n".join(trains) + "\n")
    (split / "test_tasks.txt").write_text("task900_te\n")
    splits = load_splits(DataConfig(source="sni_repo", sni_repo=str(repo), val_tasks=2,
                                    test_positive_examples=False, test_max_per_task=7))
    assert len(splits.train) == 2 and len(splits.val) == 2 and {t.category for t in splits.val} == {"Alpha", "Beta"}
    assert splits.test_available == {"task900_te": 100} and len(splits.test[0].instances) == 7
    assert splits.capped["test"] == 93
    assert [(q.task, q.kind) for q in splits.quirks if q.kind == "empty_reference"] == [("task001_tr",
                                                                                       "empty_reference")]


def test_validation_spreads_over_categories() -> None:
    cats = {"A": 6, "B": 3, "C": 1, "D": 2}
    pool = [Task(name=f"t_{c}{i}", definition="d", instances=(), categories=(c,), family=f"t_{c}{i}")
            for c, n in cats.items() for i in range(n)]
    train, val = carve_validation(pool, 3, seed=0)
    assert len(val) == 3 and len({t.category for t in val}) == 3
    assert "C" not in {t.category for t in val}  # a category's only task stays in training
    train, val = carve_validation(pool, 8, seed=1)
    assert len(val) == 8 and {t.category for t in train} == set(cats)  # every category keeps one
    # asked for more than that allows: categories give their last task, training keeps at least one
    train, val = carve_validation(pool, 100, seed=0)
    assert len(train) == 1 and len(val) == len(pool) - 1


def test_val_tasks_leaving_no_training_task_is_an_error(tiny_data_root: Path) -> None:
    err = _data_error(load_splits, DataConfig(root=str(tiny_data_root), val_tasks=5))
    assert err.field == "data.val_tasks" and "leaves no training task (5 in the pool)" in str(err)


# --------------------------------------------------------------------------------------------------
# 5. prompts


def test_prompt_definition_only_layout() -> None:
    assert encode_prompt("Answer yes or no", "Is it?") == (
        "Definition: Answer yes or no.\n\n"
        "Now complete the following example -\n"
        "Input: Is it?\n"
        "Output: "
    )
    assert encode_prompt("  Answer yes or no!  ", "  it is  ") == (
        "Definition: Answer yes or no!\n\nNow complete the following example -\nInput: it is.\nOutput: "
    )
    assert encode_prompt("", "x") == "Now complete the following example -\nInput: x.\nOutput: "


def test_prompt_with_positive_examples_layout() -> None:
    assert encode_prompt("Answer yes or no", "Is it?", [Example("a", "b")]) == (
        "Definition: Answer yes or no.\n\n"
        " Positive Example 1 -\nInput: a.\n Output: b.\n\n"
        "Now complete the following example -\nInput: Is it?\nOutput: "
    )
    two = encode_prompt("D.", "q", [Example("a?", "b!", "c"), Example("x", "y", "because")],
                        add_explanation=True)
    assert two == (
        "Definition: D.\n\n"
        " Positive Example 1 -\nInput: a?\n Output: b!\n Explanation: c.\n\n"
        " Positive Example 2 -\nInput: x.\n Output: y.\n Explanation: because.\n\n"
        "Now complete the following example -\nInput: q.\nOutput: "
    )
    no_expl = encode_prompt("D.", "q", [Example("x", "y", "because")])
    assert "Explanation" not in no_expl


def test_fits_stops_adding_examples() -> None:
    examples = [Example("a", "b"), Example("c", "d"), Example("e", "f")]
    none = encode_prompt("D", "q")
    one = encode_prompt("D", "q", examples[:1])
    seen: list[str] = []

    def fits(prompt: str) -> bool:
        seen.append(prompt)
        return len(prompt) <= len(one)

    assert encode_prompt("D", "q", examples, fits=fits) == one
    assert len(seen) == 2  # checked the 1st (fits) and the 2nd (does not), never the 3rd
    assert encode_prompt("D", "q", examples, fits=lambda p: False) == none
    # the first example that does not fit ends the list, even if a later, shorter one would fit
    long_first = [Example("x" * 100, "y"), Example("a", "b")]
    assert encode_prompt("D", "q", long_first, fits=lambda p: len(p) <= len(one)) == none
    assert encode_prompt("D", "q", examples, fits=lambda p: True) == encode_prompt("D", "q", examples)


def test_demonstrations_never_show_the_scored_example() -> None:
    task = _task("task001_demo", pos=3)
    pos_instances = positive_example_instances(task)
    assert [i.origin for i in pos_instances] == ["positive_example"] * 3
    for j, inst in enumerate(pos_instances):
        demos = demonstrations(task, inst, 5)
        own = task.positive_examples[j]
        assert own not in demos and len(demos) == 2
        prompt = task_prompt(task, inst, n_pos_examples=5)
        assert f"Input: {own.input}.\n Output: {own.output}." not in prompt
        assert prompt.endswith(f"Input: {own.input}.\nOutput: ")
    real = task.instances[0]
    assert demonstrations(task, real, 2) == list(task.positive_examples[:2])
    assert demonstrations(task, real, 0) == [] and demonstrations(task, pos_instances[0], 0) == []
    # same text but a real instance: the example may still be shown
    lookalike = Instance("x", task.positive_examples[0].input, (task.positive_examples[0].output,))
    assert demonstrations(task, lookalike, 1) == [task.positive_examples[0]]


# --------------------------------------------------------------------------------------------------
# 7. summary


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


def test_test_set_total_cap_keeps_real_instances_first(tiny_data_root: Path) -> None:
    from promoe.data.splits import load_splits

    splits = load_splits(DataConfig(root=str(tiny_data_root), test_max_per_task=2, val_tasks=1))
    by_name = {t.name: t for t in splits.test}
    # task901 has 1 first instance + 2 positives, task903 is complete (10 instances)
    assert [i.origin for i in by_name["task901_toy_entailment"].instances] == ["instance", "positive_example"]
    assert [i.origin for i in by_name["task903_toy_complete"].instances] == ["instance", "instance"]
