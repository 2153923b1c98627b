"""promoe.data.protocol: training-task selection, validation carving and test tasks, on tiny records."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from promoe.data.protocol import build_test_tasks, carve_validation, drop_demonstrated
from promoe.data.schema import Example, Instance, QuirkLog, Task, task_from_record
from tests.data.helpers import _candidates, _meta_export, _record, _select, _task

# --------------------------------------------------------------------------------------------------
# selection and validation

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


# --------------------------------------------------------------------------------------------------
# test tasks

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


def test_an_instance_a_demonstration_shows_is_never_scored() -> None:
    # upstream task1531: Instances[63] is its 4th positive example's input with a trailing space
    task = replace(_task("task001_demo", n=0), positive_examples=(
        Example("Hello there!", "greeting"), Example("How are you?", "question"), Example("Fine thanks", "reply")))
    instances = (Instance("a", "How are you? ", ("question",)),   # the trailing space: same prompt text
                 Instance("b", "How  are\nyou?", ("question",)),  # whitespace runs
                 Instance("c", "Fine thanks.", ("reply",)),        # the full stop the prompt adds anyway
                 Instance("d", "How are you", ("question",)),      # shown as "How are you.": another text
                 Instance("e", "hello there!", ("greeting",)),     # another case: another text
                 Instance("f", "Hello there!", ("greeting",), origin="positive_example"))  # scored as itself
    quirks = QuirkLog()
    (kept,) = drop_demonstrated([replace(task, instances=instances)], quirks)
    assert [i.id for i in kept.instances] == ["d", "e", "f"]
    assert [(q.task, q.kind, q.where) for q in quirks.quirks] == [
        ("task001_demo", "demonstration_input", "Instances[0] (a) = Positive Examples[1]"),
        ("task001_demo", "demonstration_input", "Instances[1] (b) = Positive Examples[1]"),
        ("task001_demo", "demonstration_input", "Instances[2] (c) = Positive Examples[2]")]
    untouched = replace(task, instances=instances[3:])
    assert drop_demonstrated([untouched], QuirkLog()) == [untouched]


def test_validation_spreads_over_labelled_rules_before_categories() -> None:
    """Phrasings of one rule (``_meta.rule``) in one category: each rule gives one task before any gives two, and
    keeps at least one for training."""
    pool = [_task(f"r{r}_p{p}", meta={"rule": f"rule{r}"}) for r in range(8) for p in range(4)]
    for seed in range(5):
        train, val = carve_validation(pool, 8, seed=seed)
        assert sorted(t.meta["rule"] for t in val) == [f"rule{r}" for r in range(8)]
        assert {t.meta["rule"] for t in train} == {f"rule{r}" for r in range(8)}
    assert all(t.meta["rule"] for t in carve_validation(pool, 20, seed=0)[0])
    assert len({t.meta["rule"] for t in carve_validation(pool, 20, seed=0)[0]}) == 8
