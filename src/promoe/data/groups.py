"""Groups of related test tasks: the unit a bootstrap over test tasks resamples (:mod:`promoe.analysis.stats`).

Test tasks are not always independent draws. In the synthetic mechanism suite (:mod:`promoe.data.synth`) two
test tasks are two phrasings of one rule; in SNI several test tasks are built from one source dataset
(task1385_anli_r1 and task1387_anli_r3 share ``anli``). Resampling such tasks one by one treats them as
independent and makes intervals too narrow; resampling their groups does not.

A task's group, in this order:

* ``rule:<id>``: its ``_meta.rule`` (the synthetic suite records the rule there, and only there);
* ``source:<a>+<b>``: its SNI ``Source`` datasets, tasks that share any source dataset joined into one group
  (so a task built from two datasets joins both datasets' tasks);
* ``family:<f>``: its BIG-bench family (subtasks of one BIG-bench task);
* ``task:<name>``: none of these: the task is its own group.

The run writes the test tasks' groups into ``splits.json`` (``test_groups``), so the analysis reads them from
the run folder alone.
"""

from __future__ import annotations

from promoe.data.schema import Task


def _sources(task: Task) -> list[str]:
    return [s.strip() for s in task.source if s.strip()]  # an empty Source entry names no dataset


def _own_key(task: Task) -> str | None:
    """The group a task has by itself (rule or family), None when only its sources can say."""
    if (rule := task.meta.get("rule")) is not None:
        return f"rule:{rule}"
    if _sources(task):
        return None
    if task.family and task.family != task.name:
        return f"family:{task.family}"
    return f"task:{task.name}"


def task_groups(tasks: list[Task]) -> dict[str, str]:
    """``{task name: group}`` for ``tasks`` (module docstring); tasks sharing a source dataset share a group."""
    out = {t.name: key for t in tasks if (key := _own_key(t)) is not None}
    sourced = [t for t in tasks if t.name not in out]
    parent: dict[str, str] = {}  # union-find over source datasets

    def root(s: str) -> str:
        while parent.setdefault(s, s) != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for t in sourced:
        first, *rest = _sources(t)
        for s in rest:
            parent[root(s)] = root(first)
        root(first)  # a task with one source dataset: the dataset is its own root
    members: dict[str, set[str]] = {}
    for s in list(parent):
        members.setdefault(root(s), set()).add(s)
    for t in sourced:
        out[t.name] = "source:" + "+".join(sorted(members[root(_sources(t)[0])]))
    return {t.name: out[t.name] for t in tasks}
