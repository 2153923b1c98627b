"""promoe.data.splits: load_splits end to end over the data sources (the rules themselves: test_protocol.py).

On tiny SNI-schema records in ``tmp_path`` and the tiny offline data folder (``tiny_data_root``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from promoe.config import DataConfig
from promoe.data.splits import load_splits
from promoe.data.summary import summarize
from tests.data.helpers import _data_error, _record, _write_json

# --------------------------------------------------------------------------------------------------
# load_splits

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


def test_val_tasks_leaving_no_training_task_is_an_error(tiny_data_root: Path) -> None:
    err = _data_error(load_splits, DataConfig(root=str(tiny_data_root), val_tasks=5))
    assert err.field == "data.val_tasks" and "leaves no training task (5 in the pool)" in str(err)


def test_test_set_total_cap_keeps_real_instances_first(tiny_data_root: Path) -> None:
    from promoe.data.splits import load_splits

    splits = load_splits(DataConfig(root=str(tiny_data_root), test_max_per_task=2, val_tasks=1, test_positive_examples=True))
    by_name = {t.name: t for t in splits.test}
    # task901 has 1 first instance + 2 positives, task903 is complete (10 instances)
    assert [i.origin for i in by_name["task901_toy_entailment"].instances] == ["instance", "positive_example"]
    assert [i.origin for i in by_name["task903_toy_complete"].instances] == ["instance", "instance"]


# --------------------------------------------------------------------------------------------------
# the real offline data (skipped without it)

def test_real_offline_default_is_the_official_protocol(real_data_root: Path) -> None:
    splits = load_splits(DataConfig(root=str(real_data_root)))
    pool = splits.train + splits.val
    assert {t.collection for t in pool} == {"sni"} and len(pool) >= 680
    assert len({t.category for t in pool}) == 60 and len({t.category for t in splits.val}) == len(splits.val)
    assert len(splits.test) == 119 and sum(splits.test_available.values()) >= 10_000
    assert max(splits.test_available.values()) == 100
    # 16 partial tasks + 2 short complete ones + task1531, whose Instances[63] is a demonstration (below)
    assert sum(n < 100 for n in splits.test_available.values()) == 19
    found = [(q.task.split("_")[0], q.kind) for q in splits.quirks]
    assert sorted(k for k in found if k[1] == "empty_reference") == sorted(
        [("task488", "empty_reference")] * 3 + [("task497", "empty_reference"), ("task365", "empty_reference"),
                                                ("task1564", "empty_reference")])
    assert [t for t, k in found if k == "multi_definition"] == ["task288"]
    assert sum(k == "empty_reasoning" for _, k in found) == 293 + 42
    # task1531's Instances[63] is its 4th positive example with a trailing space: never scored
    assert [t for t, k in found if k == "demonstration_input"] == ["task1531"]
    assert sum(splits.test_available.values()) == 10_286


def test_real_offline_splits_follow_the_sni_protocol(real_data_root: Path) -> None:
    splits = load_splits(DataConfig(root=str(real_data_root), train_collections=["sni", "niv1", "bigbench"],
                                    test_max_instances_per_task=7, test_positive_examples=True))
    test_names = set((real_data_root / "sni/splits/default/test_tasks.txt").read_text().split())
    train_list = set((real_data_root / "sni/splits/default/train_tasks.txt").read_text().split())
    assert {t.name for t in splits.test} == test_names and len(test_names) == 119
    pool = splits.train + splits.val
    assert not {t.name for t in splits.train} & {t.name for t in splits.val}
    for t in pool:
        sni = t.meta.get("sni_task") or (t.name if t.collection == "sni" else None)
        assert sni is None or sni in train_list
        assert not t.meta.get("sni_test_dataset_overlap")
    families: dict[str, int] = {}
    for t in pool:
        families[t.family] = families.get(t.family, 0) + 1
    assert max(families.values()) <= DataConfig().max_subtasks_per_family
    left = [d for d in splits.decisions if not d.kept]
    assert sum("is SNI test task" in d.reason for d in left) == 7
    assert sum("not on the SNI training list" in d.reason for d in left) == 37
    for t in splits.test:
        real = [i for i in t.instances if i.origin == "instance"]
        assert len(real) <= DataConfig().test_max_instances_per_task
    assert sum(i.origin == "positive_example" for t in splits.test for i in t.instances) == 385


def test_no_source_scores_an_instance_a_demonstration_shows(tmp_path: Path) -> None:
    # data.source=files: the rule holds for a researcher's own test tasks too, counted like the official quirks
    test = _record("task900_te", n=4, pos=2, categories=("Textual Entailment",))
    test["Instances"][2]["input"] = "pos in 1 "  # its 2nd positive example's input, as the prompt shows it
    files = {"train": _write_json(tmp_path / "train/task001_tr.json", _record("task001_tr", n=3)),
             "test": _write_json(tmp_path / "test/task900_te.json", test)}
    _write_json(tmp_path / "train/task002_tr.json", _record("task002_tr", n=3))
    splits = load_splits(DataConfig(source="files", train_files=[str(files["train"].parent)],
                                    test_files=[str(files["test"])], val_tasks=1, test_positive_examples=True,
                                    test_max_per_task=None))
    (task,) = splits.test
    assert [i.id for i in task.instances if i.origin == "instance"] == ["task900_te-0", "task900_te-1", "task900_te-3"]
    assert [i.input for i in task.instances if i.origin == "positive_example"] == ["pos in 0", "pos in 1"]
    assert splits.test_available == {"task900_te": 3} and splits.capped["test"] == 0
    assert [(q.task, q.kind) for q in splits.quirks] == [("task900_te", "demonstration_input")]
    text = summarize(splits)
    assert "test-data quirk demonstration_input: 1 in 1 tasks" in text
    assert "task900_te Instances[2] (task900_te-2) = Positive Examples[1]" in text
