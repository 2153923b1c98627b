"""Meta-training of the configured models on the training tasks (resumes; a finished training only
reloads its best weights), and the trained ``moe``'s routing profiles when a row needs them.

A trained model waits on disk, not in memory, while the next one trains: the peak memory of training is
one model with its gradients and optimizer state, whatever the number of models. The frozen lower
layers' output is computed once per training example and shared by every model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from promoe import registry
from promoe.config import PromptConfig
from promoe.data.examples import TrainExample, build_examples
from promoe.io import write_json
from promoe.model.hypernet import HyperNetwork, fit_to_targets
from promoe.model.moe_model import MoEModel
from promoe.resources import record_cut, record_stage, release_memory
from promoe.stages.compute import (
    CHOICE_FILE,
    COMPUTE_FILE,
    adopt_pilot,
    choose_lr,
    compute_record,
    drawn,
    label,
    own_steps,
    pilot_config,
    pilot_steps,
    rates,
    searched,
)
from promoe.stages.context import RunContext
from promoe.stages.logit_scale import logit_scales
from promoe.stages.lower_cache import LowerCache
from promoe.stages.profiles import load_or_make_profiles, routing_profiles
from promoe.stages.specialise import make_clusters, specialise
from promoe.training.trainer import Trainer, TrainingError

log = logging.getLogger(__name__)


def needs_profiles(cfg) -> bool:
    """True when a selected row is built from the trained ``moe``'s routing profiles."""
    return any("moe_profiles" in r.needs for r in registry.selected(cfg))


def training_examples(ctx: RunContext, prompt: PromptConfig) -> tuple[list[TrainExample], list[TrainExample]]:
    """The training and validation examples of the run's tasks, with prompts of ``prompt``; records the cut ones
    (stage ``train``, or ``train <condition>`` for another prompt condition)."""
    cfg, setup = ctx.cfg, ctx.setup
    common = dict(max_length=cfg.train.max_length, max_target_length=cfg.train.max_target_length,
                  prompt=prompt, wrap=setup.wrap, seq2seq=setup.seq2seq)
    examples = build_examples(ctx.splits.train, setup.tokenizer, per_task=cfg.train.examples_per_task, **common)
    val_examples = build_examples(ctx.splits.val, setup.tokenizer, per_task=cfg.train.val_examples_per_task, **common)
    log.info("training examples (%s prompts): %d from %d tasks; validation: %d from %d tasks", prompt.condition,
             len(examples), len(ctx.splits.train), len(val_examples), len(ctx.splits.val))
    stage = "train" if prompt.condition == cfg.prompt.condition else f"train {prompt.condition}"
    record_cut(ctx.times, stage, sum(e.cut for e in examples + val_examples), len(examples) + len(val_examples),
               cfg.train.max_length)
    return examples, val_examples


def fresh_model(ctx: RunContext, kind: str, weights=None):
    """Model ``kind``; ``moe`` and ``promoe`` over the specialised experts when there are some."""
    return ctx.setup.model(kind, weights, experts=ctx.setup.experts_of(kind, ctx.run_dir))


def fit_router(ctx: RunContext, model: MoEModel, targets: dict[str, int]) -> dict | None:
    """Fit ``model``'s hypernetwork to the routing targets on the training tasks' Definitions and other wordings
    (:func:`~promoe.model.hypernet.fit_to_targets`, ``train.route_fit_steps``); None where it makes no per-expert
    logits (no hypernetwork, or proactive ``hyper`` mode) or no steps are asked; else the fit's steps and
    descriptions (for ``compute.json``)."""
    hyper, steps = model.hyper, ctx.cfg.train.route_fit_steps
    if not isinstance(hyper, HyperNetwork) or hyper.n_out != model.cfg.n_experts or steps == 0:
        return None
    tasks = sorted(targets)
    emb = torch.cat([torch.cat([ctx.task_emb[t][None], ctx.wording_emb.get(t, ctx.task_emb[t][:0])]) for t in tasks])
    target = torch.tensor([targets[t] for t in tasks for _ in range(1 + len(ctx.wording_emb.get(t, ())))])
    losses = fit_to_targets(hyper, emb.float(), target, steps=steps, seed=ctx.cfg.seed)
    log.info("router fitted to its targets: %d descriptions of %d training tasks, cross-entropy %.3f -> %.3f in %d "
             "steps", len(emb), len(tasks), losses[0], losses[-1], steps)
    return {"steps": steps, "descriptions": len(emb), "loss_first": losses[0], "loss_last": losses[-1]}


