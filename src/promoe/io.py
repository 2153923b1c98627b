"""Files in the official SNI formats, and atomic writes.

Predictions: JSON Lines ``{"id", "prediction"}``. References: JSON Lines
``{"id", "references": [...], "task_id", "task_category", "track"}`` (as built by the official
``create_reference_file.py``). Ids and task names are read cleaned (:mod:`promoe.text`), the form they
are matched in. Every file is written to a temporary name and renamed into place, so
a crash never leaves a torn file and an earlier result is replaced only by a complete one.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promoe.data.schema import Task, require_text
from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.metrics import Reference
from promoe.text import clean


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename. The file
    gets the permissions a plain ``open`` would give it (``mkstemp`` alone makes it private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_npz(path: str | Path, **arrays: Any) -> None:
    """Write numpy arrays as ``.npz`` atomically (plain arrays only: read back with allow_pickle=False)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def references_of(tasks: Sequence[Task]) -> list[Reference]:
    """Official reference records for every instance of ``tasks`` (category = ``Categories[0]``)."""
    return [
        Reference(id=inst.id, references=inst.outputs, task_id=t.name, task_category=t.category)
        for t in tasks
        for inst in t.instances
    ]


def reference_rows(refs: Iterable[Reference]) -> list[dict[str, Any]]:
    return [{"id": r.id, "references": list(r.references), "task_id": r.task_id,
             "task_category": r.task_category, "track": r.track} for r in refs]


def _field(row: Any, key: str, typ: type, *, file: str, line: int) -> Any:
    if not isinstance(row, dict) or key not in row:
        raise DataError(f"line {line} has no {key!r}", file=file, field=key,
                        fix=f"every line needs {key!r}")
    if not isinstance(row[key], typ):
        raise DataError(f"line {line}: expected {typ.__name__}, got {type(row[key]).__name__}",
                        file=file, field=key, fix=f"make {key!r} a JSON {typ.__name__}")
    return row[key]


def read_predictions(path: str | Path) -> dict[str, str]:
    """Read ``{id, prediction}`` lines into ``{id: prediction}`` (a later line for an id wins)."""
    out: dict[str, str] = {}
    for line, row in iter_jsonl(path):
        pid = _field(row, "id", str, file=str(path), line=line)
        pred = row.get("prediction") if isinstance(row, dict) else None
        if pred is None:
            pred = ""
        if not isinstance(pred, str):
            raise DataError(f"line {line}: expected str, got {type(pred).__name__}", file=str(path),
                            field="prediction", fix="make the prediction a JSON string")
        out[clean(pid)] = pred
    return out


def read_likelihood(path: str | Path) -> dict[str, float]:
    """Read ``{id, ref_nll}`` lines (``likelihood/<row>.jsonl``) into ``{id: ref_nll}``."""
    out: dict[str, float] = {}
    for line, row in iter_jsonl(path):
        pid = _field(row, "id", str, file=str(path), line=line)
        nll = row.get("ref_nll") if isinstance(row, dict) else None
        if not isinstance(nll, int | float) or isinstance(nll, bool) or not math.isfinite(nll):
            raise DataError(f"line {line}: ref_nll is {nll!r}, not a finite number", file=str(path), field="ref_nll",
                            fix="delete the file (and the row's scores/ file) to compute it again")
        out[pid] = float(nll)
    return out


def _track(row: dict[str, Any], *, file: str, line: int) -> str:
    track = row.get("track", "default")
    if track != "default":
        raise DataError(f"line {line}: track {track!r} is not supported", file=file, field="track",
                        fix="score the English 'default' track only (xlingual needs another tokenizer)")
    return track


def read_references(path: str | Path) -> list[Reference]:
    """Read an official reference file; refuses duplicate ids and empty reference lists."""
    refs, seen = [], set()
    for line, row in iter_jsonl(path):
        rid = require_text(_field(row, "id", str, file=str(path), line=line), file=str(path), field=f"id (line {line})")
        if rid in seen:
            raise DataError(f"line {line}: duplicate id {rid!r}", file=str(path), field="id",
                            fix="keep one line per instance")
        seen.add(rid)
        texts = _field(row, "references", list, file=str(path), line=line)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError(f"line {line}: needs a non-empty list of strings", file=str(path),
                            field="references", fix='write it as ["reference", ...]')
        refs.append(Reference(
            id=rid, references=tuple(texts),
            task_id=clean(_field(row, "task_id", str, file=str(path), line=line)),
            task_category=_field(row, "task_category", str, file=str(path), line=line),
            track=_track(row, file=str(path), line=line),
        ))
    if not refs:
        raise DataError("holds no references", file=str(path), fix="give a non-empty reference file")
    return refs
