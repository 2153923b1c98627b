"""promoe.analysis.stats: bootstrap CIs and paired tests over tasks, Holm, seeds, the Mantel test and
routing-vs-description similarity."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from promoe.analysis.rundata import load_run
from promoe.analysis.stats import (
    aggregate_seeds,
    bootstrap_ci,
    holm,
    mantel_spearman,
    min_detectable_effect,
    paired_test,
    routing_similarity,
)
from tests.analysis.helpers import synthetic_run


def _scores(n: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"task{i:03d}": float(rng.uniform(0, 100)) for i in range(n)}


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_contains_mean_and_is_deterministic() -> None:
    s = _scores(40)
    ci = bootstrap_ci(s, seed=3)
    assert ci["n_tasks"] == 40
    assert ci["mean"] == pytest.approx(np.mean(list(s.values())))
    assert ci["low"] < ci["mean"] < ci["high"]
    assert bootstrap_ci(s, seed=3) == ci
    assert bootstrap_ci(s, seed=4) != ci


def test_bootstrap_ci_shrinks_with_more_tasks() -> None:
    small, large = bootstrap_ci(_scores(10)), bootstrap_ci(_scores(200))
    assert large["high"] - large["low"] < 0.6 * (small["high"] - small["low"])


def test_bootstrap_ci_constant_scores_is_a_point() -> None:
    x = 100 / 3
    ci = bootstrap_ci({f"t{i}": x for i in range(17)})
    assert ci["mean"] == ci["low"] == ci["high"] == x


def test_bootstrap_ci_weighted_is_the_instance_mean() -> None:
    s = {"a": 10.0, "b": 50.0, "c": 90.0}
    ci = bootstrap_ci(s, weights={"a": 1, "b": 1, "c": 8})
    assert ci["mean"] == pytest.approx((10 + 50 + 8 * 90) / 10)
    assert ci["low"] <= ci["mean"] <= ci["high"]


def test_bootstrap_ci_is_fast() -> None:
    s = _scores(119)
    bootstrap_ci(s)
    t0 = time.perf_counter()
    bootstrap_ci(s)
    assert time.perf_counter() - t0 < 0.05


# ------------------------------------------------------------------------------------------ paired test


def test_paired_test_identical_models() -> None:
    s = _scores(25)
    t = paired_test(s, dict(s))
    assert t["diff"] == t["low"] == t["high"] == 0.0
    assert t["p_bootstrap"] == 1.0 and t["p_wilcoxon"] == 1.0
    assert (t["wins"], t["losses"], t["ties"], t["n_tasks"]) == (0, 0, 25, 25)


def test_paired_test_clearly_better_model() -> None:
    b = _scores(30)
    a = {k: v + 10 for k, v in b.items()}
    t = paired_test(a, b)
    assert t["diff"] == pytest.approx(10.0)
    assert t["low"] > 0
    assert t["p_bootstrap"] < 0.01 and t["p_wilcoxon"] < 0.01
    assert (t["wins"], t["losses"], t["ties"]) == (30, 0, 0)


def test_paired_test_uses_shared_tasks_only() -> None:
    a = {"t1": 50.0, "t2": 60.0, "only_a": 100.0}
    b = {"t1": 40.0, "t2": 60.0, "only_b": 0.0}
    t = paired_test(a, b)
    assert t["n_tasks"] == 2
    assert t["diff"] == pytest.approx(5.0)
    assert (t["wins"], t["losses"], t["ties"]) == (1, 0, 1)
    with pytest.raises(ValueError, match="share no task"):
        paired_test({"x": 1.0}, {"y": 1.0})


def test_min_detectable_effect_has_its_power() -> None:
    # A true mean difference equal to the MDE is detected by the paired t test in ~80% of simulated experiments,
    # half of it far less often; for many tasks it tends to the normal formula (z_0.975 + z_0.8) sd / sqrt(n).
    rng = np.random.default_rng(0)
    n, sd = 30, 10.0
    mde = min_detectable_effect(sd, n)
    def power(effect: float) -> float:
        d = rng.normal(effect, sd, size=(4000, n))
        return float((stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05).mean())
    assert power(mde) == pytest.approx(0.8, abs=0.03)
    assert power(mde / 2) < 0.4
    assert min_detectable_effect(1.0, 100_000) == pytest.approx((1.959964 + 0.841621) / math.sqrt(100_000), rel=1e-3)
    assert min_detectable_effect(1.0, 1) is None


def test_paired_test_reports_the_sd_of_differences_and_its_mde() -> None:
    a = {f"t{i}": float(i % 5) for i in range(40)}
    b = {f"t{i}": float(i % 3) for i in range(40)}
    r = paired_test(a, b, n_boot=200)
    d = np.array([a[k] - b[k] for k in sorted(a)])
    assert r["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert r["mde"] == pytest.approx(min_detectable_effect(d.std(ddof=1), 40))


def test_holm_matches_hand_computation() -> None:
    # ascending: c 0.01 x 3 = 0.03, a 0.02 x 2 = 0.04, b 0.04 x 1 = 0.04 (never below the one before)
    assert holm({"a": 0.02, "b": 0.04, "c": 0.01}) == pytest.approx({"a": 0.04, "b": 0.04, "c": 0.03})
    assert holm({"a": 0.5, "b": 0.6}) == {"a": 1.0, "b": 1.0}
    assert holm({}) == {}


def test_aggregate_seeds_matches_hand_computation() -> None:
    vals = [30.0, 32.0, 34.0, 36.0]
    mean, std = 33.0, math.sqrt(sum((v - 33.0) ** 2 for v in vals) / 3)
    half = stats.t.ppf(0.975, df=3) * std / 2
    agg = aggregate_seeds(vals)
    assert agg["n"] == 4
    assert agg["mean"] == pytest.approx(mean) and agg["std"] == pytest.approx(std)
    assert agg["low"] == pytest.approx(mean - half) and agg["high"] == pytest.approx(mean + half)
    assert aggregate_seeds([12.5]) == {"mean": 12.5, "std": 0.0, "low": 12.5, "high": 12.5, "n": 1}


# ------------------------------------------------------------------------------------------ routing


def test_mantel_spearman_matches_scipy_and_detects_structure() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 5))
    a = x @ x.T
    b = a + 0.5 * rng.normal(size=a.shape)
    b = (b + b.T) / 2
    i, j = np.triu_indices(20, 1)
    rho, p = mantel_spearman(a, b, n_perm=300)
    assert rho == pytest.approx(stats.spearmanr(a[i, j], b[i, j]).statistic)
    assert rho > 0.5 and p == pytest.approx(1 / 301)
    noise = rng.normal(size=a.shape)
    rho0, p0 = mantel_spearman(a, (noise + noise.T) / 2, n_perm=300)
    assert abs(rho0) < 0.2 and p0 > 0.05
    assert mantel_spearman(np.ones((5, 5)), a[:5, :5], n_perm=10) == (None, None)


def test_routing_follows_the_description_for_description_routed_rows(tmp_path: Path) -> None:
    """promoe, knn, skill, moe route by the description embedding; random and shuffled do not."""
    synthetic_run(tmp_path / "run")
    data = load_run(tmp_path / "run")
    rs = routing_similarity(data.routing, data.embeddings, data.task_categories(), keep=data.test_tasks,
                            n_perm=300)
    assert set(rs) == {"moe", "promoe", "knn", "skill", "uniform", "random", "promoe-shuffled", "promoe-icl"}
    for m in ("moe", "promoe", "knn", "skill"):
        assert rs[m]["spearman_rho"] > 0.3 and rs[m]["p"] < 0.01, m
        assert rs[m]["same_category_mean"] > rs[m]["diff_category_mean"]
        assert rs[m]["n_tasks"] == 24 and rs[m]["n_pairs"] == 24 * 23 // 2  # the train task is left out
    for m in ("random", "promoe-shuffled"):
        assert rs[m]["spearman_rho"] < 0.15, m
    assert rs["uniform"]["spearman_rho"] is None and rs["uniform"]["same_category_mean"] == pytest.approx(1.0)
    assert routing_similarity(data.routing, None, data.task_categories()) == {}
