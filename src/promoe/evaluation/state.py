"""Progress of an evaluation pass on disk, so a killed pass resumes where it stopped.

A pass runs in units (a batch of prompts, or a test task of few-shot fine-tuning) in a fixed order.
After each unit, every row's answers so far, its routing counts, the state of its random routers (the
``random`` floor draws a sequence) and its number of finished units are written atomically to one
JSON file (``<run>/progress/<pass>.json``). A re-run of the pass skips what a row already finished
and continues from the saved counts and states, so it ends with exactly the answers and statistics
of an uninterrupted pass. A fingerprint of the pass (its prompts and decoding
settings) guards against using the file of another pass; the file is removed once the rows are scored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promoe.io import atomic_write_text
from promoe.model.stats import RoutingStats
from promoe.readback import DamagedFile, has, json_file, redo

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-serialisable ``parts`` (what makes two passes the same pass)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _stats_json(stats: RoutingStats | None) -> dict | None:
    if stats is None:
        return None
    s = stats.state()
    return {"load": s["load"].tolist(), "prob_sum": s["prob_sum"].tolist(), "entropy_sum": s["entropy_sum"].tolist(),
            "tokens": s["tokens"].tolist(), "task_load": {k: v.tolist() for k, v in sorted(s["task_load"].items())}}


def _rng_json(model) -> dict[str, str]:
    return {str(layer): base64.b64encode(state.numpy().tobytes()).decode()
            for layer, state in model.rng_states().items()}


def _rng_states(saved: dict[str, str]) -> dict[int, torch.Tensor]:
    return {int(layer): torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)
            for layer, s in saved.items()}


def _stats_state(saved: dict) -> dict:
    arrays = {k: np.asarray(saved[k], dtype=np.float64) for k in ("load", "prob_sum", "entropy_sum", "tokens")}
    return {**arrays, "task_load": {k: np.asarray(v, dtype=np.float64) for k, v in saved["task_load"].items()}}


def _generator_bytes() -> set[int]:
    """The sizes of a random generator's state here (CPU, and CUDA where there is one)."""
    sizes = {torch.Generator().get_state().numel()}
    if torch.cuda.is_available():
        sizes.add(torch.Generator(device="cuda").get_state().numel())
    return sizes


def _check_row(row: object, v, path: Path) -> None:
    """One :class:`DamagedFile` unless ``row`` is what :meth:`PassState.save` writes for row ``v`` (answers as
    strings, counts of the shapes of ``v``'s statistics, random states of a generator's size)."""
    def bad(what: str) -> DamagedFile:
        return DamagedFile(path, f"is damaged: row {v.name!r} {what}")

    if not has(row, done=int, answers=dict, rng=dict) or row["done"] < 0:
        raise bad("is not a record of finished units, answers and random states")
    if not all(isinstance(k, str) and isinstance(a, str) for k, a in row["answers"].items()):
        raise bad("holds answers that are not text")
    nll = row.get("likelihood") or {}
    if not isinstance(nll, dict) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                            for x in nll.values()):
        raise bad("holds reference likelihoods that are not numbers")
    if row.get("stats") is not None and v.stats is not None:
        now, st = v.stats.state(), row["stats"]
        try:
            same = has(st, task_load=dict) and all(
                np.asarray(st[k], dtype=np.float64).shape == np.shape(now[k])
                for k in ("load", "prob_sum", "entropy_sum", "tokens")) and all(
                np.asarray(x, dtype=np.float64).shape == np.shape(now["load"]) for x in st["task_load"].values())
        except (KeyError, TypeError, ValueError):
            same = False
        if not same:
            raise bad("holds routing counts of another shape")
    try:
        sizes = {len(base64.b64decode(s, validate=True)) for s in row["rng"].values()}
        layers = [int(k) for k in row["rng"]]
    except (TypeError, ValueError, binascii.Error):
        raise bad("holds random states that cannot be decoded") from None
    if not sizes <= _generator_bytes() or any(k < 0 for k in layers):
        raise bad("holds random states of another size")


class PassState:
    """Units finished, answers, routing counts and random-router states of the rows of one pass;
    ``path=None`` keeps nothing.

    ``resume(rows, out)`` restores what a killed run saved (answers into ``out``, counts into each
    row's ``stats``) and returns the units each row has finished; ``save(rows, out, done)`` records the
    rows' progress after a unit. Float counts go through JSON exactly (shortest round-trip repr).
    """

    def __init__(self, path: Path | None, key: str, label: str = "pass", unit: str = "batches") -> None:
        self.path, self.key, self.label, self.unit = path, key, label, unit
        self.saved: dict[str, dict] = {}  # what the file holds per row

    def resume(self, rows: Sequence, out: dict[str, dict[str, str]],
               likelihood: dict[str, dict[str, float]] | None = None) -> dict[str, int]:
        """Units finished per row name (0 for a row the file does not hold); with ``likelihood``, the
        rows' saved reference NLLs go there."""
        done = {v.name: 0 for v in rows}
        if self.path is None or not self.path.exists():
            return done
        try:  # the whole file is checked before any of it is used: a damaged one changes nothing
            saved = json_file(self.path, lambda x: has(x, key=str, rows=dict), "a progress record")
            if saved["key"] != self.key:
                log.warning("%s: %s belongs to another pass (other prompts or settings): starting the pass over",
                            self.label, self.path)
                return done
            for v in rows:
                if v.name in saved["rows"]:
                    _check_row(saved["rows"][v.name], v, self.path)
        except DamagedFile as e:
            redo(e, f"{self.label}: starting the pass over")
            return done
        self.saved = saved["rows"]
        for v in rows:
            row = self.saved.get(v.name)
            if row is None:
                continue
            done[v.name] = row["done"]
            out[v.name].update(row["answers"])
            if likelihood is not None:
                likelihood[v.name].update(row.get("likelihood") or {})
            if v.stats is not None and row["stats"] is not None:
                v.stats.merge(_stats_state(row["stats"]))
            v.model.set_rng_states(_rng_states(row["rng"]))
        if any(done.values()):
            log.info("%s: resumed at %d %s done (%s)", self.label, min(done.values()), self.unit, self.path)
        return done

    def save(self, rows: Sequence, out: dict[str, dict[str, str]], done: int,
             likelihood: dict[str, dict[str, float]] | None = None) -> None:
        """Record that ``rows`` have finished ``done`` units (their answers, reference NLLs and counts are
        up to date)."""
        if self.path is None:
            return
        for v in rows:  # rows not in this unit keep what they had
            self.saved[v.name] = {"done": done, "answers": out[v.name], "stats": _stats_json(v.stats),
                                  "rng": _rng_json(v.model)}
            if likelihood is not None:
                self.saved[v.name]["likelihood"] = likelihood[v.name]
        atomic_write_text(self.path, json.dumps({"key": self.key, "rows": self.saved}, ensure_ascii=False))
