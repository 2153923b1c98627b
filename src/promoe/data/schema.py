"""Typed records for tasks in the Super-NaturalInstructions (SNI) task schema, with validation.

A raw task record (one upstream task JSON) becomes a :class:`Task` through :func:`task_from_record`,
which checks every field it uses and raises one :class:`~promoe.errors.DataError` naming the file,
the task and the field when something is wrong. Nothing is dropped silently.

The official SNI data has a few quirks that are not errors upstream. When a :class:`QuirkLog` is
passed (the readers of the official packages, repository and Hugging Face copy do), they are read
the way the official Tk-Instruct code reads them and every one is recorded:

* an instance whose references are all empty (task488, task497, task365, task1564 — for most of them
  the empty answer is right: a list with no letters or no numbers) is kept with the empty string as
  its target, as Tk-Instruct's collator trains on ``random.choice(Instance["output"])``;
* a ``Definition`` of several strings: the first is used, as Tk-Instruct's collator does
  (``Definition[0]``);
* an empty ``Reasoning`` list is simply empty.

A user's own task file is read without a log: an instance with no non-empty reference is refused.
Task names, instance ids and Definitions are read in the form they are compared in (:mod:`promoe.text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from promoe.errors import DataError
from promoe.text import clean, clean_names, visible

Origin = Literal["instance", "positive_example"]
"""Where a scored instance came from: a real task instance, or one of the task's positive examples."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_LIST_FIELDS = ("Categories", "Reasoning", "Domains", "Source")


QuirkKind = Literal["empty_reference", "multi_definition", "empty_reasoning", "demonstration_input"]

QUIRK_RULES: dict[str, str] = {
    "empty_reference": "instance kept, its target is the empty string (Tk-Instruct trains on "
                       "random.choice(output))",
    "multi_definition": "Definition[0] used, the other strings ignored (Tk-Instruct's collator)",
    "empty_reasoning": "read as no reasoning skills",
    "demonstration_input": "test instance not scored: its input is, as a prompt shows it, the input of one of "
                           "the task's positive examples, which a demonstration shows with its answer",
}
"""How each accepted quirk of the official data is read, as the official code reads it (``demonstration_input``:
of any test data, :func:`promoe.data.protocol.drop_demonstrated`)."""


@dataclass(frozen=True)
class Quirk:
    """One accepted quirk of the official data: which task, what, where."""

    task: str
    kind: QuirkKind
    where: str = ""
    instance: str = ""
    """The instance id, for quirks of one instance."""


@dataclass
class QuirkLog:
    """Collects the quirks met while reading official SNI data (see the module docstring)."""

    quirks: list[Quirk] = field(default_factory=list)

    def add(self, task: str, kind: QuirkKind, where: str = "", instance: str = "") -> None:
        self.quirks.append(Quirk(task, kind, where, instance))


@dataclass(frozen=True)
class Example:
    """A demonstration (SNI `Positive Examples` / `Negative Examples` entry)."""

    input: str
    output: str
    explanation: str = ""


@dataclass(frozen=True)
class Instance:
    """One input with its reference outputs (several references are allowed)."""

    id: str
    input: str
    outputs: tuple[str, ...]
    origin: Origin = "instance"


@dataclass(frozen=True)
class Task:
    """A task: its Definition, metadata, demonstrations and instances."""

    name: str
    definition: str
    instances: tuple[Instance, ...]
    categories: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    positive_examples: tuple[Example, ...] = ()
    negative_examples: tuple[Example, ...] = ()
    collection: str = "user"
    """Which collection the task came from (`sni`, `niv1`, `bigbench`, `hf`, `user`)."""
    family: str = ""
    """Group key for splitting: subtasks of one BIG-bench task share a family."""
    path: str = ""
    """The file the task was read from (for error messages and provenance)."""
    paraphrases: tuple[str, ...] = ()
    """Other wordings of the Definition (the optional field ``Paraphrases``): a router in meta-training may read
    one of them instead of the Definition (``train.paraphrases``); never shown to a model in a prompt."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Extra provenance from the record's `_meta` (as read, the task names in it cleaned: :data:`META_NAMES`)."""

    @property
    def category(self) -> str:
        """The task's primary category (`Categories[0]`, as the official reference file uses)."""
        return self.categories[0] if self.categories else "unknown"


