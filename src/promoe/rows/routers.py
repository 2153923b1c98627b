"""Zero-shot routers over the trained ``moe``'s experts (copies that share its weights).

* ``knn`` — the similarity-weighted routing of the nearest training tasks by description;
* ``skill`` — Symbolic-MoE-style skills inferred from the description recruit the experts they use;
* ``uniform`` / ``random`` — floors: every expert equally, or random experts per token.
"""

from __future__ import annotations

import torch

from promoe.evaluation.predict import Variant
from promoe.model.build import replace_routers, variant_copy
from promoe.model.task_routing import KNNRouting, SkillRouting, task_routed, task_skills
from promoe.registry import Row
from promoe.stages.context import RunContext


def _profiles(ctx: RunContext) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    names, routing = ctx.profiles
    return names, torch.stack([ctx.task_emb[n] for n in names]), torch.as_tensor(routing, dtype=torch.float32)


def knn(ctx: RunContext, row: Row) -> Variant:
    names, emb, table = _profiles(ctx)
    c = ctx.cfg.compare
    gen = KNNRouting(emb, table, k=c.knn_k, temperature=c.knn_temperature)
    return Variant(row.name, task_routed(variant_copy(ctx.trained["moe"]), gen), ctx.task_emb)


def skill(ctx: RunContext, row: Row) -> Variant:
    names, emb, table = _profiles(ctx)
    c, train = ctx.cfg.compare, {t.name: t for t in ctx.splits.train}
    gen = SkillRouting(emb, [task_skills(train[n]) for n in names], table, n_skills=c.skill_n,
                       temperature=c.skill_temperature)
    return Variant(row.name, task_routed(variant_copy(ctx.trained["moe"]), gen), ctx.task_emb)


def _static(ctx: RunContext, row: Row, router: str) -> Variant:
    model = variant_copy(ctx.trained["moe"])
    replace_routers(model, router, seed=ctx.cfg.seed)
    return Variant(row.name, model)


def uniform(ctx: RunContext, row: Row) -> Variant:
    return _static(ctx, row, "uniform")


def random(ctx: RunContext, row: Row) -> Variant:
    return _static(ctx, row, "random")
