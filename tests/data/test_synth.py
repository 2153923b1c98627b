"""promoe.data.synth: the synthetic word-list suite of the mechanism check — reproducible bytes, valid SNI
records, held-out phrasings of known rules, correct answers, the CLI, and reading it with data.source=files."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from promoe.cli import main
from promoe.config import DataConfig
from promoe.data.prompts import shown_input
from promoe.data.schema import task_from_record
from promoe.data.sources import read_task_package
from promoe.data.splits import load_splits
from promoe.data.synth import N_PHRASINGS, RULES, VOCAB, answer, build_suite, write_suite
from promoe.data.synth_wordings import composed_phrasings
from promoe.errors import DataError

FILES = ("train.jsonl.gz", "test.jsonl.gz", "README.md", "manifest.json")


def _records(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_suite(tmp_path / name, seed=seed, n_instances=5)
    for f in FILES:  # the suite's own files name no folder: the same bytes wherever they are written
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    for f in ("train.jsonl.gz", "test.jsonl.gz"):
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes(), f


def test_every_record_is_a_valid_task_with_correct_answers(tmp_path: Path) -> None:
    m = write_suite(tmp_path, seed=3, n_instances=6)
    assert m["counts"] == {"train_tasks": 32, "train_instances": 192, "test_tasks": 16, "test_instances": 96}
    ids, inputs = [], []
    rules = {r.id: r for r in RULES}
    for split in ("train", "test"):
        records = _records(tmp_path / f"{split}.jsonl.gz")
        tasks = read_task_package(tmp_path / f"{split}.jsonl.gz")  # the package reader, strict
        assert [t.name for t in tasks] == [r["_meta"]["task"] for r in records]
        for rec, task in zip(records, tasks, strict=True):
            assert task_from_record(rec, file=task.path) == task
            rule = rules[rec["_meta"]["rule"]]
            assert rec["_meta"]["split"] == split and task.categories == ("Synthetic",)
            assert task.definition == rule.phrasings[rec["_meta"]["phrasing"]]
            assert rule.id not in task.name and "rule" not in task.definition.lower()
            assert len(task.instances) == 6 and len(task.positive_examples) == 2
            assert all(ex.explanation and ex.output in ex.explanation for ex in task.positive_examples)
            for x in (*task.instances, *task.positive_examples):
                words = x.input.split(" ")
                assert 5 <= len(words) <= 7 and set(words) <= set(VOCAB)
                out = x.outputs[0] if hasattr(x, "outputs") else x.output
                assert out == answer(rule, words)
                # every input tells the rules apart: without the Definition, a model is at chance
                assert len({answer(r, words) for r in RULES}) == len(RULES)
                inputs.append(x.input)
            ids += [i.id for i in task.instances]
    assert len(set(ids)) == len(ids) and len(set(inputs)) == len(inputs)


def test_train_and_test_phrasings_are_disjoint_and_every_rule_is_in_both() -> None:
    suite = build_suite(seed=0, n_instances=1, train_phrasings=4)
    seen = {split: {} for split in suite}
    for split, records in suite.items():
        for rec in records:
            seen[split].setdefault(rec["_meta"]["rule"], set()).add(rec["Definition"][0])
    assert set(seen["train"]) == set(seen["test"]) == {r.id for r in RULES}
    for rule in RULES:
        assert len(seen["train"][rule.id]) == 4 and len(seen["test"][rule.id]) == N_PHRASINGS - 4
        assert not seen["train"][rule.id] & seen["test"][rule.id]
    phrasings = [p for r in RULES for p in r.phrasings]
    assert N_PHRASINGS >= 6 and len(set(phrasings)) == len(phrasings)
    assert not any(r.id in p.lower() for r in RULES for p in r.phrasings)


def test_rules_on_a_hand_checked_input() -> None:
    words = ["cat", "apple", "dog", "cat", "zebra"]
    assert {r.id: answer(r, words) for r in RULES} == {
        "first_word": "cat",
        "last_word": "zebra",
        "first_two": "cat apple",
        "last_two": "cat zebra",
        "first_and_last": "cat zebra",
        "last_and_first": "zebra cat",
        "first_three": "cat apple dog",
        "copy_all": "cat apple dog cat zebra",
    }
    assert words == ["cat", "apple", "dog", "cat", "zebra"]  # the rules do not change their input


def test_rules_tell_apart_every_list_of_distinct_words() -> None:
    """The generator also repeats a word in half of the lists, and keeps only lists where all rules differ."""
    rng = random.Random(0)
    for _ in range(2000):
        words = rng.sample(VOCAB, rng.randint(5, 7))
        assert len({answer(r, words) for r in RULES}) == len(RULES), words


@pytest.mark.parametrize("kwargs", [{"train_phrasings": 0}, {"train_phrasings": N_PHRASINGS},
                                    {"n_instances": 0}])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(DataError):
        write_suite(tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()


def test_cli_writes_the_suite_and_refuses_a_foreign_folder(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "suite"
    assert main(["data", "synth", "--out", str(out), "--instances", "3", "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert f"data.train_files=[{out}/train.jsonl.gz] data.test_files=[{out}/test.jsonl.gz]" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["counts"]["test_instances"] == 16 * 3
    # an earlier suite is replaced
    assert main(["data", "synth", "--out", str(out), "--instances", "2", "--train-phrasings", "5"]) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["test_tasks"] == 8
    # a non-empty folder that is not a suite is left as it is
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["data", "synth", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert str(foreign) in err and "not empty" in err and "new or empty folder" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_training_tasks_carry_composed_phrasings_of_their_rule_and_never_a_hand_written_one() -> None:
    suite = build_suite(seed=0, n_instances=2, paraphrases=24)
    hand = {p for r in RULES for p in r.phrasings}
    rule_of: dict[str, str] = {}
    for rec in suite["train"]:
        texts = rec["Paraphrases"]
        assert len(set(texts)) == 24 and not set(texts) & hand
        assert task_from_record(rec, file="x").paraphrases == tuple(texts)
        for t in texts:  # a wording is of one rule only
            assert rule_of.setdefault(t, rec["_meta"]["rule"]) == rec["_meta"]["rule"]
    assert all("Paraphrases" not in rec for rec in suite["test"])
    many = composed_phrasings("first_word", RULES[0].phrasings, 500, random.Random(0))
    assert len(set(many)) == 500 and {t.split()[0] for t in many} >= {"Output", "Return", "Copy"}
    # the instances do not depend on the phrasings drawn
    plain = build_suite(seed=0, n_instances=2, paraphrases=0)
    assert [r["Instances"] for r in plain["train"]] == [r["Instances"] for r in suite["train"]]
    assert all("Paraphrases" not in rec for rec in plain["train"])


def test_load_splits_reads_the_suite(tmp_path: Path) -> None:
    write_suite(tmp_path, seed=0, n_instances=4)
    splits = load_splits(DataConfig(source="files", train_files=[str(tmp_path / "train.jsonl.gz")],
                                    test_files=[str(tmp_path / "test.jsonl.gz")], val_tasks=2))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 2, 16)
    # validation is carved from the training tasks (training phrasings); test tasks keep every instance
    assert all(t.meta["split"] == "train" for t in splits.train + splits.val)
    assert all(t.meta["phrasing"] >= 4 and len(t.instances) == 4 for t in splits.test)
    assert {t.meta["rule"] for t in splits.test} == {r.id for r in RULES}


def test_source_synth_is_the_written_suite_with_one_held_out_phrasing_per_rule(tmp_path: Path) -> None:
    write_suite(tmp_path, seed=3, n_instances=5)
    files = load_splits(DataConfig(source="files", train_files=[str(tmp_path / "train.jsonl.gz")],
                                   test_files=[str(tmp_path / "test.jsonl.gz")], val_tasks=8))
    synth = load_splits(DataConfig(source="synth", split_seed=3, synth_instances=5, val_tasks=8))
    def same(t):
        return t.name, t.definition, t.instances, t.positive_examples, t.meta["rule"]

    assert [same(t) for t in synth.test] == [same(t) for t in files.test]
    assert sorted(t.name for t in synth.train + synth.val) == sorted(t.name for t in files.train + files.val)
    # validation mirrors the test split: an unseen phrasing of every rule, the last training one
    assert sorted(t.meta["rule"] for t in synth.val) == sorted(r.id for r in RULES)
    assert {t.meta["phrasing"] for t in synth.val} == {3} and {t.meta["phrasing"] for t in synth.train} == {0, 1, 2}
    two = load_splits(DataConfig(source="synth", synth_instances=2, val_tasks=9))
    assert {t.meta["phrasing"] for t in two.val} == {2, 3} and len(two.train) == 2 * len(RULES)
    with pytest.raises(DataError, match="data.val_tasks=32 holds out 4 of the 4"):
        load_splits(DataConfig(source="synth", synth_instances=2, val_tasks=32))


def test_no_synthetic_instance_is_a_demonstration() -> None:
    # every input is drawn once in the whole suite, so no scored instance is a positive example's input as a
    # prompt shows it (were one, load_splits would drop it and record a demonstration_input quirk)
    suite = build_suite(seed=0, n_instances=50)
    for rec in suite["train"] + suite["test"]:
        shown = {shown_input(ex["input"]) for ex in rec["Positive Examples"]}
        assert not shown & {shown_input(i["input"]) for i in rec["Instances"]}, rec["_meta"]["task"]
    splits = load_splits(DataConfig(source="synth", synth_instances=50, val_tasks=8))
    assert splits.quirks == [] and all(len(t.instances) == 50 for t in splits.test)
