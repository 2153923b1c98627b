"""promoe.analysis.resample: bootstraps over test tasks resample whole groups of related tasks where a run names
them, and the task-level draws, number for number, where it does not."""

from __future__ import annotations

import numpy as np
import pytest

from promoe.analysis.resample import cluster_se, resample
from promoe.analysis.stats import bootstrap_ci, min_detectable_effect, paired_test, share_recovered


def _twins(n_groups: int = 10, seed: int = 0) -> tuple[dict[str, float], dict[str, str]]:
    """Each group's two tasks score the same (two phrasings of one rule, answered alike)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 10, n_groups)
    scores = {f"g{g}_p{p}": float(values[g]) for g in range(n_groups) for p in range(2)}
    return scores, {t: f"rule:{t.split('_')[0]}" for t in scores}


def test_groups_are_drawn_whole() -> None:
    scores, groups = _twins()
    draws = resample(sorted(scores), groups, n_boot=200, seed=0)
    assert (draws.unit, draws.n_units) == ("group", 10)
    c = draws.counts
    assert np.array_equal(c[:, 0::2], c[:, 1::2])  # a group's tasks are in a resample together
    assert (c.sum(axis=1) == 20).all()


def test_related_tasks_widen_the_interval() -> None:
    """Twenty tasks that are ten pairs of twins carry the information of ten: the task-level interval is too
    narrow by about sqrt(2), the group-level one is as wide as that of the ten groups alone."""
    scores, groups = _twins()
    tasks = bootstrap_ci(scores, n_boot=4000)
    grouped = bootstrap_ci(scores, n_boot=4000, groups=groups)
    ten = bootstrap_ci({k: v for k, v in scores.items() if k.endswith("_p0")}, n_boot=4000)
    width = {k: ci["high"] - ci["low"] for k, ci in (("tasks", tasks), ("grouped", grouped), ("ten", ten))}
    assert width["grouped"] == pytest.approx(width["ten"], rel=0.1)
    assert width["grouped"] > 1.25 * width["tasks"]
    assert (tasks["unit"], grouped["unit"], grouped["n_units"], grouped["n_tasks"]) == ("task", "group", 10, 20)


def test_paired_test_resamples_groups_and_its_mde_counts_them() -> None:
    scores, groups = _twins()
    zero = dict.fromkeys(scores, 0.0)
    t_tasks, t_groups = paired_test(scores, zero, n_boot=2000), paired_test(scores, zero, n_boot=2000, groups=groups)
    assert t_tasks["diff"] == t_groups["diff"] and t_groups["unit"] == "group" and t_groups["n_units"] == 10
    assert t_groups["high"] - t_groups["low"] > 1.25 * (t_tasks["high"] - t_tasks["low"])
    # the MDE of ten independent groups, not of twenty independent tasks
    ten = [v for k, v in scores.items() if k.endswith("_p0")]
    assert t_groups["mde"] == pytest.approx(min_detectable_effect(float(np.std(ten, ddof=1)), 10), rel=0.06)
    assert t_groups["mde"] > 1.3 * t_tasks["mde"]


def test_tasks_on_their_own_give_the_task_level_numbers() -> None:
    """Singleton groups (and runs without groups) draw exactly what the task-level bootstrap drew before."""
    rng = np.random.default_rng(1)
    a = {f"t{i}": float(rng.uniform(0, 60)) for i in range(15)}
    b = {f"t{i}": float(rng.uniform(0, 60)) for i in range(15)}
    alone = {t: f"task:{t}" for t in a}
    assert paired_test(a, b, n_boot=500, groups=alone) == paired_test(a, b, n_boot=500)
    idx = np.random.default_rng(0).integers(0, 15, size=(500, 15), dtype=np.int32)  # the draws before groups
    x = np.array([a[k] for k in sorted(a)])
    low, high = np.percentile(x[idx].mean(axis=1), [2.5, 97.5])
    ci = bootstrap_ci(a, n_boot=500)
    assert (ci["low"], ci["high"], ci["unit"]) == (pytest.approx(low), pytest.approx(high), "task")
    d = x - np.array([b[k] for k in sorted(b)])
    assert cluster_se(d, sorted(a), alone) == pytest.approx(d.std(ddof=1) / np.sqrt(15))


def test_a_single_group_tests_nothing() -> None:
    """All tasks in one group: one independent draw, no test (p 1) and no MDE, however far apart the rows are."""
    a = {f"t{i}": 10.0 + i for i in range(6)}
    b = dict.fromkeys(a, 0.0)
    t = paired_test(a, b, n_boot=200, groups=dict.fromkeys(a, "source:one"))
    assert (t["p_bootstrap"], t["mde"], t["n_units"]) == (1.0, None, 1)
    share = share_recovered(dict.fromkeys(a, 5.0), b, a, n_boot=200, groups=dict.fromkeys(a, "source:one"))
    assert share["share"] is None and not share["headroom_detected"]
