"""How large the routing logits are, part by part (``routing/logit_scale.json``): does the description move
the routing at all? For every trained model with a router, on the validation examples (one unpadded
example at a time, so every position is a real token), per MoE layer the spread over experts (standard
deviation across the E logits, averaged over tokens) of

* ``total``: the logits the router softmaxes;
* ``static``: the part that does not depend on the task (``x W^T`` of a token router, the learned bias
  of ``task`` mode): for ``moe`` it is the whole;
* ``generated``: what the description adds (``total - static``; ``promoe`` only).

A generated part far smaller than the static part means the description barely changes the routing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from promoe.data.examples import TrainExample
from promoe.model.moe_model import MoEModel, TaskRouting
from promoe.model.router import ProactiveRouter, TokenRouter
from promoe.training.trainer import LowerFn, batch_of, val_key

log = logging.getLogger(__name__)

PARTS = ("total", "static", "generated")


@torch.no_grad()
def logit_scale(model: MoEModel, examples: Sequence[TrainExample], task_emb: dict[str, torch.Tensor],
                pad_id: int, lower: LowerFn | None = None) -> dict | None:
    """Per part (:data:`PARTS`): the mean over layers, and ``per_layer``; None for a model without a learned
    router (``dense``) or without examples. ``lower``: the run's cache of lower-layer states, ``examples`` being
    its validation examples (keyed :func:`~promoe.training.trainer.val_key`), so the frozen layers do not run again."""
    routers = [layer.router for layer in model.moe_layers if isinstance(layer.router, TokenRouter | ProactiveRouter)]
    if not routers or not examples:
        return None
    sums = np.zeros((len(routers), len(PARTS)))
    count = np.zeros(len(routers))

    def hook(i: int):
        def record(router, args, out) -> None:
            x, task = args[0], args[1] if len(args) > 1 else None
            if router.task_level:
                x = x[:, :1]
            total = router.logits(x, task).float()
            static = router.logits(x, None).float()
            for j, part in enumerate((total, static, total - static)):
                sums[i, j] += float(part.std(dim=-1).sum())
            count[i] += x.shape[0] * x.shape[1]
        return record

    handles = [r.register_forward_hook(hook(i)) for i, r in enumerate(routers)]
    routing = TaskRouting(model, task_emb)
    try:
        for k in range(len(examples)):
            b = batch_of(examples, [k], pad_id, model.is_seq2seq)
            hidden = lower(model, [val_key(k)], b.input_ids, b.attention_mask) \
                if lower is not None and model.split is not None else None
            model(input_ids=None if hidden is not None else b.input_ids, attention_mask=b.attention_mask,
                  lower=hidden, routing=routing.rows(b.task_keys), labels=b.labels if model.is_seq2seq else None,
                  routing_only=True)
    finally:
        for h in handles:
            h.remove()
    per_layer = sums / count[:, None]
    out = {p: float(per_layer[:, j].mean()) for j, p in enumerate(PARTS)}
    out["per_layer"] = {p: per_layer[:, j].round(6).tolist() for j, p in enumerate(PARTS)}
    out["examples"] = len(examples)
    return out


def logit_scales(models: dict[str, MoEModel], examples: Sequence[TrainExample], task_emb: dict[str, torch.Tensor],
                 pad_id: int, lower: LowerFn | None = None) -> dict[str, dict]:
    """:func:`logit_scale` of every model that has a learned router, logged."""
    out = {}
    for name, model in models.items():
        model.eval()
        if (s := logit_scale(model, examples, task_emb, pad_id, lower)) is not None:
            out[name] = s
            log.info("%s: routing logit spread over experts: total %.3f, static %.3f, generated %.3f", name,
                     s["total"], s["static"], s["generated"])
    return out


__all__ = ["PARTS", "logit_scale", "logit_scales"]
