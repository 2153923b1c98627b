"""Specialised experts (``experts.specialise``): before the routers are learned, each expert is trained
on one cluster of training tasks — the Branch-Train-MiX recipe, as one MoE whose routing is fixed to each
example's cluster — and the result is measured, not assumed: the expert x cluster matrix.

Writes ``experts/clusters.json`` (the clusters; validation and test tasks assigned to the nearest
centroid), ``train/experts/`` (the specialisation's training, resumable; ``best.safetensors`` is what
``moe`` and ``promoe`` start from) and ``experts/matrix.json``: each expert's mean per-token NLL of the
references on each cluster's validation examples, every token routed to that one expert, and how far the
experts moved apart: in their weights (``weight_distance``) and in what they compute on the same hidden states
(``output_distance``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from promoe.config import to_dict
from promoe.data.clusters import Clusters, cluster_splits
from promoe.data.examples import TrainExample
from promoe.io import write_json
from promoe.model.moe_model import MoEModel
from promoe.model.task_routing import ClusterRouting, task_routed
from promoe.readback import DamagedFile, has, json_file, redo
from promoe.resources import record_stage, release_memory
from promoe.rundir import adopt_experts
from promoe.stages.context import RunContext
from promoe.stages.lower_cache import LowerCache
from promoe.training.trainer import Trainer, batch_of, val_key

log = logging.getLogger(__name__)


def make_clusters(ctx: RunContext) -> Clusters:
    """The clusters of the training tasks (one per expert), saved once in ``experts/clusters.json``."""
    path = ctx.run_dir / "experts" / "clusters.json"
    if path.exists():
        try:
            data = json_file(path, lambda d: has(d, method=str, assignment=dict, centroids=list), "the clusters")
            return Clusters.from_json(data)
        except (DamagedFile, KeyError, TypeError, ValueError) as e:  # made again alike: the same seed, the same clusters
            err = e if isinstance(e, DamagedFile) else DamagedFile(path, f"is damaged: not the clusters ({e!r})")
            redo(err, "the clusters are made again")
    ec = ctx.cfg.experts
    emb = {k: v.float().numpy() for k, v in ctx.task_emb.items()}
    clusters, held = cluster_splits(ctx.splits, emb, ctx.cfg.model.n_experts, ec.clusters, seed=ctx.cfg.seed,
                                    cluster_file=ec.cluster_file, meta_key=ec.cluster_key)
    if ctx.acc.is_main_process:
        write_json(path, {**clusters.to_json(), **held})
    log.info("experts: %d clusters of the training tasks by %s, sizes %s", clusters.n, ec.clusters, clusters.sizes())
    return clusters


def balanced(clusters: Clusters) -> dict[str, float]:
    """Each training task's sampling weight 1 / (its cluster's size): every cluster, so every expert, is
    drawn equally often."""
    sizes = clusters.sizes()
    return {t: 1.0 / sizes[c] for t, c in clusters.assignment.items()}


def specialist(ctx: RunContext, clusters: Clusters, expert: int | None = None) -> MoEModel:
    """The MoE whose every task goes to its cluster's expert (or every task to ``expert``); routers fixed. One
    expert per token (``top_k=1``): the others would get weight ~0 and cost as much as the one. Never scored itself,
    so its validation routes as it trains (no ``eval_top_k``)."""
    model = ctx.setup.model("promoe", model_cfg=replace(ctx.cfg.model, proactive_mode="task", top_k=1, eval_top_k=None))
    gen = ClusterRouting(clusters.known, torch.as_tensor(clusters.centroids), n_layers=len(model.moe_layers),
                         n_experts=model.moe_layers[0].experts.n_experts, expert=expert)  # training tasks by name
    task_routed(model, gen)
    for n, p in model.named_parameters():
        if "router" in n or n.startswith("hyper"):
            p.requires_grad_(False)  # the routing is the clusters', not learned
    return model


def specialise(ctx: RunContext, examples: Sequence[TrainExample], val_examples: Sequence[TrainExample],
               lower: LowerCache) -> None:
    """Train the specialised experts (resumes; with ``experts.from_run``, take that run's) and measure the
    expert x cluster matrix; ``moe`` and ``promoe`` then start from ``train/experts/best.safetensors``
    (:meth:`Setup.experts_of`)."""
    cfg, acc, run_dir = ctx.cfg, ctx.acc, ctx.run_dir
    t0 = time.perf_counter()
    if cfg.experts.from_run and acc.is_main_process:
        adopt_experts(Path(cfg.experts.from_run), run_dir, to_dict(cfg))
        log.info("experts: the specialised experts of %s, not trained again", cfg.experts.from_run)
    acc.wait_for_everyone()
    clusters = make_clusters(ctx)
    model = specialist(ctx, clusters)
    trainer = Trainer(model, cfg=replace(cfg.train, steps=cfg.experts.steps, lr=cfg.experts.lr or cfg.train.lr), examples=examples,
                      val_examples=val_examples, task_emb=ctx.task_emb, pad_id=ctx.setup.tokenizer.pad_token_id,
                      out_dir=run_dir / "train" / "experts", seed=cfg.seed,
                      lower=lower if model.split is not None else None, accelerator=acc,
                      task_weight=balanced(clusters) if cfg.experts.balance else None)
    result = trainer.fit(desc="specialise experts")
    log.info("experts: specialised in %d steps, best validation loss %s", result.steps, result.best_val_loss)
    model = acc.unwrap_model(trainer.model).eval()
    del trainer
    acc.free_memory()
    release_memory()
    record_stage(ctx.times, "specialise", time.perf_counter() - t0)
    path = run_dir / "experts" / "matrix.json"
    if not path.exists():
        t0 = time.perf_counter()
        with acc.autocast():
            matrix = expert_matrix(model, clusters, val_examples, ctx, lower)
        if acc.is_main_process:
            write_json(path, matrix)
        record_stage(ctx.times, "expert_matrix", time.perf_counter() - t0)


def _relative(sq_diff: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """``sqrt(sq_diff[i, j]) / sqrt(sq_norm[i])``: pairwise distances relative to row i's norm."""
    return sq_diff.sqrt() / sq_norm.sqrt().clamp_min(1e-12)[:, None]


@torch.no_grad()
def weight_distance(model: MoEModel) -> list[list[float]]:
    """How far the experts' weights moved apart: ``||W_i - W_j|| / ||W_i||`` over all of an expert's FFN
    weights (a shared expert's counted in every ``W_i``), averaged over MoE layers (experts x experts; 0 for
    the identical upcycled copies)."""
    per_layer = []
    for layer in model.moe_layers:
        w = torch.cat([layer.experts.w_in.flatten(1), layer.experts.w_out.flatten(1)], dim=1).double()
        shared = 0.0 if layer.shared is None else sum(float(p.double().square().sum()) for p in layer.shared.parameters())
        per_layer.append(_relative(torch.cdist(w, w).square(), w.square().sum(1) + shared))
    return torch.stack(per_layer).mean(0).tolist()


class OutputDistance:
    """How far the experts' *outputs* moved apart: each MoE layer's input tokens, as the model sees them,
    go through every expert; ``||Y_i - Y_j|| / ||Y_i||`` over all tokens seen, averaged over MoE layers
    (experts x experts). Weights can move apart in directions the hidden states never use; this is what
    the layers above receive. A context manager: the hooks are on the model inside ``with`` only."""

    def __init__(self, model: MoEModel) -> None:
        self.layers, self.hooks = model.moe_layers, []
        self.sq_diff: list[torch.Tensor | float] = [0.0] * len(self.layers)  # per layer, on the layer's device
        self.sq_norm: list[torch.Tensor | float] = [0.0] * len(self.layers)

    def __enter__(self) -> OutputDistance:
        self.hooks = [m.register_forward_pre_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []

    def _hook(self, i: int):
        @torch.no_grad()
        def hook(module, args) -> None:
            x = args[0].reshape(-1, args[0].shape[-1])
            y = torch.stack([module.expert(e, x) for e in range(module.experts.n_experts)]).double()
            y = y.flatten(1)  # (E, tokens * D); one row of differences at a time: memory E x tokens x D
            diff = torch.stack([(y[j] - y).square().sum(-1) for j in range(len(y))])  # exact: 0 for equal experts
            self.sq_diff[i] = self.sq_diff[i] + diff
            self.sq_norm[i] = self.sq_norm[i] + y.square().sum(-1)
        return hook

    def result(self) -> list[list[float]] | None:
        """The distances over the tokens seen so far (experts x experts); None before any."""
        if not all(isinstance(n, torch.Tensor) for n in self.sq_norm):
            return None
        per_layer = [_relative(d, n).cpu() for d, n in zip(self.sq_diff, self.sq_norm, strict=True)]
        return torch.stack(per_layer).mean(0).tolist()


@torch.no_grad()
def expert_matrix(model: MoEModel, clusters: Clusters, val_examples: Sequence[TrainExample], ctx: RunContext,
                  lower: LowerCache | None = None) -> dict:
    """Mean per-token NLL (experts x clusters) of the validation examples of each cluster, with every token
    routed to one expert; ``best_on_own`` counts the clusters whose own expert is best; the experts' weight
    and output distances (the latter on the same examples, routed to their own cluster's expert). ``lower``:
    the run's cache of lower-layer states, keyed :func:`~promoe.training.trainer.val_key` for these examples (those the
    specialisation's checkpoint choice scored are read back, the others computed). Call under the run's
    autocast, as that choice ran."""
    gen, pad = model.hyper, ctx.setup.tokenizer.pad_token_id
    emb = {t: ctx.task_emb[t].float().numpy() for t in {e.task for e in val_examples}}
    of_task = clusters.assign(emb)
    n_experts, n = gen.n_experts, clusters.n
    batches, total, count, dev = [], np.zeros((n_experts, n)), np.zeros(n), ctx.acc.device
    for i in range(len(val_examples)):  # one example at a time: no padding, exact per-example sums
        b = batch_of(val_examples, [i], pad, model.is_seq2seq)
        ids, mask, labels = b.input_ids.to(dev), b.attention_mask.to(dev), b.labels.to(dev)
        hidden = None if model.split is None else model.lower_hidden(ids, mask) if lower is None else \
            lower(model, [val_key(i)], ids, mask)
        c = of_task[val_examples[i].task]
        batches.append((c, (ids, mask, labels, ctx.task_emb[b.task_keys[0]][None].to(dev), b.task_keys), hidden))
        count[c] += int((b.labels[:, 1:] != -100).sum()) if not model.is_seq2seq else int((b.labels != -100).sum())

    def nll(b, hidden) -> float:
        ids, mask, labels, task_emb, keys = b
        out = model(input_ids=None if hidden is not None else ids, attention_mask=mask, labels=labels,
                    task_emb=task_emb, task_keys=keys, lower=hidden, num_items=1.0)
        return float(out.lm_loss)

    with OutputDistance(model) as outputs:  # each example through its own cluster's expert, every expert hooked
        for _, b, hidden in batches:
            nll(b, hidden)
    output_distance = outputs.result()
    for e in range(n_experts):
        gen.expert = e
        model.clear_routing_cache()  # a task's cached routing is the previous expert's
        for c, b, hidden in batches:
            total[e, c] += nll(b, hidden)
    gen.expert = None
    model.clear_routing_cache()
    loss = [[float(total[e, c] / count[c]) if count[c] else None for c in range(n)] for e in range(n_experts)]
    with_data = [c for c in range(n) if count[c]]
    own = sum(int(np.argmin([loss[e][c] for e in range(n_experts)])) == c for c in with_data)
    log.info("experts: own expert best on %d of %d clusters with validation data", own, len(with_data))
    return {"loss": loss, "experts": n_experts, "clusters": n, "weight_distance": weight_distance(model),
            "output_distance": output_distance,
            "val_examples": [sum(c == k for k, _, _ in batches) for c in range(n)],
            "val_tasks": [len({t for t, k in of_task.items() if k == c}) for c in range(n)],
            "best_on_own": own, "clusters_with_data": len(with_data)}