META_NAMES = ("task", "sni_task", "bb_task", "sni_test_dataset_overlap")
"""Keys of a record's ``_meta`` that hold task names (a name or a list of names), read as names are."""


def check_task_name(name: Any, *, file: str) -> str:
    """A task name, cleaned (:func:`~promoe.text.clean`), must be a plain file-name-safe string (it becomes
    part of output paths); returns it cleaned, the form it is compared in."""
    if isinstance(name, str):
        name = clean(name)
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise DataError(
            f"task name {name!r} is not a plain name (letters, digits, '_', '-', '.'; no path parts)",
            file=file,
            field="task name",
            fix="rename the task, e.g. task001_my_task",
        )
    return name


def _str(value: Any, *, file: str, task: str, field: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"expected a string, got {type(value).__name__}", file=file, task=task, field=field,
            fix="make the field a JSON string",
        )
    return value if allow_empty else require_text(value, file=file, task=task, field=field)


def require_text(value: str, *, field: str, file: str | None = None, task: str | None = None) -> str:
    """The one rule for text that must say something (a Definition, an instance id, ``--definition``,
    ``--input``): at least one visible character (:func:`~promoe.text.visible`). Returns ``value`` cleaned
    (:func:`~promoe.text.clean`), the form it is compared and used in."""
    if not visible(value):
        raise DataError("is empty (no visible character: only whitespace, control or zero-width characters)",
                        file=file, task=task, field=field, fix="give it a non-empty text")
    return clean(value)


