"""Scoring the rows the config selects, as the registry builds them: model, router and ablation rows in
one zero-shot generation pass, then each condition (in-context, few-shot) over its base models."""

from __future__ import annotations

import logging

from promoe import registry
from promoe.evaluation.predict import Variant
from promoe.model.moe_model import MoEModel
from promoe.registry import ABLATED
from promoe.stages.context import RunContext

log = logging.getLogger(__name__)


def _ready(ctx: RunContext, row: registry.Row) -> bool:
    """A row built from trained models is skipped (with a word) when one of them was not trained."""
    missing = [n for n in row.needs if n != "moe_profiles" and n not in ctx.trained]
    if missing:
        log.warning("%s skipped: it needs the trained %s (train.models)", row.name, ", ".join(missing))
    return not missing


def zero_shot_rows(ctx: RunContext) -> list[Variant]:
    """The model, router and ablation rows ``ctx.cfg`` selects, in config order."""
    rows: list[Variant] = []
    for kind in ("model", "router"):
        for row in registry.selected(ctx.cfg, kind):
            if kind == "router" and ctx.evaluation.done(row.name):
                continue  # scored by an earlier run of the folder: not built again (the oracle's choice takes minutes)
            if _ready(ctx, row) and (v := row.builder()(ctx, row)) is not None:
                rows.append(v)
    ablated = next((v.model for v in rows if v.name == ABLATED), None)
    return rows + (ablation_rows(ctx, ablated, ablation_texts(ctx)) if ablated is not None else [])


def ablation_texts(ctx: RunContext) -> dict[str, dict[str, str]]:
    """``{row name: {test task: text promoe's router sees}}`` for each ablation ``ctx.cfg`` selects that has
    replacement texts (``promoe-<ablation>``)."""
    out = {}
    for row in registry.selected(ctx.cfg, "ablation"):
        if not _ready(ctx, row):
            continue
        if texts := row.builder()(ctx, row):
            out[row.row_names()[0]] = texts
        else:
            log.warning("ablation %s skipped: no test task has a replacement description", row.name)
    return out


def ablation_rows(ctx: RunContext, ablated: MoEModel, texts: dict[str, dict[str, str]],
                  condition: str = "") -> list[Variant]:
    """The ablation rows of :func:`ablation_texts` over ``ablated`` (the trained promoe): the same model, its
    router given each ablation's texts. In ``condition``, rows ``promoe-<ablation>-<condition>``."""
    return [Variant(name + (f"-{condition}" if condition else ""), ablated, ctx.setup.embed(t), tasks=set(t))
            for name, t in texts.items()]


def score_rows(ctx: RunContext) -> dict[str, dict]:
    """Score every selected row not yet scored; returns the scores of every row, by name."""
    rows = zero_shot_rows(ctx)
    ctx.rows = {v.name: v for v in rows}
    ctx.evaluation.run(rows, label="eval")
    for row in registry.selected(ctx.cfg, "condition"):
        row.builder()(ctx, row, list(registry.config_value(ctx.cfg, row.select)))
    return ctx.evaluation.results