def train_model(ctx: RunContext, kind: str, name: str, examples: list[TrainExample], val_examples: list[TrainExample],
                lower: LowerCache) -> tuple[MoEModel, set[int]]:
    """Train model ``kind`` into ``train/<name>/`` (resumes; a finished training only reloads) for its budget, at
    the learning rate chosen on the validation tasks (:mod:`promoe.stages.compute`); returns it with its best
    weights, in eval mode, and the training examples its batches used. Stage ``train_<name>``."""
    t1 = time.perf_counter()
    acc, cfg, out = ctx.acc, ctx.cfg, ctx.run_dir / "train" / name
    over_experts = ctx.setup.experts_of(kind, ctx.run_dir) is not None
    tcfg = replace(cfg.train, steps=own_steps(cfg, over_experts))
    model = fresh_model(ctx, kind)
    used = rates(model)
    # over specialised experts, each training task's own expert is its routing target (train.route_targets > 0)
    targets = make_clusters(ctx).assignment if over_experts and cfg.train.route_targets > 0 else None
    fitted = None
    key, candidates = searched(tcfg, model)
    choice = None
    # every plan's examples (pilots' and the training's) stay cached until the model is trained
    pilots = [pilot_steps(tcfg)] if len(candidates) > 1 else []
    lower.keep(drawn(examples, tcfg, cfg.seed, [tcfg.steps, *pilots]))
    release_memory()

    def fit(train_cfg, out_dir: Path, desc: str):
        nonlocal model, fitted
        m, model = model if model is not None else fresh_model(ctx, kind), None  # each training: a fresh model
        fitted = fit_router(ctx, m, targets) if targets else None
        trainer = Trainer(m, cfg=train_cfg, examples=examples, val_examples=val_examples, task_emb=ctx.task_emb,
                          pad_id=ctx.setup.tokenizer.pad_token_id, out_dir=out_dir, seed=cfg.seed,
                          lower=lower if m.split is not None else None, accelerator=acc,
                          wording_emb=ctx.wording_emb, route_targets=targets, validate_first=fitted is not None)
        del m
        try:
            return trainer.fit(desc=desc), trainer
        except TrainingError:
            del trainer
            acc.free_memory()
            release_memory()
            raise

    def pilot(value: float) -> float:
        result, trainer = fit(pilot_config(tcfg, key, value), out / "lr" / label(value), f"{name} {key} {label(value)}")
        del trainer
        acc.free_memory()
        release_memory()
        return result.best_val_loss

    if len(candidates) > 1:
        acc.wait_for_everyone()  # the record a resumed run reads is complete
        choice = choose_lr(candidates, key, pilots[0], out / CHOICE_FILE, pilot, main=acc.is_main_process)
        if tcfg.lr_pilot >= 1 and acc.is_main_process:
            adopt_pilot(out / "lr" / label(choice["chosen"]), out)
        acc.wait_for_everyone()
    if candidates:
        tcfg = replace(tcfg, **{key: choice["chosen"] if choice else candidates[0]})
    result, trainer = fit(tcfg, out, f"train {name}")
    seen = drawn(examples, tcfg, cfg.seed, [tcfg.steps])  # the training examples its batches use (trainer.plan's)
    record_stage(ctx.times, f"train_{name}", time.perf_counter() - t1)
    log.info("%s: trained %d steps, best validation loss %s at step %s", name, result.steps,
             result.best_val_loss, result.best_step)
    if acc.is_main_process:
        write_json(out / COMPUTE_FILE, compute_record(cfg, kind=kind, name=name, over_experts=over_experts, tcfg=tcfg,
                                                      used=used, choice=choice, result=result, router_fit=fitted))
    model = acc.unwrap_model(trainer.model).eval()  # holds the best weights
    del trainer
    acc.free_memory()  # Accelerate keeps references to prepared models and optimizers
    release_memory()
    return model, seen


def train_models(ctx: RunContext) -> None:
    """Train every model of ``cfg.train.models``; ``ctx.trained`` then holds each with its best weights."""
    cfg, acc, setup, run_dir = ctx.cfg, ctx.acc, ctx.setup, ctx.run_dir
    tok = setup.tokenizer
    lower = LowerCache()
    examples = val_examples = None
    if cfg.train.models or cfg.experts.specialise:
        examples, val_examples = training_examples(ctx, cfg.prompt)
    if cfg.experts.specialise:
        specialise(ctx, examples, val_examples, lower)
    for kind in cfg.train.models:
        model, seen = train_model(ctx, kind, kind, examples, val_examples, lower)
        if kind == "moe" and needs_profiles(cfg):
            ctx.profiles = load_or_make_profiles(run_dir / "routing_profiles" / "moe.npz", acc, partial(
                routing_profiles, model, examples, cfg.compare.profile_examples_per_task,
                lower if model.split is not None else None, tok.pad_token_id, cfg.eval.batch_size, seen))
        del model
        release_memory()
    record_stage(ctx.times, "lower_cache", lower.seconds, peak=False)  # (part of the training stages' times)
    lower.keep(set())  # training is over: only the validation examples' states stay
    release_memory()
    ctx.trained = {kind: fresh_model(ctx, kind, run_dir / "train" / kind / "best.safetensors")
                   for kind in cfg.train.models}
    path = run_dir / "routing" / "logit_scale.json"
    if val_examples and acc.is_main_process and not path.exists():
        t1 = time.perf_counter()
        with acc.autocast():  # as the checkpoint choice that cached the validation states
            write_json(path, logit_scales(ctx.trained, val_examples, ctx.task_emb, tok.pad_token_id, lower))
        record_stage(ctx.times, "logit_scale", time.perf_counter() - t1)
    lower.store.clear()
    release_memory()
