"""Readers for every place SNI-schema tasks come from.

* :func:`read_task_file` — one task JSON file (any user task, or an upstream ``tasks/*.json``);
* :func:`read_task_package` — gzip (or plain) JSON Lines, one task per line;
* :func:`read_repo_layout` — the official repository layout (``tasks/*.json`` +
  ``splits/default/{train,test}_tasks.txt``);
* :func:`read_hf_sni` — the Hugging Face copy of SNI through ``datasets``;
* :func:`read_test_meta` — the offline export of all SNI test tasks (``test_task_meta.jsonl.gz``).

:func:`load_tasks` picks the reader from the path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from promoe.data.schema import Example, Instance, QuirkLog, Task, check_task_name, task_from_record
from promoe.errors import DataError
from promoe.limits import READ_ERRORS, LimitError, iter_lines, load_json, read_text
from promoe.text import clean, visible

log = logging.getLogger(__name__)

HOW_TO_GET_SNI = (
    "clone https://github.com/allenai/natural-instructions and point data.sni_repo at it, "
    "or set PROMOE_DATA / --data-root to the folder holding the complete offline packages (sni/, bigbench/, "
    "paraphrases/)"
)


def require_path(path: str | Path, what: str, fix: str = HOW_TO_GET_SNI) -> Path:
    """Return ``path`` if it is a regular file or a folder, else raise a :class:`DataError` that says how to get
    it. Every input file of the project is opened through here: a FIFO, device or socket would block a read
    forever or never end, so it is refused."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} not found", file=str(p), fix=fix)
    if not (p.is_file() or p.is_dir()):
        raise DataError(f"is not a regular file or folder (a pipe, device or socket): {what}s are read from files",
                        file=str(p), fix=f"give the {what} as a regular file")
    return p


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for every non-blank line of a (gzip) JSON Lines file, read within the
    limits of :mod:`promoe.limits` (size after decompression, nesting)."""
    p = require_path(path, "JSON Lines file")
    try:
        for lineno, line in iter_lines(p):
            try:
                yield lineno, load_json(line.decode("utf-8"))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"line {lineno} is not valid JSON ({e.msg} at column {e.colno})",
                    file=str(p), fix="each line must hold one complete JSON object",
                ) from None
            except LimitError as e:
                raise DataError(f"line {lineno} {e}", file=str(p)) from None
    except READ_ERRORS as e:
        raise DataError(f"cannot be read ({e})", file=str(p),
                        fix="check that it is UTF-8 JSON Lines, gzip-compressed if named .gz") from None


def read_task_file(path: str | Path, *, collection: str = "user", quirks: QuirkLog | None = None) -> Task:
    """Read one task JSON file; the task is named after the file (``task001_x.json`` → ``task001_x``)."""
    p = require_path(path, "task file")
    try:
        record = load_json(read_text(p))
    except json.JSONDecodeError as e:
        raise DataError(f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})",
                        file=str(p), fix="fix the JSON syntax") from None
    except LimitError as e:
        raise DataError(str(e), file=str(p)) from None
    except READ_ERRORS as e:
        raise DataError(f"cannot be read ({e})", file=str(p), fix="check the file") from None
    return task_from_record(record, file=str(p), name=p.name.removesuffix(".json"), collection=collection,
                            quirks=quirks)


def read_task_package(path: str | Path, *, collection: str = "user",
                      quirks: QuirkLog | None = None) -> list[Task]:
    """Read a JSON Lines task package (one task per line, named by ``_meta.task``).

    ``quirks``: the package is official SNI data, read as the official code reads it
    (:mod:`promoe.data.schema`); unset for a user's own package.
    """
    tasks, seen = [], set()
    for lineno, record in iter_jsonl(path):
        file = f"{path}:{lineno}"
        meta = record.get("_meta") if isinstance(record, dict) else None
        name = meta.get("task") if isinstance(meta, dict) else None
        if name is None:
            raise DataError("missing task name", file=file, field="_meta.task",
                            fix='add "_meta": {"task": "<name>"} to every line')
        task = task_from_record(record, file=file, name=name, collection=collection, quirks=quirks)
        if task.name in seen:
            raise DataError(f"task {task.name!r} appears twice", file=file, field="_meta.task",
                            fix="keep one line per task")
        seen.add(task.name)
        tasks.append(task)
    return tasks


def read_split_list(path: str | Path) -> list[str]:
    """Read a split file (one task name per line, as ``splits/default/train_tasks.txt``), names cleaned
    (:func:`~promoe.text.clean`) as a task file's are."""
    p = require_path(path, "split list")
    try:
        text = read_text(p)
    except READ_ERRORS as e:
        raise DataError(f"cannot be read ({e})", file=str(p), fix="one task name per line, UTF-8") from None
    return [clean(line) for line in text.splitlines() if visible(line)]


