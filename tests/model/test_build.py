"""promoe.model.build: variants share the backbone's frozen weights, never a trained one (on the smoke
preset's tiny backbone, the ``tiny`` fixture)."""

from __future__ import annotations

import copy

from promoe.model.build import build_model, replace_routers, share_frozen_weights, variant_copy
from promoe.training.trainer import param_groups


def test_variants_share_weights(tiny) -> None:
    cfg, bb = tiny
    model = build_model(copy.deepcopy(bb.model), bb.family, cfg, "moe", seed=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    n = share_frozen_weights(model, bb.model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable  # sharing freezes nothing new
    assert not model.backbone.model.embed_tokens.weight.requires_grad  # and thaws nothing
    optimized = {id(p) for g in param_groups(model, 1e-4, 1e-3) for p in g["params"]}
    assert not optimized & {id(p) for p in bb.model.parameters()}  # training never touches a shared weight
    assert n > 0 and model.backbone.model.embed_tokens.weight is bb.model.model.embed_tokens.weight
    assert model.backbone.lm_head.weight is bb.model.lm_head.weight  # the tied head too
    lower = model.backbone.model.layers[:model.split]
    src = bb.model.model.layers[:model.split]
    assert len(lower) == 2 and all(p is q for a, b in zip(lower, src, strict=True)
                                   for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert all(p.requires_grad for p in model.backbone.model.layers[model.split].parameters())  # trained: own copy
    copy_ = variant_copy(model)
    replace_routers(copy_, "uniform")
    assert copy_.moe_layers[0].experts.w_in is model.moe_layers[0].experts.w_in  # same expert tensors
    assert type(model.moe_layers[0].router).__name__ == "TokenRouter"  # the original keeps its router
