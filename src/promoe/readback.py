"""What a run reads back of its own files (checkpoints, optimizer state, progress, records) is checked before it
is used (docs/reliability.md's "Bad input", rule 6): each reader here returns the content whole and of the expected shape,
or raises one :class:`DamagedFile` naming the file and what is wrong with it, never a ``UnicodeDecodeError``,
``EOFError`` or ``AttributeError`` from deep inside the run.

The caller decides what a damaged file costs: what is cheap to make again is made again from the last good state,
with one warning (:func:`redo`: a checkpoint, a progress file, a pilot record); what is not is refused with a fix
that works. Writing a run's files goes through :func:`writing`, which turns the ways a full disk shows itself
(``OSError``, torch's ``[enforce fail at inline_container.cc]``, safetensors' ``IoError``) into one error line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from promoe.errors import PromoeError
from promoe.limits import READ_ERRORS, LimitError, load_json, read_text

log = logging.getLogger(__name__)


class DamagedFile(PromoeError):
    """A file a run wrote is missing, unreadable or not what was written; ``fix`` says what to do (None: the run
    makes it again itself)."""

    def __init__(self, path: str | Path, problem: str, fix: str | None = None) -> None:
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path}: {problem}" + (f"; {fix}" if fix else ""))


def brief(e: BaseException) -> str:
    """A library's error message on one line, at most 120 characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= 120 else text[:117] + "..."


def redo(err: DamagedFile, what: str) -> None:
    """The one warning of a damaged file the run makes again: ``what`` says what it does instead."""
    log.warning("%s: %s: %s", err.path, err.problem, what)


def json_file(path: str | Path, check: Callable[[Any], bool] = lambda _: True, what: str = "JSON") -> Any:
    """The JSON of ``path`` when it parses and ``check(value)`` holds, else :class:`DamagedFile` (``what`` says
    what it should hold)."""
    try:
        value = load_json(read_text(path))
    except FileNotFoundError:
        raise DamagedFile(path, "is missing") from None
    except (*READ_ERRORS, json.JSONDecodeError, LimitError) as e:
        raise DamagedFile(path, f"is damaged: not {what} ({type(e).__name__}: {brief(e)})") from None
    if not check(value):
        raise DamagedFile(path, f"is damaged: not {what} (a {type(value).__name__})")
    return value


def has(value: Any, **fields: type | tuple[type, ...]) -> bool:
    """``value`` is a dict whose ``fields`` are there with these types (a ``bool`` is not an ``int`` here)."""
    def ok(v: Any, typ: type | tuple[type, ...]) -> bool:
        types = typ if isinstance(typ, tuple) else (typ,)
        return isinstance(v, types) and (not isinstance(v, bool) or bool in types)

    return isinstance(value, dict) and all(key in value and ok(value[key], typ) for key, typ in fields.items())


def tensors(path: str | Path, names: list[str] | None = None, shapes: dict[str, torch.Size] | None = None,
            header_only: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path`` (``header_only``: none, only check that the file opens and
    holds ``names``), each of ``names`` present and of its shape in ``shapes``, else :class:`DamagedFile`."""
    try:
        if header_only:
            with safe_open(str(path), framework="pt") as f:
                held = {n: torch.Size(f.get_slice(n).get_shape()) for n in f.keys()}  # noqa: SIM118
            state = {}
        else:
            state = load_file(str(path))
            held = {n: t.shape for n, t in state.items()}
    except FileNotFoundError:
        raise DamagedFile(path, "is missing") from None
    except (OSError, SafetensorError, RuntimeError, ValueError) as e:  # truncated, corrupt or not a checkpoint
        raise DamagedFile(path, f"cannot be read as a safetensors checkpoint ({brief(e)}): it is damaged") from None
    missing = [n for n in names or () if n not in held]
    if missing:
        raise DamagedFile(path, f"lacks {len(missing)} of its {len(names)} tensors, e.g. {missing[0]}")
    wrong = [n for n, s in (shapes or {}).items() if held.get(n) != s]
    if wrong:
        raise DamagedFile(path, f"holds {wrong[0]} of shape {list(held[wrong[0]])}, not {list(shapes[wrong[0]])}")
    return state


def torch_state(path: str | Path, check: Callable[[Any], bool] = lambda _: True,
                what: str = "a training state") -> Any:
    """``torch.load(path, weights_only=True)`` (tensors and plain data only) when it loads and ``check`` holds,
    else :class:`DamagedFile`."""
    try:
        value = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise DamagedFile(path, "is missing") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file fails in many ways (EOFError, RuntimeError,
        # UnpicklingError, ...): each is the same damage
        raise DamagedFile(path, f"is damaged: not {what} ({type(e).__name__}: {brief(e)})") from None
    if not check(value):
        raise DamagedFile(path, f"is damaged: not {what}")
    return value


def arrays(path: str | Path, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the ``.npz`` file ``path`` (plain arrays only), else :class:`DamagedFile`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except FileNotFoundError:
        raise DamagedFile(path, "is missing") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DamagedFile(path, f"is damaged: not arrays {keys} ({type(e).__name__}: {brief(e)})") from None


# -- writing ---------------------------------------------------------------------------------------------------

_ERRNO = re.compile(r"os error (\d+)|\[Errno (\d+)\]")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a failure to write ``path`` that torch or safetensors reports in their own way (torch: ``RuntimeError:
    [enforce fail at inline_container.cc:...] ... file write failed``; safetensors: ``SafetensorError ...
    IoError(Os { code: 28 ...})``) into the ``OSError`` an ordinary write raises, with the errno where they name one
    (a full disk where they name none): ``promoe``'s top level makes that one ``error:`` line."""
    try:
        yield
    except (RuntimeError, SafetensorError) as e:
        text = str(e)
        if isinstance(e, RuntimeError) and "inline_container" not in text and "PytorchStreamWriter" not in text:
            raise
        if isinstance(e, SafetensorError) and "IoError" not in text:
            raise
        m = _ERRNO.search(text)
        code = int(next(g for g in m.groups() if g)) if m else errno.ENOSPC
        raise OSError(code, f"{text.splitlines()[0][:160]}", str(path)) from None
