"""Every statistic of the analysis (numpy + scipy, deterministic per seed), free of run folders and rows.

Over tasks: the unit of resampling is the *task*, or the *group* of related tasks where the run names
groups (:mod:`promoe.analysis.resample`): test tasks (or their groups) are the independent draws the
experiment's claims generalise over, and instances of one task are correlated. :func:`bootstrap_ci`,
:func:`paired_test` take per-task scores (``{task: score}``, e.g. ``score()["per_task"][t]["rougeL"]``)
and optional ``groups`` (``{task: group}``) and return plain floats, ready for JSON, with the ``unit`` they
resampled and how many (``n_units``); :func:`holm` adjusts a family of p values;
:func:`aggregate_seeds` summarises one number over seeds.

Routing against descriptions: inputs are a run's ``routing/<row>.npz`` (``task_histograms``
(n_tasks, n_layers, n_experts): each test task's normalised expert-selection histogram per MoE layer)
and ``task_embeddings.npz`` (L2-normalised description embeddings). A task's *routing policy* is its
flattened histogram; two tasks' routing similarity is the cosine of their policies, their description
similarity the cosine of their embeddings. :func:`routing_similarity` gives Spearman rho between the
two over task pairs with a Mantel permutation p value (:func:`mantel_spearman`: pairs share tasks, so
they are not independent draws and the usual Spearman p value would be too small), and the mean
routing similarity of same- and different-category pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from promoe.analysis.resample import cluster_se, resample, unit_means

UNKNOWN = "(unknown)"
"""The category of a task no file names."""


def _values(per_task: dict[str, float], what: str) -> tuple[list[str], np.ndarray]:
    if not per_task:
        raise ValueError(f"{what}: needs at least one task score")
    keys = sorted(per_task)
    return keys, np.array([float(per_task[k]) for k in keys])


def bootstrap_ci(
    per_task: dict[str, float],
    *,
    n_boot: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    weights: dict[str, float] | None = None,
    groups: dict[str, str] | None = None,
) -> dict:
    """Percentile bootstrap CI of the mean task score, resampling tasks (or, with ``groups``, whole groups of
    tasks) with replacement.

    With ``weights`` (e.g. each task's instance count) the statistic is the weighted mean, so the
    interval is a task-level (cluster) bootstrap of the official instance-level mean.
    Returns ``{"mean", "low", "high", "n_tasks", "unit", "n_units"}``; constant scores give exactly ``[x, x]``.
    """
    keys, x = _values(per_task, "bootstrap_ci")
    draws = resample(keys, groups, n_boot=n_boot, seed=seed)
    if weights is None:
        mean = float(x.mean())
        boot = draws.means(x)
    else:
        w = np.array([float(weights[k]) for k in keys])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("bootstrap_ci: weights must be non-negative with a positive sum")
        mean = float((w * x).sum() / w.sum())
        boot = draws.means(x, w)
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # Any resampled mean lies within [min, max]; clipping only removes float rounding.
    lo, hi = float(x.min()), float(x.max())
    return {"mean": min(max(mean, lo), hi), "low": float(np.clip(low, lo, hi)),
            "high": float(np.clip(high, lo, hi)), "n_tasks": len(x), **draws.info()}


def min_detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest true mean difference a two-sided paired t test at level ``alpha`` detects with probability
    ``power``, given per-task differences of standard deviation ``sd`` over ``n`` tasks:
    ``(t[1-alpha/2, n-1] + t[power, n-1]) · sd / sqrt(n)`` (None below 2 tasks)."""
    if n < 2:
        return None
    return mde_of_se(sd / math.sqrt(n), n - 1, alpha=alpha, power=power)


def mde_of_se(se: float, df: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable effect of a two-sided t test of a mean with standard error ``se`` and ``df``
    degrees of freedom: ``(t[1-alpha/2, df] + t[power, df]) · se``."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def paired_test(
    a: dict[str, float], b: dict[str, float], *, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05,
    power: float = 0.8, groups: dict[str, str] | None = None,
) -> dict:
    """Paired comparison of two models over the tasks both were scored on.

    ``diff`` is the mean of ``a - b``; ``low``/``high`` its percentile bootstrap CI (tasks resampled, or whole
    groups of tasks with ``groups``: ``unit``, ``n_units``); ``p_bootstrap`` = min(1, 2·min(P(diff* ≤ 0),
    P(diff* ≥ 0))) over the bootstrap means (0 means below 1/n_boot; 1 with a single unit, where nothing can
    be tested); ``p_wilcoxon`` the two-sided Wilcoxon signed-rank p value over the units' mean differences
    (tasks, or groups) (1.0 when every difference is zero); ``wins``/``losses``/``ties`` count tasks where
    ``a`` is above/below/equal; ``sd_diff`` the standard deviation of the per-task differences and ``mde``
    the minimum detectable effect: the true difference a two-sided test at ``alpha`` detects with
    probability ``power`` (:func:`min_detectable_effect`; with groups from the cluster-robust standard
    error over ``n_units − 1`` degrees of freedom). What the data rule out is read from the CI's bounds,
    not from the MDE: a CI spanning 0 rules out differences beyond its ends; the MDE says how large a
    difference the test was likely to catch.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("paired_test: the two models share no task")
    d = np.array([float(a[k]) - float(b[k]) for k in common])
    draws = resample(common, groups, n_boot=n_boot, seed=seed)
    boot = draws.means(d)
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    p_boot = min(1.0, 2.0 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    units = unit_means(d, common, groups)
    p_wil = 1.0 if np.all(units == 0) else float(stats.wilcoxon(units, alternative="two-sided").pvalue)
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    if draws.n_units == len(d):
        mde = min_detectable_effect(sd, len(d), alpha=alpha, power=power)
    else:
        se = cluster_se(d, common, groups)
        mde = None if se is None else mde_of_se(se, draws.n_units - 1, alpha=alpha, power=power)
    return {
        "diff": float(d.mean()), "low": float(low), "high": float(high),
        "p_bootstrap": p_boot if draws.n_units > 1 else 1.0, "p_wilcoxon": p_wil,
        "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum()),
        "n_tasks": len(d), "sd_diff": sd, "mde": mde, **draws.info(),
    }


def share_recovered(row: dict[str, float], floor: dict[str, float], ceiling: dict[str, float], *,
                    n_boot: int = 10000, seed: int = 0, alpha: float = 0.05,
                    groups: dict[str, str] | None = None) -> dict:
    """How much of the headroom ``ceiling − floor`` the ``row`` recovers, over the tasks all three share:
    ``share = mean(row − floor) / mean(ceiling − floor)`` with a percentile bootstrap CI (tasks, or groups,
    resampled; resamples whose headroom is 0 are dropped).

    A ratio whose denominator's interval crosses 0 has no meaningful interval (its resamples run off to
    ± infinity), so the share is given only where the headroom's own bootstrap CI over the same tasks and
    resamples excludes 0 (``headroom_detected``); elsewhere ``share``, ``low`` and ``high`` are None.
    """
    common = sorted(set(row) & set(floor) & set(ceiling))
    if not common:
        raise ValueError("share_recovered: the three rows share no task")
    gain = np.array([row[t] - floor[t] for t in common])
    room = np.array([ceiling[t] - floor[t] for t in common])
    draws = resample(common, groups, n_boot=n_boot, seed=seed)
    num, den = draws.means(gain), draws.means(room)
    room_low, room_high = np.percentile(den, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    detected = bool(room.mean() != 0 and draws.n_units > 1 and (room_low > 0 or room_high < 0))
    out = {"share": None, "low": None, "high": None, "n_tasks": len(common), "headroom_detected": detected,
           **draws.info()}
    if detected:
        ratio = num[den != 0] / den[den != 0]
        low, high = np.percentile(ratio, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out |= {"share": float(gain.mean() / room.mean()), "low": float(low), "high": float(high)}
    return out


def aggregate_seeds(values: list[float], *, alpha: float = 0.05) -> dict:
    """Mean, sample std and Student-t interval of one number across seeds (n=1: low = high = mean)."""
    if not values:
        raise ValueError("aggregate_seeds: needs at least one value")
    x = np.asarray(values, dtype=float)
    n, mean = len(x), float(x.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "low": mean, "high": mean, "n": 1}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(1 - alpha / 2, df=n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "n": n}


def holm(p: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p values of one family of tests (step-down, monotone, capped at 1)."""
    out, running = {}, 0.0
    for k, name in enumerate(sorted(p, key=lambda n: p[n])):
        running = max(running, min(1.0, (len(p) - k) * p[name]))
        out[name] = running
    return out


