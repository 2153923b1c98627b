"""promoe.rows.ablations: each description ablation replaces every description with the right text;
paraphrases are read from their package, bad rows refused."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from promoe.errors import DataError
from promoe.rows.ablations import ablated_descriptions, read_paraphrases
from tests.helpers import TASKS


def test_ablations_replace_every_description_with_the_right_text() -> None:
    shuffled = ablated_descriptions("shuffled", TASKS, seed=3)
    own = {t.name: t.definition for t in TASKS}
    assert set(shuffled) == set(own) and sorted(shuffled.values()) == sorted(own.values())
    assert all(shuffled[n] != own[n] for n in own)  # every task gets another task's Definition
    assert shuffled == ablated_descriptions("shuffled", TASKS, seed=3)  # seeded
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
