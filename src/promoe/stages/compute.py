"""Equal compute for the comparison: each trained model's budget in examples seen (``train.budget``) and its
learning rate, chosen on the validation tasks (``train.lr_candidates``, ``train.router_lr_candidates``).

A model over the specialised experts (``moe``, ``promoe``: :meth:`promoe.setup.Setup.experts_of`) stands on
the specialisation's ``experts.steps`` steps as well as its own ``train.steps``; with ``train.budget=matched``
a model that does not (``dense``, ``upcycled``) trains ``experts.steps + train.steps`` steps of the same batch
size, so every row of the comparison has seen as many training examples. Warm-up, validation and checkpoints
stay in steps: warm-up is there for the optimizer's moment estimates, which need as many steps in a long run
as in a short one, and the specialisation (as long as the matched run) validates at the same cadence.

The learning rate: a model searches the rate of what it trains (``lr`` when it trains more than routers,
``router_lr`` when routers and hypernetwork are all it trains). Each candidate trains a pilot of
``train.lr_pilot`` of the model's steps in ``train/<name>/lr/<candidate>/`` (resumable), validated at its end on
the validation tasks (never the test tasks); ``train/<name>/lr_choice.json`` records every finished candidate's
validation loss as it comes (a resumed run does not train those again), and the lowest wins. The model then
trains in full at the winner in ``train/<name>/``; with ``train.lr_pilot=1`` each pilot is that full training
and the winner's is copied there. ``train/<name>/compute.json`` (:func:`compute_record`) says what the model
cost.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from promoe.config import ExperimentConfig, TrainConfig
from promoe.data.examples import TrainExample, sampling_plan
from promoe.io import write_json
from promoe.model.moe_model import MoEModel
from promoe.readback import DamagedFile, has, json_file, redo
from promoe.training.loop import TrainingError
from promoe.training.trainer import TrainResult, param_groups

log = logging.getLogger(__name__)

CHOICE_FILE = "lr_choice.json"
COMPUTE_FILE = "compute.json"
"""``train/<name>/compute.json``: what training model ``name`` cost (read by :mod:`promoe.analysis.compute`)."""


def own_steps(cfg: ExperimentConfig, over_experts: bool) -> int:
    """The optimizer steps a model trains itself: ``train.steps``, plus the specialisation's ``experts.steps``
    for a model that does not start from the specialised experts when ``train.budget=matched``."""
    if cfg.train.budget == "matched" and cfg.experts.specialise and not over_experts:
        return cfg.experts.steps + cfg.train.steps
    return cfg.train.steps


def rates(model: MoEModel) -> tuple[str, ...]:
    """The learning-rate keys of ``train`` that ``model``'s trainable parameters use (``lr``: the backbone's
    layers and experts; ``router_lr``: routers and hypernetwork)."""
    groups = param_groups(model, 1.0, 1.0)
    return (("lr",) if groups[0]["params"] else ()) + (("router_lr",) if len(groups) > 1 else ())


def searched(tcfg: TrainConfig, model: MoEModel) -> tuple[str, list[float]]:
    """The rate ``model`` chooses and its candidates: ``lr`` for a model that trains more than its routers,
    else ``router_lr`` (no candidates: nothing to choose)."""
    key = "lr" if "lr" in rates(model) else "router_lr"
    return key, list(tcfg.lr_candidates if key == "lr" else tcfg.router_lr_candidates)


def pilot_steps(tcfg: TrainConfig) -> int:
    """The steps of one learning-rate candidate's pilot: ``lr_pilot`` of the model's, at least one."""
    return tcfg.steps if tcfg.lr_pilot >= 1 else max(1, round(tcfg.lr_pilot * tcfg.steps))


def pilot_config(tcfg: TrainConfig, key: str, value: float) -> TrainConfig:
    """The training of candidate ``value`` for rate ``key``: ``lr_pilot`` of the steps, validated at its end only,
    its warm-up at most half of them (so the peak rate is reached); at ``lr_pilot=1`` the full training."""
    if tcfg.lr_pilot >= 1:
        return replace(tcfg, **{key: value})
    steps = pilot_steps(tcfg)
    return replace(tcfg, steps=steps, warmup_steps=min(tcfg.warmup_steps, steps // 2), eval_every=0, patience=0,
                   **{key: value})


def label(value: float) -> str:
    """A candidate's name in ``lr_choice.json`` and its folder (``1e-4`` -> ``0.0001``)."""
    return f"{value:g}"


