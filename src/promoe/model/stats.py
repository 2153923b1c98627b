"""Routing statistics accumulated over forward passes: expert load, entropy, per-task histograms.

:class:`RoutingStats` takes the :class:`~promoe.model.moe.RoutingInfo` list a model returns, with the
attention mask and the task of every example, and keeps counts only (so it is cheap and mergeable).
``summary()`` gives per-layer load, load-balance (coefficient of variation), mean token entropy and
the entropy of the mean routing; ``save(path)`` writes everything as ``.npz``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from promoe.io import write_npz
from promoe.model.moe import RoutingInfo


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of (rows of) a probability vector."""
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=axis)


MIN_WEIGHT = 1e-6
"""Top-k picks with a mixing weight at or below this are not counted as expert use."""


class RoutingStats:
    """Per-layer and per-task expert counts, probability sums and token-entropy sums."""

    def __init__(self, n_layers: int, n_experts: int) -> None:
        self.n_layers, self.n_experts = n_layers, n_experts
        self.load = np.zeros((n_layers, n_experts))  # top-k assignments per expert (those with weight)
        self.prob_sum = np.zeros((n_layers, n_experts))  # summed router probabilities
        self.entropy_sum = np.zeros(n_layers)  # summed per-token routing entropy
        self.tokens = np.zeros(n_layers)
        self.task_load: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((n_layers, n_experts)))

    @torch.no_grad()
    def update(self, routing: list[RoutingInfo], task_keys: list[str]) -> None:
        """Add one batch: ``routing`` from the model (with its masks), ``task_keys`` naming each example's task."""
        for info in routing:
            r = info.router
            b, t, e = r.probs.shape
            keep = torch.ones(b, t, dtype=torch.bool) if info.mask is None else info.mask.bool().cpu()
            # an expert picked by top-k with (next to) no weight is not used: the oracle's one-hot routing picks
            # its expert and, for k > 1, others at weight ~1e-8
            used = (r.weights.float().cpu() > MIN_WEIGHT).float()
            onehot = torch.zeros(b, t, e).scatter_add_(-1, r.indices.cpu(), used)
            onehot = onehot * keep[..., None]
            probs = r.probs.float().cpu() * keep[..., None]
            ent = -(r.probs.float().cpu().clamp_min(1e-12).log() * r.probs.float().cpu()).sum(-1) * keep
            self.load[info.layer] += onehot.sum((0, 1)).numpy()
            self.prob_sum[info.layer] += probs.sum((0, 1)).numpy()
            self.entropy_sum[info.layer] += ent.sum().item()
            self.tokens[info.layer] += keep.sum().item()
            per_example = onehot.sum(1).numpy()  # (B, E)
            for i, key in enumerate(task_keys):
                self.task_load[key][info.layer] += per_example[i]

    def state(self) -> dict:
        """Plain counts (for gathering across processes)."""
        return {"load": self.load, "prob_sum": self.prob_sum, "entropy_sum": self.entropy_sum,
                "tokens": self.tokens, "task_load": dict(self.task_load)}

    def merge(self, state: dict) -> None:
        """Add the counts of another :meth:`state` (e.g. another process's share of the test set)."""
        for key in ("load", "prob_sum", "entropy_sum", "tokens"):
            setattr(self, key, getattr(self, key) + state[key])
        for task, load in state["task_load"].items():
            self.task_load[task] += load

    def summary(self) -> dict[str, list[float]]:
        """Per layer: normalised load, load CV (0 = balanced), mean token entropy, entropy of mean probs."""
        tokens = np.maximum(self.tokens, 1)[:, None]
        load = self.load / np.maximum(self.load.sum(1, keepdims=True), 1)
        mean_probs = self.prob_sum / tokens
        return {
            "load": load.tolist(),
            "load_cv": (load.std(1) / np.maximum(load.mean(1), 1e-12)).tolist(),
            "token_entropy": (self.entropy_sum / tokens[:, 0]).tolist(),
            "mean_routing_entropy": entropy(mean_probs).tolist(),
            "max_entropy": float(np.log(self.n_experts)),
        }

    def task_histograms(self) -> tuple[list[str], np.ndarray]:
        """Task names and their normalised expert histograms (n_tasks, n_layers, n_experts)."""
        keys = sorted(self.task_load)
        if not keys:
            return [], np.zeros((0, self.n_layers, self.n_experts))
        h = np.stack([self.task_load[k] for k in keys])
        return keys, h / np.maximum(h.sum(-1, keepdims=True), 1)

    def save(self, path: str | Path) -> None:
        """Write counts, summary and per-task histograms to ``path`` (.npz, no pickled objects, atomically)."""
        keys, hist = self.task_histograms()
        s = self.summary()
        write_npz(path, load=self.load, prob_sum=self.prob_sum, entropy_sum=self.entropy_sum,
                  tokens=self.tokens, load_cv=np.array(s["load_cv"]),
                  token_entropy=np.array(s["token_entropy"]), task_names=np.array(keys, dtype=str),
                  task_histograms=hist)
