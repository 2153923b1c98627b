"""One run folder, one writer: a lock while a run writes into it, and what an existing folder holds.

* Two runs into one folder at once would interleave their checkpoints and scores: the second one stops
  with a message naming the first (:class:`RunLock`, an ``flock`` on ``<run>/.lock``, released by the
  operating system when the process ends, even by SIGKILL, so a crash never leaves a stale lock).
* A folder holding a run with another config would mix two experiments on resume: refused, naming the
  keys that differ.
* A finished run (``summary.json`` and ``REPORT.md``) is not run again unless asked to overwrite.
* Only a run's own writer deletes run files: a run marks its folder (:data:`MARKER`) when it claims it, and
  ``--overwrite`` empties only a marked folder; a folder that holds anything else and no marker is not a
  run of this project and is refused, with or without ``--overwrite``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from promoe.errors import ConfigError, PromoeError
from promoe.limits import read_yaml_file

LOCK = ".lock"
MARKER = ".promoe-run"
"""Written into a run folder when a run claims it: only a folder holding it is emptied by ``--overwrite``."""
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
        refuse_foreign(self.path.parent)  # not even a lock file goes into a folder that is not a run's
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


SHARED_EXPERTS = ("experts", "train/experts")
"""What a run taking its specialised experts from another (``experts.from_run``) copies from it."""
SAME_FOR_EXPERTS = ("model", "experts")
"""The config sections both runs must agree on (``experts.from_run`` and ``experts.per_seed`` aside)."""


def check_experts_source(source: Path, config: dict) -> None:
    """One error, naming ``experts.from_run``, when run folder ``source`` holds no finished specialisation or
    was made with other model or experts settings than ``config`` (a resolved config)."""
    if not (source / "train" / "experts" / "best.safetensors").exists() or not (source / "config.yaml").exists():
        raise ConfigError(f"experts.from_run={str(source)!r} holds no specialised experts (train/experts/best."
                          "safetensors and config.yaml): name a run folder whose specialisation finished")
    try:
        theirs = read_yaml_file(source / "config.yaml") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"experts.from_run={str(source)!r}: its config.yaml cannot be read ({type(e).__name__}): "
                          "name a run folder whose config is intact") from None
    if not isinstance(theirs, dict):
        raise ConfigError(f"experts.from_run={str(source)!r}: its config.yaml is not a mapping: name another run")
    differ = [k for k, _, _ in config_differences({s: theirs.get(s) or {} for s in SAME_FOR_EXPERTS},
                                                  {s: config[s] for s in SAME_FOR_EXPERTS})
              if k not in ("experts.from_run", "experts.per_seed")]
    if differ:
        raise ConfigError(f"experts.from_run={str(source)!r} was made with other model / experts settings "
                          f"({', '.join(differ)}): give this run the same, or unset experts.from_run")


def adopt_experts(source: Path, run_dir: Path, config: dict) -> None:
    """Copy the specialised experts of run ``source`` into ``run_dir`` (:func:`check_experts_source` first;
    once: a folder that has them keeps them)."""
    if (run_dir / "train" / "experts" / "best.safetensors").exists():
        return
    check_experts_source(source, config)
    for item in SHARED_EXPERTS:
        shutil.copytree(source / item, run_dir / item, dirs_exist_ok=True)


def is_finished(run_dir: Path) -> bool:
    return all((Path(run_dir) / f).exists() for f in FINISHED)


def is_run(run_dir: Path) -> bool:
    """True when ``run_dir`` is a run folder of this project (it holds :data:`MARKER`)."""
    return (Path(run_dir) / MARKER).is_file()


def claim(run_dir: Path) -> None:
    """Mark ``run_dir`` as a run folder (:data:`MARKER`), creating it; a folder that holds something else
    and no marker is refused (:class:`RunDirError`)."""
    run_dir = Path(run_dir)
    refuse_foreign(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not is_run(run_dir):
        (run_dir / MARKER).write_text(f"PRo-MoE run folder, claimed {time.strftime('%Y-%m-%d %H:%M:%S')}. "
                                      "--overwrite empties only folders that hold this file.\n", encoding="utf-8")


def refuse_foreign(run_dir: Path) -> None:
    """Refuse a ``run_dir`` that is a file, or a folder holding anything but a lock and no :data:`MARKER`."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: is a file, not a run folder: choose another name=... or --output-dir")
    if file := next((q for q in run_dir.parents if q.exists() and not q.is_dir()), None):
        raise RunDirError(f"{file}: is a file, but the run folder {run_dir} would be inside it: give --output-dir a "
                          "folder")
    if not run_dir.is_dir() or is_run(run_dir):
        return
    if found := sorted(p.name for p in run_dir.iterdir() if p.name != LOCK):
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise RunDirError(f"{run_dir}: this folder is not a PRo-MoE run folder (no {MARKER}; it holds {shown}), so "
                          "the run neither writes into it nor empties it, --overwrite or not: choose another "
                          "name=... or --output-dir (a run from before run markers: delete it yourself)")


