"""Other wordings of task Definitions, for a router to learn that many wordings mean one task.

Two sources, one result: a task's own ``Paraphrases`` field (task files; the synthetic suite writes composed
phrasings there) and the data folder's paraphrase package (``paraphrases/descriptions.jsonl.gz``: about 200
descriptions written by a language model for each of 438 SNI training and 62 test tasks, from Text-to-LoRA).
Meta-training reads them for **training tasks only** (:func:`router_wordings`): the router sees one wording of
each task per step (:class:`promoe.training.trainer.Trainer`), never in the prompt. A test task's paraphrases serve only
the ``paraphrase`` ablation (:mod:`promoe.rows.ablations`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from promoe.config import DataConfig
from promoe.data.location import data_root
from promoe.data.schema import Task
from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.text import clean, visible

log = logging.getLogger(__name__)

PACKAGE = Path("paraphrases") / "descriptions.jsonl.gz"
"""The paraphrase package, relative to the data folder."""


def read_paraphrases(path: str | Path) -> dict[str, list[str]]:
    """``{task: [paraphrase, ...]}`` from a JSON Lines file of ``{"task", "descriptions"}`` rows; names and
    descriptions cleaned (:mod:`promoe.text`) as a task file's names and Definitions are."""
    out: dict[str, list[str]] = {}
    for lineno, row in iter_jsonl(path):
        task = row.get("task") if isinstance(row, dict) else None
        texts = row.get("descriptions") if isinstance(row, dict) else None
        if not isinstance(task, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"line {lineno} needs a string `task` and a list of strings `descriptions`",
                            file=str(path), field="descriptions", fix="rewrite the line in the documented format")
        out[clean(task)] = [clean(t) for t in texts if visible(t)]
    return out


def package_path(cfg: DataConfig) -> Path | None:
    """The data folder's paraphrase package, or None where there is no data folder or no package in it."""
    try:
        path = data_root(cfg) / PACKAGE
    except (DataError, OSError):
        return None
    return path if path.exists() else None


def router_wordings(tasks: Sequence[Task], *, package: dict[str, list[str]], limit: int) -> dict[str, list[str]]:
    """``{task: up to limit other wordings}`` of the tasks that have any: the task's own ``Paraphrases`` first,
    then the package's, in their order, without repeats or the Definition itself. Give training tasks only."""
    out = {}
    for t in tasks:
        seen = {t.definition}
        texts = [w for w in (*t.paraphrases, *package.get(t.name, ())) if not (w in seen or seen.add(w))][:limit]
        if texts:
            out[t.name] = texts
    return out
