"""Description ablations: what promoe's router is given instead of a test task's own Definition.

Rows of kind ``ablation`` (``promoe-<name>``); each builder returns the text per test task.

Each ablation maps every test task to a replacement text (or leaves the task out); only the router
input changes, the prompt keeps the real Definition, so a change in score measures how much the
generated routing depends on the description.

* ``shuffled`` — another test task's Definition (a seeded derangement);
* ``empty`` — the empty string;
* ``random_text`` — as many random words as the Definition has, drawn from all test Definitions;
* ``category`` — the task's category name only (e.g. "Question Answering");
* ``paraphrase`` — a paraphrase written by a language model (``paraphrases/descriptions.jsonl.gz``
  of the data folder; only the tasks it covers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from promoe.data.location import data_root
from promoe.data.schema import Task
from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.registry import Row
from promoe.stages.context import RunContext

log = logging.getLogger(__name__)

PARAPHRASES = Path("paraphrases") / "descriptions.jsonl.gz"
"""The paraphrase package, relative to the data folder."""


def read_paraphrases(path: str | Path) -> dict[str, list[str]]:
    """``{task: [paraphrase, ...]}`` from a JSON Lines file of ``{"task", "descriptions"}`` rows."""
    out: dict[str, list[str]] = {}
    for lineno, row in iter_jsonl(path):
        task = row.get("task") if isinstance(row, dict) else None
        texts = row.get("descriptions") if isinstance(row, dict) else None
        if not isinstance(task, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"line {lineno} needs a string `task` and a list of strings `descriptions`",
                            file=str(path), field="descriptions", fix="rewrite the line in the documented format")
        out[task] = [t for t in texts if t.strip()]
    return out


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation without fixed points (n >= 2)."""
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def ablated_descriptions(kind: str, tasks: Sequence[Task], *, seed: int = 0,
                         paraphrases: dict[str, list[str]] | None = None,
                         paraphrase_index: int = 0) -> dict[str, str]:
    """``{task name: text the router sees}`` for ablation ``kind``; tasks without a replacement
    (``paraphrase`` on tasks not covered) are left out."""
    rng = np.random.default_rng(seed)
    if kind == "shuffled":
        if len(tasks) < 2:
            return {}
        perm = _derangement(len(tasks), rng)
        return {t.name: tasks[int(j)].definition for t, j in zip(tasks, perm, strict=True)}
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
    return ablated_descriptions(row.name, ctx.splits.test, seed=ctx.cfg.seed, paraphrases=paraphrases,
                                paraphrase_index=ctx.cfg.compare.paraphrase_index)


def paraphrase(ctx: RunContext, row: Row) -> dict[str, str]:
    """The paraphrases of the data folder's package; no row without one (official repository, HF source
    or the user's own files)."""
    try:
        path = data_root(ctx.cfg.data) / PARAPHRASES
    except (DataError, OSError):
        path = None
    if path is None or not path.exists():
        log.warning("paraphrase ablation skipped: no %s in the data folder", PARAPHRASES)
        return {}
    return builtin(ctx, row, read_paraphrases(path))
