"""Whether routing finds each task's own expert, with specialised experts (expert ``c`` was trained on cluster ``c``).

Two measurements from the run's files alone (``experts/clusters.json``, ``task_embeddings.npz``,
``routing/<row>.npz``):

* **Description separability** (clusters with labels of their own, ``meta``: the held-out tasks' clusters are
  known, not read off their descriptions): how many validation and test tasks have their own cluster's centroid
  nearest to their description embedding. A router that reads only that embedding has nothing else to tell the
  clusters apart by, so this says how far the description encoder lets task-level routing generalise to unseen
  phrasings. The validation count is the one to act on; the test count is reported, never selected on.
* **Own-expert routing** per routed row: the test tasks whose most-used expert (routing counts summed over the
  MoE layers) is the expert of their cluster; a task whose counts tie at the top counts as not routed to it
  (uniform mixing chooses no expert).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promoe.analysis.rundata import RunData


@dataclass(frozen=True)
class ClusterRouting:
    method: str
    separable: dict[str, tuple[int, int]]  # split -> (nearest centroid is own cluster, tasks); meta clusters only
    rows: dict[str, tuple[int, int]]  # row -> (test tasks routed mostly to their own expert, test tasks)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cluster_routing(data: RunData) -> ClusterRouting | None:
    """Both measurements (module docstring), or None without clusters with held-out assignments."""
    cl = data.experts.clusters if data.experts is not None else None
    if not cl or not cl.get("test"):
        return None
    separable: dict[str, tuple[int, int]] = {}
    if cl["method"] == "meta" and data.embeddings is not None:
        emb = dict(zip((str(t) for t in data.embeddings["task_names"]), data.embeddings["embeddings"], strict=True))
        cent = _unit(np.asarray(cl["centroids"], dtype=np.float64))
        for split in ("val", "test"):
            tasks = [t for t in cl.get(split) or {} if t in emb]
            if tasks:
                near = (_unit(np.stack([emb[t] for t in tasks]).astype(np.float64)) @ cent.T).argmax(1)
                separable[split] = (int(sum(int(c) == cl[split][t] for t, c in zip(tasks, near, strict=True))),
                                    len(tasks))
    rows: dict[str, tuple[int, int]] = {}
    for row, r in data.routing.items():
        hist = np.asarray(r["task_histograms"], dtype=np.float64)
        if hist.ndim != 3 or hist.shape[-1] != cl["n"]:
            continue
        own = total = 0
        for t, h in zip((str(t) for t in r["task_names"]), hist, strict=True):
            if t not in cl["test"]:
                continue
            load = h.sum(0)
            top = np.flatnonzero(load == load.max())
            own += int(len(top) == 1 and top[0] == cl["test"][t])
            total += 1
        if total:
            rows[row] = (own, total)
    return ClusterRouting(cl["method"], separable, rows) if separable or rows else None


def section(data: RunData) -> list[str]:
    """REPORT.md lines for the specialised-experts section ([] when there is nothing to say)."""
    cr = cluster_routing(data)
    if cr is None:
        return []
    out = []
    if cr.separable:
        out += ["Description separability: the held-out task's own cluster has the nearest centroid to its "
                "description embedding for " + ", ".join(f"{k} of {n} {dict(val='validation', test='test')[s]} tasks"
                                                         for s, (k, n) in cr.separable.items())
                + ". A router reading only this embedding has nothing else to tell the clusters apart by.", ""]
    if cr.rows:
        kind = "own (labelled)" if cr.method == "meta" else "assigned (nearest centroid)"
        out += [f"Own-expert routing: test tasks whose most-used expert is their {kind} cluster's expert — "
                + ", ".join(f"`{m}` {k}/{n}" for m, (k, n) in cr.rows.items()) + ".", ""]
    return out