# ------------------------------------------------------------------------ routing vs descriptions


@dataclass
class TaskSimilarity:
    """Pairwise cosine similarities of the tasks one row routed that also have a description embedding."""

    tasks: list[str]
    routing: np.ndarray  # (n, n) cosine of flattened task histograms
    description: np.ndarray  # (n, n) cosine of description embeddings
    categories: list[str]

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Over task pairs i < j: routing sims, description sims, same-category and known-category masks."""
        i, j = np.triu_indices(len(self.tasks), 1)
        cats = np.array(self.categories, dtype=object)
        known = (cats[i] != UNKNOWN) & (cats[j] != UNKNOWN)
        return self.routing[i, j], self.description[i, j], known & (cats[i] == cats[j]), known


def _cosine(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.clip(x @ x.T, -1.0, 1.0)


def kept_indices(names: list[str], keep: set[str] | None) -> list[int]:
    """Indices of ``names`` in ``keep`` (all of them when ``keep`` is unknown or matches none)."""
    idx = [i for i, t in enumerate(names) if keep is None or t in keep]
    return idx or list(range(len(names)))


def task_similarity(routing: dict[str, np.ndarray], embeddings: dict[str, np.ndarray], task_cat: dict[str, str],
                    keep: set[str] | None = None) -> TaskSimilarity | None:
    """Similarities over the tasks in both files (and in ``keep``, the test tasks); None below 3 tasks."""
    names = [str(t) for t in routing["task_names"]]
    emb_index = {str(t): i for i, t in enumerate(embeddings["task_names"])}
    idx = [i for i in kept_indices(names, keep) if names[i] in emb_index]
    if len(idx) < 3:
        return None
    tasks = [names[i] for i in idx]
    return TaskSimilarity(tasks=tasks, routing=_cosine(routing["task_histograms"][idx]),
                          description=_cosine(embeddings["embeddings"][[emb_index[t] for t in tasks]]),
                          categories=[task_cat.get(t, UNKNOWN) for t in tasks])


def mantel_spearman(a: np.ndarray, b: np.ndarray, *, n_perm: int, seed: int = 0) -> tuple[float | None, float | None]:
    """Spearman rho of two symmetric (n, n) similarity matrices over pairs i < j, and its two-sided
    Mantel p value (tasks' labels permuted in one matrix; (hits + 1) / (n_perm + 1)). None when
    either matrix is constant over the pairs, e.g. a router that sends every task the same way."""
    n = len(a)
    i, j = np.triu_indices(n, 1)
    # Rounding first: float noise must not rank equal similarities (e.g. uniform routing's) apart.
    ra, rb = stats.rankdata(np.round(a[i, j], 10)), stats.rankdata(np.round(b[i, j], 10))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return None, None
    za, zb = (ra - ra.mean()) / ra.std(), (rb - rb.mean()) / rb.std()
    rho = float(za @ zb / len(za))
    # Relabelling tasks permutes which pair holds which rank, so ranks are computed once.
    z = np.zeros((n, n))
    z[i, j] = za
    z += z.T
    rng, hits, chunk = np.random.default_rng(seed), 0, max(1, 2_000_000 // len(za))
    for start in range(0, n_perm, chunk):
        perm = rng.permuted(np.tile(np.arange(n), (min(chunk, n_perm - start), 1)), axis=1)
        null = z[perm[:, i], perm[:, j]] @ zb / len(za)
        hits += int((np.abs(null) >= abs(rho) - 1e-12).sum())
    return rho, (hits + 1) / (n_perm + 1)


def routing_similarity(routing: dict[str, dict[str, np.ndarray]], embeddings: dict[str, np.ndarray] | None,
                       task_cat: dict[str, str], *, keep: set[str] | None = None, n_perm: int = 1000,
                       seed: int = 0) -> dict[str, dict]:
    """Per routing row: ``{spearman_rho, p, same_category_mean, diff_category_mean, n_tasks, n_pairs}``
    (``p`` is the Mantel permutation p value; rho and p are None when either similarity is constant over
    the pairs, e.g. for uniform routing)."""
    if embeddings is None:
        return {}
    out = {}
    for m, r in routing.items():
        sim = task_similarity(r, embeddings, task_cat, keep)
        if sim is None:
            continue
        rho, p = mantel_spearman(sim.routing, sim.description, n_perm=n_perm, seed=seed)
        route, _, same, known = sim.pairs()
        diff = known & ~same
        out[m] = {"spearman_rho": rho, "p": p,
                  "same_category_mean": float(route[same].mean()) if same.any() else None,
                  "diff_category_mean": float(route[diff].mean()) if diff.any() else None,
                  "n_tasks": len(sim.tasks), "n_pairs": len(route)}
    return out