def prepare(run_dir: Path, config: dict, *, overwrite: bool = False) -> bool:
    """Check what ``run_dir`` holds before a run with ``config`` writes into it (hold its lock first).
    Returns True when it holds this run, finished. ``overwrite`` empties the folder first — only a run
    folder (:func:`is_run`); a folder holding anything else is refused either way."""
    run_dir = Path(run_dir)
    refuse_foreign(run_dir)
    if overwrite:
        for p in run_dir.iterdir() if run_dir.exists() else []:
            if p.name != LOCK:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return False
    path = run_dir / "config.yaml"
    if path.exists():
        try:
            old = read_yaml_file(path) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise RunDirError(f"{path}: the run's config cannot be read ({type(e).__name__}), so it cannot be "
                              "checked against this run's: restore it, or pass --overwrite to start this folder "
                              "again") from None
        if not isinstance(old, dict):
            raise RunDirError(f"{path}: the run's config is not a mapping: restore it, or pass --overwrite")
        diff = config_differences(old, config)
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:5])
            more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
            raise RunDirError(f"{path}: this folder holds a run with another config ({shown}{more}); resuming "
                              "it would mix two experiments: give this run another name (name=...) or pass "
                              "--overwrite to replace it")
    return is_finished(run_dir)


USER_EVAL = "user_eval"
"""The one place inside a run folder where commands that read the run (``promoe eval``) may write."""


def _looks_like_run(folder: Path) -> bool:
    """A run folder: marked, or (a run from before markers) a ``config.yaml`` beside its scores or summary."""
    return is_run(folder) or (folder / "config.yaml").is_file() and (
        (folder / "scores").is_dir() or (folder / "summary.json").is_file())


def run_root(path: Path) -> Path | None:
    """The run folder ``path`` is (or lies in), or None."""
    p = Path(path).resolve()
    return next((q for q in (p, *p.parents) if q.is_dir() and _looks_like_run(q)), None)


def guard_output(path: str | Path, *, flag: str, folder: bool, writes: Sequence[str | Path] = (),
                 inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an output of a command other than the run itself when it would write over a run's results (it lies
    in a run folder, outside its :data:`USER_EVAL`), over the command's own ``inputs`` (``writes``: the files it
    writes, ``path`` itself for a file), or where a file stands in for a folder (``folder``) or a folder for a
    file. One :class:`RunDirError` naming ``flag``."""
    p = Path(path)
    if p.exists() and folder != p.is_dir():
        kind = "folder" if folder else "file"
        raise RunDirError(f"{p}: is {'a file' if folder else 'a folder'}, but {flag} names a {kind}: give {flag} a "
                          f"new {kind}")
    if (root := run_root(p)) is not None:
        rel = p.resolve().relative_to(root)
        if not rel.parts or rel.parts[0] != USER_EVAL:
            raise RunDirError(f"{p}: lies in the run folder {root}, whose results only its run writes: give {flag} a "
                              f"path outside it (or under {root / USER_EVAL})")
    written = {Path(w).resolve() for w in (*writes, *(() if folder else (p,)))}
    for i in inputs:
        if Path(i).resolve() in written:
            raise RunDirError(f"{i}: is this command's input and would be overwritten by its output ({flag} {p}): "
                              f"give {flag} another path")
