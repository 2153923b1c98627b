"""Checks the analysis applies to what it reads from a run folder: JSON that parses, finite numbers, integer
lists; each failure is one :class:`~promoe.errors.DataError` naming the file, field and fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

from promoe.errors import DataError
from promoe.limits import READ_ERRORS, LimitError, load_json, read_text


def read_json(path: Path) -> object:
    """The JSON in ``path``; one clear error when it cannot be read."""
    try:
        return load_json(read_text(path))
    except (*READ_ERRORS, json.JSONDecodeError, LimitError) as e:
        raise DataError(f"cannot be read as JSON ({e})", file=str(path), fix="rewrite or remove it") from None


def is_int(x: object) -> bool:
    """An int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(v: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def shape(x: object) -> str:
    """What a value that should be a list of lists is, in words (for error messages)."""
    if not isinstance(x, list):
        return f"a {type(x).__name__}"
    return f"{len(x)} rows of lengths {[len(r) if isinstance(r, list) else type(r).__name__ for r in x]}"


def int_list(d: dict, key: str, n: int, path: Path, fix: str) -> None:
    """Refuse ``d[key]`` unless it is ``n`` non-negative integers (one per cluster)."""
    if not (isinstance(v := d.get(key), list) and len(v) == n and all(is_int(x) and x >= 0 for x in v)):
        raise DataError(f"must be {n} non-negative integers (one per cluster), got {v!r}", file=str(path),
                        field=key, fix=fix)
