"""Conditions applied to model rows: ``<model>-icl`` (Definition + positive examples in the prompt),
``<model>-fewshot`` (fine-tuned on each test task's positive examples before answering it) and
``<model>-router_only`` (trained and scored with prompts that hold the instance input alone)."""

from __future__ import annotations

import time
from dataclasses import replace

from promoe import registry
from promoe.evaluation.predict import Variant
from promoe.registry import ABLATED, HEADROOM, Row
from promoe.resources import record_stage, release_memory
from promoe.stages.context import RunContext
from promoe.stages.lower_cache import LowerCache
from promoe.stages.score_rows import ablation_rows, ablation_texts
from promoe.stages.train_models import train_model, training_examples
from promoe.training.fewshot import fewshot_tasks, run_fewshot


def in_context(ctx: RunContext, row: Row, bases: list[str]) -> None:
    """The zero-shot rows ``bases`` again, with ``compare.icl_examples`` demonstrations in the prompt."""
    rows = [Variant(f"{m}-{row.name}", ctx.rows[m].model, ctx.rows[m].task_emb) for m in bases if m in ctx.rows]
    prompt = replace(ctx.cfg.prompt, n_pos_examples=ctx.cfg.compare.icl_examples)
    ctx.evaluation.run(rows, prompt=prompt, label=row.name)


def fewshot(ctx: RunContext, row: Row, bases: list[str]) -> None:
    """The trained models ``bases``, each fine-tuned per test task (``compare.fewshot_*``), then scored."""
    ev, c, acc = ctx.evaluation, ctx.cfg.compare, ctx.acc
    few = {f"{m}-{row.name}": ctx.trained[m] for m in bases if m in ctx.trained}
    few = {n: m for n, m in few.items() if not ev.done(n)}
    if not few:
        return
    t1 = time.perf_counter()
    chosen = set(fewshot_tasks(list(dict.fromkeys(t.name for t, _ in ev.items)), c.fewshot_tasks))
    variants = {v.name: v for v in ev.prepare([Variant(n, m, ctx.task_emb if m.hyper is not None else None,
                                                        tasks=chosen) for n, m in few.items()])}
    items = [(t, i) for t, i in ev.items if any(v.covers(t.name, i.id) for v in variants.values())]
    preds, nll = run_fewshot(few, variants, items[acc.process_index::acc.num_processes], ctx.setup.tokenizer,
                        cfg=ctx.cfg, wrap=ctx.setup.wrap, task_emb=ctx.task_emb,
                        progress=ev.progress_file(row.name))
    ev.record(list(variants.values()), preds, row.name, nll)
    record_stage(ctx.times, row.name, time.perf_counter() - t1)


def router_only(ctx: RunContext, row: Row, bases: list[str]) -> None:
    """The trained models ``bases`` again, each trained from the same start (the specialised experts, when
    there are some) and scored with router-only prompts: the instance input alone, so the task reaches a model
    only through its router (``promoe``) or not at all. Trains into ``train/<base>-<name>/`` (resumes). With
    ``moe`` among them, the headroom rows the run selects (``uniform``, ``oracle``) are built again over its
    router-only self, the oracle choosing on router-only prompts of the demonstrations; with ``promoe``, the
    ablations the run selects (``promoe-<ablation>-<name>``: its router-only self given other descriptions)."""
    ev = ctx.evaluation
    headroom = [r for r in registry.selected(ctx.cfg, "router") if r.name in HEADROOM] \
        if row.carries and "moe" in bases else []
    ablations = ablation_texts(ctx) if row.carries and ABLATED in bases else {}
    names = [f"{n}-{row.name}" for n in (*bases, *(r.name for r in headroom), *ablations)]
    if all(ev.done(n) for n in names):
        return
    prompt = replace(ctx.cfg.prompt, condition="router_only", n_pos_examples=0)
    examples, val_examples = training_examples(ctx, prompt)
    lower = LowerCache()  # other token sequences than the standard prompts': hidden states of their own
    trained = {}
    for base in bases:
        model, _ = train_model(ctx, base, f"{base}-{row.name}", examples, val_examples, lower)
        # routing as scored, as the run's own trained models: the headroom rows copy its routers (the oracle chooses so)
        trained[base] = model.for_scoring()
    record_stage(ctx.times, f"lower_cache {row.name}", lower.seconds, peak=False)
    del lower, examples, val_examples
    release_memory()
    variants = [Variant(f"{b}-{row.name}", m, ctx.task_emb if m.hyper is not None else None) for b, m in trained.items()]
    condition = replace(ctx, cfg=replace(ctx.cfg, prompt=prompt), trained=trained)
    for r in headroom:
        if not ev.done(name := f"{r.name}-{row.name}") and (v := r.builder()(condition, replace(r, name=name))):
            variants.append(v)
    if ablations:
        variants += ablation_rows(condition, trained[ABLATED], ablations, row.name)
    ev.run(variants, prompt=prompt, label=row.name)
