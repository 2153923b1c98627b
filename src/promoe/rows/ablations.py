"""Description ablations: what promoe's router is given instead of a test task's own Definition.

Rows of kind ``ablation`` (``promoe-<name>``); each builder returns the text per test task.

Each ablation maps every test task to a replacement text (or leaves the task out); only the router
input changes, the prompt keeps the real Definition, so a change in score measures how much the
generated routing depends on the description.

* ``shuffled`` — the Definition of a test task of another group (:func:`control_group`: the synthetic suite's
  rule, an SNI task's category), so the control never receives another wording of its own task; a seeded
  permutation where no group holds more than half the tasks, else a seeded draw; ``ablations/shuffled.json``
  records which task each description came from;
* ``empty`` — the empty string;
* ``random_text`` — as many random words as the Definition has, drawn from all test Definitions;
* ``category`` — the task's category name only (e.g. "Question Answering");
* ``paraphrase`` — a paraphrase written by a language model (``paraphrases/descriptions.jsonl.gz``
  of the data folder; only the tasks it covers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from promoe.data.paraphrases import PACKAGE, package_path, read_paraphrases
from promoe.data.schema import Task
from promoe.io import write_json
from promoe.registry import Row
from promoe.stages.context import RunContext

log = logging.getLogger(__name__)


def control_group(task: Task, key: str = "rule") -> str:
    """What a control's replacement description must differ in: the task's ``_meta[key]`` label where it has one
    (the synthetic suite's rule: its phrasings are one task in other words), else its category."""
    label = task.meta.get(key)
    return f"{key}:{label}" if label is not None else f"category:{task.category}"


def donors(tasks: Sequence[Task], rng: np.random.Generator, key: str = "rule") -> dict[str, str]:
    """``{task: the task whose Definition replaces its own}``, always of another :func:`control_group`.

    Each Definition is used once (a permutation) when no group holds more than half the tasks: the tasks,
    shuffled within their groups and grouped, each take the one ``m`` places on (``m`` the largest group's
    size), which is never in their own group. Otherwise each draws a task of another group; a single group
    gives no control (empty)."""
    group = {t.name: control_group(t, key) for t in tasks}
    names = sorted(group)
    by_group: dict[str, list[str]] = {}
    for i in rng.permutation(len(names)):
        by_group.setdefault(group[names[i]], []).append(names[i])
    if len(by_group) < 2:
        return {}
    groups = sorted(by_group)
    order = [n for j in rng.permutation(len(groups)) for n in by_group[groups[j]]]
    m = max(map(len, by_group.values()))
    if 2 * m <= len(order):
        return {n: order[(i + m) % len(order)] for i, n in enumerate(order)}
    return {n: str(rng.choice([o for o in order if group[o] != group[n]])) for n in sorted(group)}


def ablated_descriptions(kind: str, tasks: Sequence[Task], *, seed: int = 0,
                         paraphrases: dict[str, list[str]] | None = None,
                         paraphrase_index: int = 0, group_key: str = "rule") -> dict[str, str]:
    """``{task name: text the router sees}`` for ablation ``kind``; tasks without a replacement
    (``paraphrase`` on tasks not covered) are left out. ``group_key``: see :func:`control_group`."""
    rng = np.random.default_rng(seed)
    if kind == "shuffled":
        definition = {t.name: t.definition for t in tasks}
        return {t: definition[d] for t, d in donors(tasks, rng, group_key).items()}
    if kind == "empty":
        return {t.name: "" for t in tasks}
    if kind == "random_text":
        words = [w for t in tasks for w in t.definition.split()]
        return {t.name: " ".join(rng.choice(words, size=len(t.definition.split())).tolist()) if words else ""
                for t in tasks}
    if kind == "category":
        return {t.name: t.category.replace("_", " ") for t in tasks}
    if kind == "paraphrase":
        found = {t.name: (paraphrases or {}).get(t.name, []) for t in tasks}
        return {name: texts[paraphrase_index % len(texts)] for name, texts in found.items() if texts}
    raise ValueError(f"unknown ablation {kind!r}")


def builtin(ctx: RunContext, row: Row, paraphrases: dict[str, list[str]] | None = None) -> dict[str, str]:
    """The texts of ablation ``row.name`` (one of :func:`ablated_descriptions`'s kinds) for the test tasks."""
    key, tasks = ctx.cfg.experts.cluster_key, ctx.splits.test
    texts = ablated_descriptions(row.name, tasks, seed=ctx.cfg.seed, paraphrases=paraphrases,
                                 paraphrase_index=ctx.cfg.compare.paraphrase_index, group_key=key)
    if row.name == "shuffled" and ctx.acc.is_main_process:  # which task each replacement came from, and why
        given = donors(tasks, np.random.default_rng(ctx.cfg.seed), key)
        group = {t.name: control_group(t, key) for t in tasks}
        write_json(ctx.run_dir / "ablations" / "shuffled.json", {
            "rule": "the Definition of a test task of another group (the task's _meta label "
                    f"{key!r} where it has one, else its category)",
            "donors": {t: {"from": d, "group": group[t], "from_group": group[d]} for t, d in sorted(given.items())}})
    if row.name == "shuffled" and not texts:
        log.warning("shuffled ablation: the test tasks are all of one group (%s), so no task of another group can "
                    "lend its description", next(iter({control_group(t, key) for t in tasks}), "none"))
    return texts


def paraphrase(ctx: RunContext, row: Row) -> dict[str, str]:
    """The paraphrases of the data folder's package; no row without one (official repository, HF source
    or the user's own files)."""
    path = package_path(ctx.cfg.data)
    if path is None:
        log.warning("paraphrase ablation skipped: no %s in the data folder", PACKAGE)
        return {}
    return builtin(ctx, row, read_paraphrases(path))
