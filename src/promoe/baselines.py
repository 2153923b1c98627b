"""The SNI heuristic baselines: copy the instance input; copy a demonstration's output.

These need no model and set the floors every trained model has to beat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from promoe.data.prompts import demonstrations
from promoe.data.schema import Instance, Task
from promoe.io import reference_rows, references_of, write_json, write_jsonl
from promoe.metrics import score


def copy_input(task: Task, instance: Instance) -> str:
    """Predict the instance's own input."""
    return instance.input


def copy_demo(task: Task, instance: Instance) -> str:
    """Predict the output of the task's first positive example (never the instance's own)."""
    demos = demonstrations(task, instance, 1)
    return demos[0].output if demos else ""


HEURISTICS: dict[str, Callable[[Task, Instance], str]] = {
    "copy_input": copy_input,
    "copy_demo": copy_demo,
}


def predict(tasks: Sequence[Task], fn: Callable[[Task, Instance], str]) -> dict[str, str]:
    return {inst.id: fn(t, inst) for t in tasks for inst in t.instances}


def run_heuristics(tasks: Sequence[Task], out_dir: str | Path) -> dict[str, dict]:
    """Predict, write and score every heuristic on ``tasks``; returns ``{name: scores}``.

    Writes ``references.jsonl``, ``predictions/<name>.jsonl`` and ``scores/<name>.json`` in the
    official formats under ``out_dir``.
    """
    out = Path(out_dir)
    refs = references_of(tasks)
    write_jsonl(out / "references.jsonl", reference_rows(refs))
    results = {}
    for name, fn in HEURISTICS.items():
        preds = predict(tasks, fn)
        write_jsonl(out / "predictions" / f"{name}.jsonl",
                    ({"id": i, "prediction": p} for i, p in preds.items()))
        results[name] = score(preds, refs)
        write_json(out / "scores" / f"{name}.json", results[name])
    return results
