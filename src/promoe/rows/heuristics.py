"""The SNI heuristic baselines: copy the instance input; copy a demonstration's output.

These need no model and set the floors every trained model has to beat (rows of kind ``heuristic``).
"""

from __future__ import annotations

from promoe.data.prompts import demonstrations
from promoe.data.schema import Instance, Task


def copy_input(task: Task, instance: Instance) -> str:
    """Predict the instance's own input."""
    return instance.input


def copy_demo(task: Task, instance: Instance) -> str:
    """Predict the output of the task's first positive example (never the instance's own)."""
    demos = demonstrations(task, instance, 1)
    return demos[0].output if demos else ""
