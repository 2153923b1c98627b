"""How far an ablation moves the routing of the model it ablates: for each ``<model>-<ablation>`` row with routing
(``routing/<row>.npz``), against ``<model>``'s own routing on the test tasks both scored.

Per task, a routing is the per-layer histogram of the experts its tokens went to (``task_histograms``, normalised per
layer). Two numbers per pair of rows:

* **same top expert** — the share of tasks whose most-used expert (counts summed over layers) is the same in both
  (a tie at the top counts as different: uniform mixing chooses no expert);
* **mean distance** — the total-variation distance between the two histograms (0: the same routing, 1: disjoint
  experts), averaged over layers and tasks.

For ``paraphrase`` both should say "the same routing" (a router that reads what a task asks, not its words); for
``shuffled`` they should not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promoe.registry import ABLATED


@dataclass(frozen=True)
class Agreement:
    row: str
    reference: str
    tasks: int
    same_top: float
    mean_distance: float


def _top(hist: np.ndarray) -> int:
    load = hist.sum(0)
    top = np.flatnonzero(load == load.max())
    return int(top[0]) if len(top) == 1 else -1


def _per_layer(hist: np.ndarray) -> np.ndarray:
    return hist / np.maximum(hist.sum(-1, keepdims=True), 1e-12)


def agreement(routing: dict[str, dict], reference: str, row: str) -> Agreement | None:
    """``row``'s routing against ``reference``'s on their shared test tasks (None: no shared task)."""
    a, b = routing.get(reference), routing.get(row)
    if a is None or b is None:
        return None
    ha = dict(zip((str(t) for t in a["task_names"]), np.asarray(a["task_histograms"], dtype=np.float64), strict=True))
    hb = dict(zip((str(t) for t in b["task_names"]), np.asarray(b["task_histograms"], dtype=np.float64), strict=True))
    tasks = sorted(set(ha) & set(hb))
    if not tasks or ha[tasks[0]].shape != hb[tasks[0]].shape:
        return None
    same = [(_top(ha[t]) == _top(hb[t]) != -1) for t in tasks]
    dist = [0.5 * np.abs(_per_layer(ha[t]) - _per_layer(hb[t])).sum(-1).mean() for t in tasks]
    return Agreement(row, reference, len(tasks), float(np.mean(same)), float(np.mean(dist)))


def agreements(routing: dict[str, dict]) -> list[Agreement]:
    """Every ablation row's agreement with the model it ablates (:data:`~promoe.registry.ABLATED`-<ablation>)."""
    prefix = f"{ABLATED}-"
    out = [agreement(routing, ABLATED, row) for row in sorted(routing) if row.startswith(prefix)]
    return [a for a in out if a is not None]


def section(routing: dict[str, dict]) -> list[str]:
    """REPORT.md lines: the table of :func:`agreements` ([] without an ablation row with routing)."""
    rows = agreements(routing)
    if not rows:
        return []
    lines = ["### Routing under an ablation against the model's own", "",
             "Test tasks both rows scored; the share whose most-used expert is the same, and the mean total-variation "
             "distance between their per-layer expert histograms (0: the same routing, 1: disjoint experts). A "
             "paraphrase should leave the routing as it is; a shuffled description should move it.", "",
             "| row | against | tasks | same top expert | mean distance |", "|---|---|---:|---:|---:|"]
    lines += [f"| {a.row} | {a.reference} | {a.tasks} | {a.same_top:.2f} | {a.mean_distance:.3f} |" for a in rows]
    return lines + [""]
