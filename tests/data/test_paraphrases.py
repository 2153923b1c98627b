"""promoe.data.paraphrases: the wordings a router may read in meta-training — a task's own Paraphrases field first,
then the package's, without repeats or the Definition, at most ``limit``; blank ones dropped when read."""

from __future__ import annotations

import pytest

from promoe.data.paraphrases import router_wordings
from promoe.data.schema import Instance, Task, task_from_record
from promoe.errors import DataError


def _task(name: str, definition: str, paraphrases: tuple[str, ...] = ()) -> Task:
    return Task(name=name, definition=definition, instances=(Instance("i", "x", ("y",)),), paraphrases=paraphrases)


def test_own_wordings_first_then_the_package_without_repeats_or_the_definition() -> None:
    tasks = [_task("a", "Do A.", ("Perform A.", "Do A.", "Carry out A.")), _task("b", "Do B."), _task("c", "Do C.")]
    package = {"a": ["Perform A.", "A, please."], "b": ["B it.", "Do B.", "B again."], "x": ["unused"]}
    assert router_wordings(tasks, package=package, limit=10) == {
        "a": ["Perform A.", "Carry out A.", "A, please."], "b": ["B it.", "B again."]}  # c has none
    assert router_wordings(tasks, package=package, limit=1) == {"a": ["Perform A."], "b": ["B it."]}
    assert router_wordings(tasks, package={}, limit=0) == {}


def test_the_paraphrases_field_is_read_strictly() -> None:
    record = {"Definition": ["Do A."], "Instances": [{"id": "1", "input": "x", "output": ["y"]}]}
    assert task_from_record({**record, "Paraphrases": [" Perform A. ", " "]}, name="a", file="f").paraphrases == (
        "Perform A.",)
    assert task_from_record(record, name="a", file="f").paraphrases == ()
    with pytest.raises(DataError, match="Paraphrases"):
        task_from_record({**record, "Paraphrases": [1]}, name="a", file="f")