def drawn(examples: Sequence[TrainExample], tcfg: TrainConfig, seed: int, steps: Sequence[int]) -> set[int]:
    """The training examples the sampling plans of ``steps`` steps draw (as :class:`~promoe.training.trainer.Trainer` makes
    them): what the lower-layer cache must keep for a model's pilots and its training. A plan is read step by step
    and no further once it has drawn every example (a plan of many steps is not replayed to its end)."""
    out: set[int] = set()
    for n in sorted(set(steps)):
        for idx in sampling_plan(examples, steps=n, batch_size=tcfg.batch_size, temperature=tcfg.temperature,
                                 seed=seed):
            out.update(idx)
            if len(out) == len(examples):
                return out
    return out


def choose_lr(candidates: Sequence[float], key: str, pilot_steps: int, path: Path,
              train: Callable[[float], float], *, main: bool = True) -> dict:
    """Train each candidate not yet in ``path`` (``train(value) -> its best validation loss``), recording each as
    it finishes (``main``: this process writes), and return the choice: ``{key, pilot_steps, val_loss {candidate:
    loss, None: it diverged}, chosen}``, the lowest validation loss chosen (the first listed on a tie)."""
    record = {}
    if path.exists():
        try:
            record = json_file(path, lambda r: has(r, val_loss=dict) and all(
                v is None or isinstance(v, int | float) and not isinstance(v, bool) for v in r["val_loss"].values()),
                "a record of learning-rate pilots")
        except DamagedFile as e:  # each pilot resumes from its own checkpoint, so asking them again is cheap
            redo(e, "the pilots are asked for their validation loss again")
    losses: dict[str, float | None] = dict(record.get("val_loss", {}))
    for value in candidates:
        name = label(value)
        if name in losses:
            continue  # finished before a resume: not trained again
        try:
            losses[name] = float(train(value))
        except TrainingError as e:  # a rate too high for the model is a result of the search, not a failure
            log.warning("%s %s: the pilot diverged (%s); it is not a candidate", key, name, str(e).splitlines()[0])
            losses[name] = None
        if main:
            write_json(path, {"key": key, "pilot_steps": pilot_steps, "val_loss": losses})
    finite = [(losses[label(v)], i, v) for i, v in enumerate(candidates)
              if losses[label(v)] is not None and math.isfinite(losses[label(v)])]
    if not finite:
        raise TrainingError(f"{path}: every candidate {key} {[label(v) for v in candidates]} diverged in its pilot: "
                            f"list lower rates in train.{key.replace('lr', 'lr_candidates')}")
    chosen = min(finite)[2]
    choice = {"key": key, "pilot_steps": pilot_steps, "val_loss": {label(v): losses[label(v)] for v in candidates},
              "chosen": chosen}
    if main:
        write_json(path, choice)
    log.info("%s: %s %s chosen on the validation tasks (%s)", path.parent.name, key, label(chosen),
             ", ".join(f"{k}: {'diverged' if v is None else f'{v:.4f}'}" for k, v in choice["val_loss"].items()))
    return choice


def adopt_pilot(pilot_dir: Path, out_dir: Path) -> None:
    """With ``lr_pilot=1`` the winner's pilot is the model's training: its files go to ``out_dir`` (once)."""
    if not (out_dir / "best.safetensors").exists():
        for p in pilot_dir.iterdir():
            (shutil.copytree(p, out_dir / p.name, dirs_exist_ok=True) if p.is_dir()
             else shutil.copy2(p, out_dir / p.name))


def compute_record(cfg: ExperimentConfig, *, kind: str, name: str, over_experts: bool, tcfg: TrainConfig,
                   used: Sequence[str], choice: dict | None, result: TrainResult, router_fit: dict | None = None) -> dict:
    """``compute.json`` of model ``name``: examples seen (steps x batch size) by the specialisation it stands on
    and by its own training, its learning rates (``used``: the keys its parameters train with) and how they were
    chosen (``choice``; None: given, not searched), the pilots' cost, and the fit to routing targets it started from
    (``router_fit``: steps and descriptions; None: none)."""
    b = tcfg.batch_size
    spec = {"steps": cfg.experts.steps, "examples": cfg.experts.steps * b,
            "lr": cfg.experts.lr or cfg.train.lr} if over_experts else None
    if choice is not None:
        n = len(choice["val_loss"])
        choice = {**choice, "candidates": n, "examples": n * choice["pilot_steps"] * b
                  if cfg.train.lr_pilot < 1 else (n - 1) * tcfg.steps * b}  # at 1 the winner's pilot is the training
    return {"model": name, "kind": kind, "budget": cfg.train.budget, "batch_size": b, "specialisation": spec,
            "steps": tcfg.steps, "examples": tcfg.steps * b,
            "examples_total": tcfg.steps * b + (spec["examples"] if spec else 0),
            "lr": tcfg.lr if "lr" in used else None, "router_lr": tcfg.router_lr if "router_lr" in used else None,
            "lr_choice": choice, "best_step": result.best_step, "best_val_loss": result.best_val_loss,
            "router_fit": router_fit}
