"""A training's files: its trained parameters (``best.safetensors``), its resumable checkpoint ``last/`` (trained
parameters, optimizer, scheduler and random state, ``state.json`` with the step and the best validation so far)
and its ``metrics.jsonl``.

Nothing read back is trusted (:mod:`promoe.readback`): a checkpoint is read whole and checked (every file parses,
holds the model's tensors at their shapes, a step within the training, an optimizer state of the right form, a
readable log and, where it names a best step, a readable ``best.safetensors``) before any of it reaches the model
or the optimizer. A damaged one is not resumed from: the training goes on from the previous intact checkpoint
(``.last.old``, left by a kill between two renames) or starts again from step 0, with one warning; since training
is deterministic in its seed, the result is the one an undamaged run gets.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from promoe.io import atomic_write_text
from promoe.model.moe_model import MoEModel
from promoe.readback import DamagedFile, brief, has, json_file, redo, tensors, torch_state, writing

log = logging.getLogger(__name__)

FRESH = {"step": 0, "best_val_loss": None, "best_step": None, "bad_validations": 0}
"""The state of a training that has not started."""

REDO = ("delete it and run the run's command again (a finished run: delete its REPORT.md too, so that it resumes): "
        "the training that wrote it starts over and the rest is kept")
"""The fix of a damaged trained-parameters file that the run itself did not meet while training (it then trains
again by itself: :func:`resume`)."""


def trainable(model: MoEModel) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: MoEModel, path: Path) -> None:
    """The trained parameters only (the frozen backbone is rebuilt from the backbone cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path):
        save_file({n: p.detach().contiguous().cpu() for n, p in trainable(model).items()}, str(tmp))
    tmp.replace(path)


def load_trainable(model: MoEModel, path: Path) -> None:
    load_params(model, path, list(trainable(model)), what="trained parameters")


def load_params(model: MoEModel, path: Path, names: Sequence[str], *, what: str, hint: str = "") -> None:
    """Copy the parameters ``names`` of ``model`` from the safetensors file ``path``; one error if any is missing."""
    try:
        state = tensors(path)
    except DamagedFile as e:  # missing, truncated, corrupt, or not a checkpoint at all
        raise DamagedFile(path, e.problem, REDO) from None
    missing = sorted(set(names) - set(state))
    if missing:
        raise DamagedFile(path, f"checkpoint lacks {len(missing)} {what}, e.g. {missing[0]}{hint}")
    with torch.no_grad():
        for n in names:
            model.get_parameter(n).copy_(state[n])


def read_metrics(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``; a torn last line (the process was killed while appending it) is
    dropped, a broken line before it is :class:`DamagedFile`."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedFile(path, f"cannot be read ({type(e).__name__})") from None
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i < len(lines) - 1:
                raise DamagedFile(path, f"line {i + 1} is not JSON ({e})") from None
            continue
        if not has(row, step=int):
            raise DamagedFile(path, f"line {i + 1} is not a row of the training log (no step)")
        rows.append(row)
    return rows


def save_last(out_dir: Path, model: MoEModel, opt: torch.optim.Optimizer, sched, state: dict) -> None:
    """Write the checkpoint ``out_dir/last`` (through a temporary folder and two renames: a kill leaves the old
    or the new one whole)."""
    tmp, last, old = out_dir / ".last.tmp", out_dir / "last", out_dir / ".last.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_trainable(model, tmp / "trainable.safetensors")
    with writing(tmp / "optim.pt"):  # dropout / router noise continue alike
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()},
                   tmp / "optim.pt")
    atomic_write_text(tmp / "state.json", json.dumps(state))
    shutil.rmtree(old, ignore_errors=True)
    if last.exists():
        last.rename(old)
    tmp.rename(last)
    shutil.rmtree(old, ignore_errors=True)


def _state_ok(s: object, steps: int) -> bool:
    if not has(s, step=int, bad_validations=int) or not 0 <= s["step"] <= steps:
        return False
    best, loss = s.get("best_step"), s.get("best_val_loss")
    return ((best is None or has(s, best_step=int) and 0 <= best <= s["step"]) and
            (loss is None or has(s, best_val_loss=(int, float))))


def _optim_ok(o: object) -> bool:
    rng = o.get("rng") if isinstance(o, dict) else None
    return (has(o, optimizer=dict, scheduler=dict) and has(o["optimizer"], state=dict, param_groups=list)
            and has(o["scheduler"], last_epoch=int) and (rng is None or isinstance(rng, torch.Tensor)
                                                          and rng.dtype == torch.uint8
                                                          and rng.shape == torch.get_rng_state().shape))


def read_last(last: Path, model: MoEModel, steps: int) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """The checkpoint in folder ``last`` — ``(state, trained parameters, optimizer state)`` — checked whole
    (module docstring) against ``model`` and a training of ``steps`` steps, or :class:`DamagedFile`."""
    state = json_file(last / "state.json", lambda s: _state_ok(s, steps),
                      f"the state of a training of {steps} steps")
    mine = trainable(model)
    params = tensors(last / "trainable.safetensors", list(mine), {n: p.shape for n, p in mine.items()})
    optim = torch_state(last / "optim.pt", _optim_ok, "an optimizer, scheduler and random state")
    out = last.parent
    if state["best_step"] is not None:  # the weights the training chose must still be there
        tensors(out / "best.safetensors", list(mine), {n: p.shape for n, p in mine.items()}, header_only=True)
    if state["step"] and (out / "metrics.jsonl").exists():
        read_metrics(out / "metrics.jsonl")
    return state, params, optim


def resume(out_dir: Path, model: MoEModel, opt: torch.optim.Optimizer, sched, steps: int) -> dict:
    """Load the newest intact checkpoint of ``out_dir`` into ``model``, ``opt``, ``sched`` and torch's random
    state and return its state; a damaged one is passed over with one warning; none: :data:`FRESH`."""
    for last in (out_dir / "last", out_dir / ".last.old"):  # .last.old: a kill between the renames of save_last
        if not last.exists():
            continue
        try:
            state, params, optim = read_last(last, model, steps)
            _apply(model, opt, sched, last, params, optim)
        except DamagedFile as e:
            redo(e, f"the checkpoint {last.name}/ is not resumed from; the training goes on from an earlier one or "
                    "starts again from step 0 (the same seed gives the same result)")
            continue
        log.info("%s: resumed at step %d", out_dir, state["step"])
        return state
    return dict(FRESH)


def _apply(model: MoEModel, opt: torch.optim.Optimizer, sched, last: Path, params: dict[str, torch.Tensor],
           optim: dict) -> None:
    """Give the checked checkpoint to the optimizer and scheduler (restored as they were if either refuses it:
    :class:`DamagedFile`), then to torch's random state and the model."""
    before = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    try:
        opt.load_state_dict(optim["optimizer"])
        sched.load_state_dict(optim["scheduler"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:
        opt.load_state_dict(before[0])
        sched.load_state_dict(before[1])
        raise DamagedFile(last / "optim.pt", f"does not fit this model's optimizer ({type(e).__name__}: "
                                             f"{brief(e)})") from None
    if "rng" in optim:
        torch.set_rng_state(optim["rng"])
    with torch.no_grad():
        for n, p in trainable(model).items():
            p.copy_(params[n])
