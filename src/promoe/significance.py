"""Confidence intervals and paired tests over tasks (numpy + scipy, deterministic per seed).

The unit of resampling is the *task*: test tasks are the independent draws the experiment's claims
generalise over, and instances of one task are correlated. Every function here takes per-task scores
(``{task: score}``, e.g. ``score()["per_task"][t]["rougeL"]``) and returns plain floats, ready for JSON.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _values(per_task: dict[str, float], what: str) -> tuple[list[str], np.ndarray]:
    if not per_task:
        raise ValueError(f"{what}: needs at least one task score")
    keys = sorted(per_task)
    return keys, np.array([float(per_task[k]) for k in keys])


def _boot_index(n_boot: int, n: int, seed: int) -> np.ndarray:
    """(n_boot, n) task indices drawn with replacement; the same seed gives the same draws."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n), dtype=np.int32)


def bootstrap_ci(
    per_task: dict[str, float],
    *,
    n_boot: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    weights: dict[str, float] | None = None,
) -> dict:
    """Percentile bootstrap CI of the mean task score, resampling tasks with replacement.

    With ``weights`` (e.g. each task's instance count) the statistic is the weighted mean, so the
    interval is a task-level (cluster) bootstrap of the official instance-level mean.
    Returns ``{"mean", "low", "high", "n_tasks"}``; constant scores give exactly ``[x, x]``.
    """
    keys, x = _values(per_task, "bootstrap_ci")
    idx = _boot_index(n_boot, len(x), seed)
    if weights is None:
        mean = float(x.mean())
        boot = x[idx].mean(axis=1)
    else:
        w = np.array([float(weights[k]) for k in keys])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("bootstrap_ci: weights must be non-negative with a positive sum")
        mean = float((w * x).sum() / w.sum())
        wb = w[idx]
        boot = (wb * x[idx]).sum(axis=1) / np.maximum(wb.sum(axis=1), 1e-300)
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # Any resampled mean lies within [min, max]; clipping only removes float rounding.
    lo, hi = float(x.min()), float(x.max())
    return {"mean": min(max(mean, lo), hi), "low": float(np.clip(low, lo, hi)),
            "high": float(np.clip(high, lo, hi)), "n_tasks": len(x)}


def paired_test(
    a: dict[str, float], b: dict[str, float], *, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Paired comparison of two models over the tasks both were scored on.

    ``diff`` is the mean of ``a - b``; ``low``/``high`` its percentile bootstrap CI (tasks resampled);
    ``p_bootstrap`` = min(1, 2·min(P(diff* ≤ 0), P(diff* ≥ 0))) over the bootstrap means (0 means
    below 1/n_boot); ``p_wilcoxon`` the two-sided Wilcoxon signed-rank p value (1.0 when every
    difference is zero); ``wins``/``losses``/``ties`` count tasks where ``a`` is above/below/equal.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("paired_test: the two models share no task")
    d = np.array([float(a[k]) - float(b[k]) for k in common])
    boot = d[_boot_index(n_boot, len(d), seed)].mean(axis=1)
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    p_boot = min(1.0, 2.0 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    p_wil = 1.0 if np.all(d == 0) else float(stats.wilcoxon(d, alternative="two-sided").pvalue)
    return {
        "diff": float(d.mean()), "low": float(low), "high": float(high),
        "p_bootstrap": p_boot, "p_wilcoxon": p_wil,
        "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum()),
        "n_tasks": len(d),
    }


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
