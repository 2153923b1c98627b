"""The heuristic floors (rows of kind ``heuristic``): no model, predictions from the task alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from promoe import registry
from promoe.data.schema import Instance, Task
from promoe.io import reference_rows, references_of, write_json, write_jsonl
from promoe.metrics import score


def predict(tasks: Sequence[Task], fn: Callable[[Task, Instance], str]) -> dict[str, str]:
    return {inst.id: fn(t, inst) for t in tasks for inst in t.instances}


def run_heuristics(tasks: Sequence[Task], out_dir: str | Path) -> dict[str, dict]:
    """Predict, write and score every registered heuristic on ``tasks``; returns ``{name: scores}``.

    Writes ``references.jsonl``, ``predictions/<name>.jsonl`` and ``scores/<name>.json`` in the
    official formats under ``out_dir``.
    """
    out = Path(out_dir)
    refs = references_of(tasks)
    write_jsonl(out / "references.jsonl", reference_rows(refs))
    results = {}
    for row in registry.of_kind("heuristic"):
        preds = predict(tasks, row.builder())
        write_jsonl(out / "predictions" / f"{row.name}.jsonl",
                    ({"id": i, "prediction": p} for i, p in preds.items()))
        results[row.name] = score(preds, refs)
        write_json(out / "scores" / f"{row.name}.json", results[row.name])
    return results