def _str_list(value: Any, *, file: str, task: str, field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise DataError(
            f"expected a list of strings, got {type(value).__name__}", file=file, task=task,
            field=field, fix='write it as ["..."]',
        )
    return tuple(_str(v, file=file, task=task, field=f"{field}[{i}]") for i, v in enumerate(value))


def _examples(value: Any, *, file: str, task: str, field: str) -> tuple[Example, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DataError(
            f"expected a list of examples, got {type(value).__name__}", file=file, task=task,
            field=field, fix='write it as [{"input": ..., "output": ..., "explanation": ...}]',
        )
    out = []
    for i, ex in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(ex, dict):
            raise DataError("expected an object", file=file, task=task, field=where,
                            fix='write it as {"input": ..., "output": ...}')
        for key in ("input", "output"):
            if key not in ex:
                raise DataError(f"missing key {key!r}", file=file, task=task, field=where,
                                fix=f"add {key!r}")
        output = ex["output"]
        if isinstance(output, list):  # some copies store a one-element list
            output = output[0] if output else ""
        out.append(
            Example(
                input=_str(ex["input"], file=file, task=task, field=f"{where}.input"),
                output=_str(output, file=file, task=task, field=f"{where}.output"),
                explanation=_str(ex.get("explanation", "") or "", file=file, task=task,
                                 field=f"{where}.explanation"),
            )
        )
    return tuple(out)


def _instances(value: Any, *, file: str, task: str, quirks: QuirkLog | None) -> tuple[Instance, ...]:
    if not isinstance(value, list):
        raise DataError(
            f"expected a list of instances, got {type(value).__name__}", file=file, task=task,
            field="Instances", fix='write it as [{"id": ..., "input": ..., "output": [...]}]',
        )
    seen: set[str] = set()
    out = []
    for i, inst in enumerate(value):
        where = f"Instances[{i}]"
        if not isinstance(inst, dict):
            raise DataError("expected an object", file=file, task=task, field=where,
                            fix='write it as {"id": ..., "input": ..., "output": [...]}')
        for key in ("id", "input", "output"):
            if key not in inst:
                raise DataError(f"missing key {key!r}", file=file, task=task, field=where,
                                fix=f"add {key!r}")
        iid = _str(inst["id"], file=file, task=task, field=f"{where}.id", allow_empty=False)
        if iid in seen:
            raise DataError(f"duplicate instance id {iid!r}", file=file, task=task,
                            field=f"{where}.id", fix="give every instance a unique id")
        seen.add(iid)
        if not isinstance(inst["output"], list):
            raise DataError(
                f"expected a list of reference strings, got {type(inst['output']).__name__}",
                file=file, task=task, field=f"{where}.output", fix='write it as ["reference"]',
            )
        outputs = _str_list(inst["output"], file=file, task=task, field=f"{where}.output")
        if not outputs:
            raise DataError("has no reference output", file=file, task=task,
                            field=f"{where}.output", fix="give at least one reference")
        if not any(o.strip() for o in outputs):
            if quirks is None:
                raise DataError("has no non-empty reference output", file=file, task=task,
                                field=f"{where}.output", fix="give at least one reference")
            quirks.add(task, "empty_reference", f"{where} ({iid})", instance=iid)
            outputs = ("",)
        out.append(Instance(
            id=iid,
            input=_str(inst["input"], file=file, task=task, field=f"{where}.input"),
            outputs=outputs,
        ))
    return tuple(out)


def task_from_record(
    record: Any, *, file: str, name: str | None = None, collection: str = "user",
    quirks: QuirkLog | None = None,
) -> Task:
    """Validate one raw SNI-schema task record and turn it into a :class:`Task`.

    ``name`` defaults to ``record["_meta"]["task"]`` (packages) and must be given otherwise
    (a task file is named after its file). Raises :class:`DataError` on the first problem.
    ``quirks``: read the official data's quirks as the official code does and record them there
    (module docstring); without it they are errors where they are errors for a user's file.
    """
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object per task, got {type(record).__name__}", file=file,
                        fix="each task is one JSON object in the SNI task schema")
    meta = record.get("_meta") or {}
    if not isinstance(meta, dict):
        raise DataError("expected an object", file=file, field="_meta", fix="remove or fix _meta")
    meta = {k: clean_names(v) if k in META_NAMES else v for k, v in meta.items()}
    name = check_task_name(name if name is not None else meta.get("task"), file=file)
    if "Definition" not in record:
        raise DataError("missing required field", file=file, task=name, field="Definition",
                        fix='add "Definition": ["<what the task asks>"]')
    definition = _str_list(record["Definition"], file=file, task=name, field="Definition")
    if not definition or not visible(definition[0]):
        raise DataError("is empty (no visible character: only whitespace, control or zero-width characters)",
                        file=file, task=name, field="Definition", fix="write the task's instruction in Definition[0]")
    if "Instances" not in record:
        raise DataError("missing required field", file=file, task=name, field="Instances",
                        fix='add "Instances": [{"id": ..., "input": ..., "output": [...]}]')
    lists = {
        key: _str_list([] if record.get(key) is None else record[key], file=file, task=name, field=key)
        for key in _LIST_FIELDS
    }
    if quirks is not None:
        if len(definition) > 1:
            quirks.add(name, "multi_definition", f"Definition has {len(definition)} strings")
        if "Reasoning" in record and not lists["Reasoning"]:  # a source without the field has no quirk
            quirks.add(name, "empty_reasoning")
    family = meta.get("bb_task")
    return Task(
        name=name,
        definition=clean(definition[0]),
        instances=_instances(record["Instances"], file=file, task=name, quirks=quirks),
        categories=lists["Categories"],
        reasoning=lists["Reasoning"],
        domains=lists["Domains"],
        source=lists["Source"],
        positive_examples=_examples(record.get("Positive Examples"), file=file, task=name,
                                    field="Positive Examples"),
        negative_examples=_examples(record.get("Negative Examples"), file=file, task=name,
                                    field="Negative Examples"),
        collection=str(meta.get("collection") or collection),
        family=f"bb_{family}" if family else name,
        path=file,
        paraphrases=tuple(clean(t) for t in _str_list([] if record.get("Paraphrases") is None
                                                       else record["Paraphrases"], file=file, task=name,
                                                       field="Paraphrases") if visible(t)),
        meta=meta,
    )
