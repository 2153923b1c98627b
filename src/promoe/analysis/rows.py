"""Which rows each table and figure of the analysis shows, derived from :mod:`promoe.registry`.

Nothing here names a row: a newly registered row lands in the right tables and figures by its kind
and what it is built from.

* *Main* rows are those of the groups of rows that are their own base (heuristics, models, routers);
  the rest (ablations, conditions, unregistered variants) are *variants*, shown next to the reference.
* The *experts model* is the model row the routers are built on (a model named in a router's
  ``needs``: the trained ``moe`` with its static token router). It is the ablations' context row
  (the same experts, the router never sees the description).
* *Task-routed* rows make their routing per test task from the task itself: :data:`~promoe.registry.ABLATED`
  (its router reads the task description) and the routers built from the experts model's routing of
  the training tasks (``"moe_profiles"`` in ``needs``). They get the map of routing policies.
* *Profiled* rows: the task-routed rows and the experts model they are compared with. They get one
  expert-utilisation heatmap and one routing-vs-description panel each (the numbers of
  ``routing_similarity`` cover every routed row). Routers that ignore the task (``uniform``,
  ``random``) and the ablations would add many panels that show nothing new.
"""

from __future__ import annotations

from promoe.registry import ABLATED, ROWS, bases, model_key, of_kind, row_group


def main_groups() -> set[str]:
    """Report groups of the rows that are their own base (the zero-shot models, heuristics, routers); never the
    in-sample ceiling, which is not a result."""
    return {row_group(b) for b in bases()} - {"ceiling"}


def experts_model() -> str | None:
    """The model row the routers share experts with (the first model a router ``needs``), if any."""
    for r in of_kind("router"):
        for need in r.needs:
            if need in ROWS and ROWS[need].kind == "model":
                return need
    return None


def task_routed_rows() -> tuple[str, ...]:
    """:data:`~promoe.registry.ABLATED` and the routers built from per-task routing profiles, in report order."""
    rows = {ABLATED} | {r.name for r in of_kind("router") if "moe_profiles" in r.needs}
    return tuple(sorted(rows, key=model_key))


def profiled_rows() -> tuple[str, ...]:
    """:func:`task_routed_rows` and :func:`experts_model`, in report order."""
    rows = set(task_routed_rows()) | ({m} if (m := experts_model()) else set())
    return tuple(sorted(rows, key=model_key))
