"""Tasks in the SNI schema: records, sources, splits, prompts."""

from promoe.data.schema import Example, Instance, Task, task_from_record

__all__ = ["Example", "Instance", "Task", "task_from_record"]
