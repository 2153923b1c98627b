"""The resampling unit of every bootstrap over test tasks: the task, or the group of related tasks.

Tasks of one group (:mod:`promoe.data.groups`: phrasings of one synthetic rule, SNI tasks of one source dataset)
are correlated draws, so where a run names groups (``splits.json``'s ``test_groups``) a bootstrap draws whole
groups with replacement and each resample holds every task of every drawn group (a cluster bootstrap); its
mean is still the mean over the tasks it holds. Where every task is its own group (runs from before the groups
were written, or tasks that share nothing), the draws are the task-level ones, number for number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TASK, GROUP = "task", "group"
"""The two resampling units, as significance.json names them (``unit``)."""


def boot_index(n_boot: int, n: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement; the same seed gives the same draws."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n), dtype=np.int32)


def group_ids(keys: list[str], groups: dict[str, str] | None) -> tuple[np.ndarray, int]:
    """Each key's group index (groups numbered in order of first appearance; a key no group names is its own
    group) and the number of groups."""
    index: dict[str, int] = {}
    ids = [index.setdefault((groups or {}).get(k, f"task:{k}"), len(index)) for k in keys]
    return np.array(ids, dtype=np.int64), len(index)


@dataclass(frozen=True)
class Resampling:
    """The bootstrap resamples of ``n`` sorted tasks: task indices (unit ``task``) or, for groups, how many
    times each task is in each resample (unit ``group``)."""

    unit: str
    n_units: int
    index: np.ndarray | None = None  # (n_boot, n) task indices
    counts: np.ndarray | None = None  # (n_boot, n) multiplicity of each task

    def means(self, x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """(n_boot,) resampled means of ``x``, weighted by ``w`` when given."""
        if self.index is not None:
            if w is None:
                return x[self.index].mean(axis=1)
            wb = w[self.index]
            return (wb * x[self.index]).sum(axis=1) / np.maximum(wb.sum(axis=1), 1e-300)
        c = self.counts if w is None else self.counts * w
        return (c * x).sum(axis=1) / np.maximum(c.sum(axis=1), 1e-300)

    def info(self) -> dict:
        """What significance.json records of it: ``{"unit", "n_units"}``."""
        return {"unit": self.unit, "n_units": self.n_units}


def resample(keys: list[str], groups: dict[str, str] | None, *, n_boot: int, seed: int) -> Resampling:
    """The resamples of ``keys`` (sorted task names): whole groups where ``groups`` joins any two of them."""
    gid, n_groups = group_ids(keys, groups)
    if n_groups == len(keys):
        return Resampling(TASK, len(keys), index=boot_index(n_boot, len(keys), seed))
    draws = boot_index(n_boot, n_groups, seed)
    per_group = np.bincount((draws + n_groups * np.arange(n_boot)[:, None]).ravel(),
                            minlength=n_boot * n_groups).reshape(n_boot, n_groups)
    return Resampling(GROUP, n_groups, counts=per_group[:, gid].astype(np.float64))


def unit_means(d: np.ndarray, keys: list[str], groups: dict[str, str] | None) -> np.ndarray:
    """Each unit's mean of ``d``: per task where tasks are their own groups, else per group."""
    gid, n = group_ids(keys, groups)
    return np.bincount(gid, weights=d, minlength=n) / np.bincount(gid, minlength=n)


def cluster_se(d: np.ndarray, keys: list[str], groups: dict[str, str] | None) -> float | None:
    """Standard error of the mean of ``d`` over tasks with groups as independent units (the cluster-robust
    ``sqrt(G/(G-1) · Σ_g (S_g − n_g·mean)²) / n``; ``sd / sqrt(n)`` when every task is its own group); None
    below two groups."""
    gid, n_groups = group_ids(keys, groups)
    if n_groups < 2:
        return None
    resid = np.bincount(gid, weights=d, minlength=n_groups) - np.bincount(gid, minlength=n_groups) * d.mean()
    return math.sqrt(n_groups / (n_groups - 1) * float((resid ** 2).sum())) / len(d)