def read_repo_layout(
    root: str | Path, *, split: str, split_dir: str = "splits/default", quirks: QuirkLog | None = None,
) -> tuple[list[Task], list[str]]:
    """Read the tasks of one split from the official repository layout.

    Only the listed task files are opened (the full repository is 3 GB). Returns the tasks and the
    names listed but absent, which the caller reports as a count.
    """
    root = require_path(root, "SNI repository")
    names = read_split_list(root / split_dir / f"{split}_tasks.txt")
    tasks, missing = [], []
    for name in names:
        f = root / "tasks" / f"{name}.json"
        if f.exists():
            tasks.append(read_task_file(f, collection="sni", quirks=quirks))
        else:
            missing.append(name)
    if missing:
        log.warning("%s: %d of %d %s tasks have no file under tasks/", root, len(missing),
                    len(names), split)
    return tasks, missing


def read_test_meta(path: str | Path, *, quirks: QuirkLog | None = None) -> list[Task]:
    """Read the offline export of the SNI test tasks (Definition, category, examples, first instances).

    Its instances carry no ids upstream; they get ``<task>-first<i>``. Each has one reference.
    """
    tasks = []
    for lineno, rec in iter_jsonl(path):
        file = f"{path}:{lineno}"
        if not isinstance(rec, dict) or "task" not in rec:
            raise DataError("missing key 'task'", file=file, field="task", fix="one task per line")
        name = check_task_name(rec["task"], file=file)
        record = {
            "Definition": [rec.get("Definition", "")],
            "Categories": [rec["category"]] if rec.get("category") else [],
            "Positive Examples": rec.get("positive_examples") or [],
            "Negative Examples": rec.get("negative_examples") or [],
            "Instances": [
                {"id": f"{name}-first{i}", "input": inst.get("input"), "output": [inst.get("output")]}
                if isinstance(inst, dict) else inst
                for i, inst in enumerate(rec.get("first_instances") or [])
            ],
            "_meta": rec.get("_meta") or {},
        }
        tasks.append(task_from_record(record, file=file, name=name, collection="sni", quirks=quirks))
    return tasks


HF_COLUMNS = {"task": "task_name", "id": "id", "definition": "definition", "input": "inputs",
              "output": "targets"}
"""Column names of the Hugging Face copy of SNI (``Muennighoff/natural-instructions``)."""


def tasks_from_rows(rows: Iterable[dict[str, Any]], *, file: str, columns: dict[str, str] = HF_COLUMNS,
                    categories: dict[str, str] | None = None, quirks: QuirkLog | None = None) -> list[Task]:
    """Group instance rows (one row per instance, as in the HF copy of SNI) into tasks."""
    grouped: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        for key, col in columns.items():
            if col not in row:
                raise DataError(f"row {i} has no column {col!r}", file=file, field=col,
                                fix=f"pass the column that holds the {key} in `columns`")
        name = clean(row[columns["task"]]) if isinstance(row[columns["task"]], str) else row[columns["task"]]
        rec = grouped.setdefault(name, {"Definition": [row[columns["definition"]]], "Instances": []})
        out = row[columns["output"]]
        rec["Instances"].append({"id": row[columns["id"]], "input": row[columns["input"]],
                                 "output": out if isinstance(out, list) else [out]})
    tasks = []
    for name, rec in grouped.items():
        if categories and name in categories:
            rec["Categories"] = [categories[name]]
        tasks.append(task_from_record(rec, file=file, name=name, collection="hf", quirks=quirks))
    return tasks


