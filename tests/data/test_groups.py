"""promoe.data.groups: which test tasks are related (one synthetic rule, one SNI source dataset), and the run's
splits.json records it for the analysis."""

from __future__ import annotations

import json
from pathlib import Path

from promoe.data.groups import task_groups
from promoe.data.schema import Instance, Task, task_from_record
from promoe.data.splits import TaskSplits
from promoe.data.synth import build_suite
from promoe.experiment import write_splits


def _task(name: str, source: tuple[str, ...] = (), family: str = "", meta: dict | None = None) -> Task:
    return Task(name=name, definition="Do it.", instances=(Instance("i0", "x", ("y",)),), source=source,
                family=family or name, meta=meta or {})


def test_phrasings_of_one_synthetic_rule_are_one_group() -> None:
    test = [task_from_record(r, file="suite") for r in build_suite(seed=0, n_instances=1, train_phrasings=4)["test"]]
    groups = task_groups(test)
    assert len(test) == 16 and len(set(groups.values())) == 8  # two held-out phrasings of each of 8 rules
    for t in test:  # the same Source for every synthetic task: the rule decides, not the Source
        assert groups[t.name] == f"rule:{t.meta['rule']}"


def test_sni_tasks_of_one_source_dataset_are_one_group() -> None:
    tasks = [_task("task1385_anli_r1", ("anli",)), _task("task1387_anli_r3", ("anli",)),
             _task("task1388_cb_entailment", ("cb",)), _task("task_both", ("cb", "wsc")), _task("task_wsc", ("wsc",)),
             _task("task_none"), _task("task_blank", (" ",)), _task("bb_sub", family="bb_x")]
    groups = task_groups(tasks)
    assert groups["task1385_anli_r1"] == groups["task1387_anli_r3"] == "source:anli"
    # a task built from two datasets joins both datasets' tasks
    assert groups["task1388_cb_entailment"] == groups["task_both"] == groups["task_wsc"] == "source:cb+wsc"
    assert groups["task_none"] == "task:task_none" and groups["task_blank"] == "task:task_blank"
    assert groups["bb_sub"] == "family:bb_x"
    assert list(groups) == [t.name for t in tasks]


def test_splits_json_records_each_test_tasks_group(tmp_path: Path) -> None:
    test = [_task("task1385_anli_r1", ("anli",)), _task("task1387_anli_r3", ("anli",)), _task("task_x")]
    write_splits(TaskSplits(train=[_task("train_a")], val=[], test=test), tmp_path)
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert splits["test_groups"] == {"task1385_anli_r1": "source:anli", "task1387_anli_r3": "source:anli",
                                     "task_x": "task:task_x"}
