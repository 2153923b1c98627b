"""The model rows: the untrained backbone and the trained ``dense``, ``moe`` and ``promoe``."""

from __future__ import annotations

from promoe.evaluation.predict import Variant
from promoe.registry import Row
from promoe.stages.context import RunContext


def backbone(ctx: RunContext, row: Row) -> Variant:
    """The backbone as it was pretrained (a ``dense`` model before training reproduces it)."""
    return Variant(row.name, ctx.setup.model("dense"))


def trained(ctx: RunContext, row: Row) -> Variant | None:
    """Model ``row.name`` with its best meta-trained weights; its router sees each task's own Definition."""
    model = ctx.trained.get(row.name)
    if model is None:
        return None
    return Variant(row.name, model, ctx.task_emb if model.hyper is not None else None)
