"""promoe.rows.ablations: each description ablation replaces every description with the right text;
paraphrases are read from their package, bad rows refused."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from promoe.data.paraphrases import read_paraphrases
from promoe.data.schema import Task
from promoe.errors import DataError
from promoe.rows.ablations import ablated_descriptions, control_group, donors
from tests.helpers import TASKS


def test_ablations_replace_every_description_with_the_right_text() -> None:
    shuffled = ablated_descriptions("shuffled", TASKS, seed=3)
    own = {t.name: t.definition for t in TASKS}
    assert set(shuffled) == set(own) and sorted(shuffled.values()) == sorted(own.values())
    assert all(shuffled[n] != own[n] for n in own)  # every task gets another task's Definition
    assert shuffled == ablated_descriptions("shuffled", TASKS, seed=3)  # seeded
    category = {t.definition: t.category for t in TASKS}
    assert all(category[shuffled[t.name]] != t.category for t in TASKS)  # and of another category
    assert set(ablated_descriptions("empty", TASKS).values()) == {""}
    rand = ablated_descriptions("random_text", TASKS, seed=0)
    vocab = {w for t in TASKS for w in t.definition.split()}
    for t in TASKS:
        assert len(rand[t.name].split()) == len(t.definition.split()) and set(rand[t.name].split()) <= vocab
        assert rand[t.name] != t.definition
    assert ablated_descriptions("category", TASKS)["task1"] == "Question Answering"
    para = ablated_descriptions("paraphrase", TASKS, paraphrases={"task2": ["p0", "p1"], "other": ["x"]},
                                paraphrase_index=1)
    assert para == {"task2": "p1"}  # only covered tasks
    with pytest.raises(ValueError, match="unknown ablation"):
        ablated_descriptions("nope", TASKS)


def test_read_paraphrases_and_bad_rows(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl.gz"
    with gzip.open(good, "wt") as f:
        f.write(json.dumps({"task": "task1", "descriptions": ["a", " ", "b"]}) + "\n")
    assert read_paraphrases(good) == {"task1": ["a", "b"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task": "task1", "descriptions": "not a list"}) + "\n")
    with pytest.raises(DataError, match="descriptions"):
        read_paraphrases(bad)


def _phrasings(rules: dict[int, int]) -> list[Task]:
    """Tasks that are phrasings of rules (``{rule: phrasings}``), all of one category, as in the synthetic suite."""
    return [Task(name=f"r{r}p{p}", definition=f"rule {r} in words {p}", instances=(), categories=("Synthetic",),
                 meta={"rule": r}) for r, n in rules.items() for p in range(n)]


@pytest.mark.parametrize("seed", range(6))
def test_the_shuffled_control_never_gives_a_task_another_phrasing_of_its_own_rule(seed: int) -> None:
    tasks = _phrasings({r: 2 for r in range(8)})  # the mechanism suite's test split: 2 phrasings of 8 rules
    given = donors(tasks, np.random.default_rng(seed))
    rule = {t.name: t.meta["rule"] for t in tasks}
    assert set(given) == set(rule) and sorted(given.values()) == sorted(rule)  # each description used once
    assert all(rule[t] != rule[d] for t, d in given.items())
    texts = ablated_descriptions("shuffled", tasks, seed=seed)
    assert all(texts[t.name] != t.definition and texts[t.name].split()[1] != str(t.meta["rule"]) for t in tasks)


def test_the_shuffled_control_draws_when_one_group_is_most_tasks_and_gives_none_for_one_group() -> None:
    tasks = _phrasings({0: 5, 1: 1, 2: 1})  # rule 0 is more than half: no permutation can avoid it
    given = donors(tasks, np.random.default_rng(0))
    assert set(given) == {t.name for t in tasks}
    assert all(control_group(t) != control_group(next(u for u in tasks if u.name == given[t.name])) for t in tasks)
    assert donors(_phrasings({0: 3}), np.random.default_rng(0)) == {}
    assert control_group(TASKS[0]) == "category:Sentiment_Analysis" and control_group(tasks[0]) == "rule:0"
