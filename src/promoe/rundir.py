"""One run folder, one writer: a lock while a run writes into it, and what an existing folder holds.

* Two runs into one folder at once would interleave their checkpoints and scores: the second one stops
  with a message naming the first (:class:`RunLock`, an ``flock`` on ``<run>/.lock``, released by the
  operating system when the process ends, even by SIGKILL, so a crash never leaves a stale lock).
* A folder holding a run with another config would mix two experiments on resume: refused, naming the
  keys that differ.
* A finished run (``summary.json`` and ``REPORT.md``) is not run again unless asked to overwrite.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from promoe.errors import PromoeError

LOCK = ".lock"
FINISHED = ("summary.json", "REPORT.md")
"""Written last by a run (the summary, then the report of its analysis)."""


class RunDirError(PromoeError):
    """The run folder is in use, or holds another run."""


class RunLock:
    """Exclusive claim on a run folder for the life of the process (or until :meth:`release`)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(f"{self.path.parent}: another run is writing into this folder ({holder}); wait for "
                              "it to end, or give this run another folder (name=... or --output-dir)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                 .encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` wherever two resolved configs differ (``output_dir`` aside:
    the folder is the same by construction)."""
    a, b = _flat(old), _flat(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k != "output_dir"]


def is_finished(run_dir: Path) -> bool:
    return all((Path(run_dir) / f).exists() for f in FINISHED)


def prepare(run_dir: Path, config: dict, *, overwrite: bool = False) -> bool:
    """Check what ``run_dir`` holds before a run with ``config`` writes into it (hold its lock first).
    Returns True when it holds this run, finished. ``overwrite`` empties the folder first."""
    run_dir = Path(run_dir)
    if overwrite:
        for p in run_dir.iterdir() if run_dir.exists() else []:
            if p.name != LOCK:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return False
    path = run_dir / "config.yaml"
    if path.exists():
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        diff = config_differences(old, config)
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:5])
            more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
            raise RunDirError(f"{path}: this folder holds a run with another config ({shown}{more}); resuming "
                              "it would mix two experiments: give this run another name (name=...) or pass "
                              "--overwrite to replace it")
    return is_finished(run_dir)
