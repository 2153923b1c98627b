"""promoe.data.clusters: clusters of training tasks by description, by whole category, or given."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from promoe.data.clusters import Clusters, cluster_splits, cluster_tasks, output_kind, read_assignment
from promoe.data.schema import Example, Instance, Task
from promoe.errors import DataError, PromoeError


def _tasks() -> tuple[list[Task], dict[str, np.ndarray]]:
    """Six tasks in two categories whose descriptions sit around two far-apart directions."""
    rng = np.random.default_rng(0)
    a, b = np.eye(8)[0], np.eye(8)[1]
    tasks, emb = [], {}
    for i in range(6):
        name, centre, cat = f"t{i}", (a if i < 3 else b), ("Cat A" if i < 3 else "Cat B")
        tasks.append(Task(name=name, definition=name, instances=(), categories=(cat,)))
        emb[name] = centre + 0.05 * rng.standard_normal(8)
    return tasks, emb


@pytest.mark.parametrize("method", ["description", "category"])
def test_two_groups_are_found_and_new_tasks_go_to_the_nearest(method: str) -> None:
    tasks, emb = _tasks()
    c = cluster_tasks(tasks, emb, 2, method, seed=0)
    groups = {frozenset(t for t, k in c.assignment.items() if k == j) for j in range(2)}
    assert groups == {frozenset({"t0", "t1", "t2"}), frozenset({"t3", "t4", "t5"})}
    assert c.sizes() == [3, 3] and np.allclose(np.linalg.norm(c.centroids, axis=1), 1.0)
    query = {"near_a": np.eye(8)[0] * 3, "t4": emb["t4"]}
    new = c.assign(query)
    assert new == {"near_a": c.assignment["t0"], "t4": c.assignment["t4"]}
    again = cluster_tasks(tasks, emb, 2, method, seed=0)
    assert again.assignment == c.assignment  # deterministic for a seed
    assert Clusters.from_json(json.loads(json.dumps(c.to_json()))).assign(query) == new


def test_categories_stay_whole() -> None:
    tasks, emb = _tasks()
    emb["t2"] = np.eye(8)[1]  # a task of Cat A that reads like Cat B
    by_description = cluster_tasks(tasks, emb, 2, "description")
    by_category = cluster_tasks(tasks, emb, 2, "category")
    assert by_description.assignment["t2"] == by_description.assignment["t3"]
    assert by_category.assignment["t2"] == by_category.assignment["t0"]


def test_given_assignment(tmp_path: Path) -> None:
    tasks, emb = _tasks()
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps({f"t{i}": i % 3 for i in range(6)}))
    c = cluster_tasks(tasks, emb, 3, "given", given=read_assignment(path))
    assert c.assignment["t4"] == 1 and c.sizes() == [2, 2, 2]
    with pytest.raises(ValueError, match="no cluster for 1 training tasks"):
        cluster_tasks(tasks, emb, 3, "given", given={f"t{i}": i % 3 for i in range(5)})
    with pytest.raises(ValueError, match="every cluster"):
        cluster_tasks(tasks, emb, 4, "given", given={f"t{i}": i % 3 for i in range(6)})
    path.write_text(json.dumps({"t0": "one"}))
    with pytest.raises(DataError, match="cluster numbers"):
        read_assignment(path)


def test_bad_counts_are_refused() -> None:
    tasks, emb = _tasks()
    with pytest.raises(ValueError, match="cannot make 7 clusters"):
        cluster_tasks(tasks, emb, 7)
    with pytest.raises(ValueError, match="whole categories"):
        cluster_tasks(tasks, emb, 3, "category")
    with pytest.raises(ValueError, match="not one of"):
        cluster_tasks(tasks, emb, 2, "random")
    same = {t: np.eye(8)[0] for t in emb}
    with pytest.raises(ValueError, match="distinct descriptions"):
        cluster_tasks(tasks, same, 3)


def test_meta_labels_make_the_clusters_and_place_held_out_tasks() -> None:
    tasks, emb = _tasks()
    # labels that cut across both the description groups and the categories
    tasks = [replace(t, meta={"rule": "odd" if i % 2 else "even"}) for i, t in enumerate(tasks)]
    c = cluster_tasks(tasks, emb, 2, "meta", meta_key="rule")
    assert c.assignment == {f"t{i}": i % 2 for i in range(6)}  # sorted labels: even=0, odd=1
    held_val = Task(name="v", definition="v", instances=(), meta={"rule": "odd"})
    held_test = Task(name="x", definition="x", instances=())  # no label: the nearest centroid
    emb |= {"v": np.eye(8)[0], "x": np.eye(8)[0]}
    splits = SimpleNamespace(train=tasks, val=[held_val], test=[held_test])
    clusters, held = cluster_splits(splits, emb, 2, "meta", meta_key="rule")
    assert held["val"] == {"v": 1} and held["test"] == {"x": clusters.assign({"x": emb["x"]})["x"]}
    # the label wins over the description wherever the clusters are used, also once saved and read back
    nearest = int(np.argmax(clusters.centroids @ emb["v"]))
    saved = Clusters.from_json(json.loads(json.dumps({**clusters.to_json(), **held})))
    for c in (clusters, saved):
        assert c.assign({"v": emb["v"]}) == {"v": 1} and c.known["v"] == 1
    assert Clusters(clusters.method, clusters.assignment, clusters.centroids).assign({"v": emb["v"]}) == {"v": nearest}
    with pytest.raises(PromoeError, match="_meta.colour of every training task"):
        cluster_splits(splits, emb, 2, "meta", meta_key="colour")
    with pytest.raises(PromoeError, match="every cluster 0..2"):
        cluster_splits(splits, emb, 3, "meta", meta_key="rule")


def _answering(name: str, pairs: list[tuple[str, str]], demos: int = 0) -> Task:
    inst = tuple(Instance(f"{name}-{i}", x, (y,)) for i, (x, y) in enumerate(pairs[demos:]))
    return Task(name=name, definition=name, instances=inst,
                positive_examples=tuple(Example(x, y) for x, y in pairs[:demos]))


def test_the_kind_of_output_is_read_off_the_examples() -> None:
    label = _answering("label", [(f"review {i}", "positive" if i % 2 else "negative") for i in range(10)])
    span = _answering("span", [(f"the cat sat on mat {i}", f"mat {i}") for i in range(10)])
    free = _answering("free", [(f"question {i}", f"a sentence of its own number {i}") for i in range(10)])
    assert [output_kind(t) for t in (label, span, free)] == ["label", "span", "free text"]
    few = _answering("few", [("is it good?", "Yes"), ("is it bad?", "No")], demos=2)
    assert output_kind(few, instances=False) == "label"  # two demonstrations: short answers stand for a set
    long = _answering("long", [("x", "a long answer of many words"), ("y", "another long one of words")], demos=2)
    assert output_kind(long, instances=False) == "free text"


def test_clusters_by_output_make_three_and_label_held_out_tasks_from_their_demonstrations() -> None:
    tasks = [_answering(f"l{i}", [(f"r {j}", "yes" if j % 2 else "no") for j in range(10)]) for i in range(2)]
    tasks += [_answering(f"s{i}", [(f"x {j} y", f"{j} y") for j in range(10)]) for i in range(2)]
    tasks += [_answering(f"f{i}", [(f"q {j}", f"some text {j}") for j in range(10)]) for i in range(2)]
    emb = {t.name: np.random.default_rng(i).standard_normal(4) for i, t in enumerate(tasks)}
    c = cluster_tasks(tasks, emb, 3, "output")
    assert c.assignment == {"l0": 0, "l1": 0, "s0": 1, "s1": 1, "f0": 2, "f1": 2}
    with pytest.raises(ValueError, match="model.n_experts=3"):
        cluster_tasks(tasks, emb, 2, "output")
    test = _answering("t", [("x", "maybe"), ("y", "no")], demos=2)
    emb["t"] = emb["f0"]  # nearest to a free-text task, but its demonstrations say label
    splits = SimpleNamespace(train=tasks, val=[], test=[test])
    clusters, held = cluster_splits(splits, emb, 3, "output")
    assert held["test"] == {"t": 0}