def read_hf_sni(
    dataset: str, *, split: str, data_files: str | list[str] | None = None,
    columns: dict[str, str] = HF_COLUMNS, categories: dict[str, str] | None = None,
    quirks: QuirkLog | None = None,
) -> list[Task]:
    """Read SNI from the Hugging Face hub (``dataset`` = repo id) or from local data files.

    ``dataset`` may also be a builder name such as ``"json"`` with ``data_files`` (how the tests run
    it offline). Categories are not in the HF copy; pass ``task_categories.tsv`` read as a dict.
    """
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a pinned dependency
        raise DataError("the `datasets` package is not installed", fix="pip install datasets") from e
    try:
        ds = datasets.load_dataset(dataset, split=split, data_files=data_files)
    except Exception as e:  # hub or file errors come in many types; report them in one message
        raise DataError(f"could not load split {split!r} ({type(e).__name__}: {e})", file=dataset,
                        fix="check the dataset name and network, or pass local data_files") from None
    return tasks_from_rows(ds, file=dataset, columns=columns, categories=categories, quirks=quirks)


def read_categories(path: str | Path) -> dict[str, str]:
    """Read ``task_categories.tsv`` (``task, split, category``) into ``{task: category}``."""
    p = require_path(path, "task category table")
    try:
        text = read_text(p)
    except READ_ERRORS as e:
        raise DataError(f"cannot be read ({e})", file=str(p), fix="task, split, category per line, UTF-8") from None
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    return {clean(r[0]): r[2] for r in rows if len(r) >= 3}


def load_tasks(path: str | Path, *, collection: str = "user") -> list[Task]:
    """Read tasks from any supported file: a task JSON, a JSON Lines package, or a ``tasks/`` folder."""
    p = require_path(path, "task source",
                     fix="give a task .json file, a .jsonl(.gz) package or a folder; " + HOW_TO_GET_SNI)
    if p.is_dir():
        files = sorted((p / "tasks").glob("*.json")) if (p / "tasks").is_dir() else sorted(p.glob("*.json"))
        if not files:
            raise DataError("holds no task .json files", file=str(p),
                            fix="point at a folder of SNI task files (or its tasks/ folder)")
        tasks = [read_task_file(f, collection=collection) for f in files]
    elif p.name.endswith((".jsonl", ".jsonl.gz")):
        tasks = read_task_package(p, collection=collection)
    elif p.suffix == ".json":
        tasks = [read_task_file(p, collection=collection)]
    else:
        raise DataError("unknown task file type", file=str(p),
                        fix="use .json (one task), .jsonl or .jsonl.gz (one task per line)")
    if not tasks:
        raise DataError("holds no tasks (an empty file)", file=str(p), fix="give a file with at least one task")
    for t in tasks:  # (the offline test meta holds none: its instances come from test.jsonl.gz)
        if not t.instances:
            raise DataError("is an empty list: a task without instances has nothing to train on or score",
                            file=t.path or str(p), task=t.name, field="Instances",
                            fix="add instances, or leave the task out")
    check_unique_ids(tasks, str(p))
    return tasks


def check_unique_ids(tasks: Sequence[Task], source: str) -> None:
    """Refuse instance ids shared by two tasks scored together: predictions are matched to references by id, so
    one task would be scored on the other's answers. Names both tasks."""
    owner: dict[str, str] = {}
    for t in tasks:
        for inst in t.instances:
            if (other := owner.setdefault(inst.id, t.name)) != t.name:
                raise DataError(f"instance id {inst.id!r} is in task {other!r} and in task {t.name!r}; predictions "
                                "are matched to references by id, so one would be scored on the other's answers",
                                file=source, field="Instances[].id",
                                fix="make ids unique across the tasks scored together (e.g. prefix them with the "
                                    "task name)")


def positive_example_instances(task: Task) -> tuple[Instance, ...]:
    """The task's positive examples as scorable instances tagged ``origin="positive_example"``."""
    return tuple(
        Instance(id=f"{task.name}-pos{i}", input=ex.input, outputs=(ex.output,), origin="positive_example")
        for i, ex in enumerate(task.positive_examples)
        if ex.output.strip()
    )


__all__ = [
    "Example", "HF_COLUMNS", "iter_jsonl", "load_tasks", "positive_example_instances",
    "read_categories", "read_hf_sni", "read_repo_layout", "read_split_list", "read_task_file",
    "read_task_package", "read_test_meta", "require_path", "tasks_from_rows",
]
