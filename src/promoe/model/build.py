"""Building the experiment's models from a backbone, and variants of a built model.

:func:`build_model` upcycles the chosen FFN positions of a backbone:

* ``dense`` — one FFN per position with the MoE's *activated* FFN parameters: ``top_k`` upcycled
  experts concatenated (down projection divided by ``top_k``), always on;
* ``moe`` — ``n_experts`` upcycled experts and a static token-level top-k gate;
* ``promoe`` — the same experts, a :class:`ProactiveRouter` per layer and one shared hypernetwork
  that generates every layer's routing parameters from the task-description embedding.

All three reproduce the backbone before training. :func:`variant_copy` and :func:`replace_routers`
make other routings of the same experts without a second copy of the weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from promoe.config import ModelConfig
from promoe.errors import ConfigError
from promoe.model.hypernet import HyperNetwork
from promoe.model.moe import MoEBlock, MoELayer, RoutingContext
from promoe.model.moe_model import MODEL_KINDS, ModelKind, MoEModel
from promoe.model.router import ROUTERS, ProactiveRouter, RandomRouter, Router, TokenRouter, UniformRouter
from promoe.model.upcycle import ADAPTERS, experts_from_ffn


def moe_slots(cfg: ModelConfig, n_slots: int) -> list[int]:
    """The FFN positions to convert: ``cfg.moe_layers`` or the top ``cfg.n_moe_layers``."""
    slots = cfg.moe_layers if cfg.moe_layers is not None else list(range(n_slots - cfg.n_moe_layers, n_slots))
    bad = [s for s in slots if not 0 <= s < n_slots]
    if bad or not slots or len(set(slots)) != len(slots):
        key = "model.moe_layers" if cfg.moe_layers is not None else "model.n_moe_layers"
        value = cfg.moe_layers if cfg.moe_layers is not None else cfg.n_moe_layers
        raise ConfigError(f"{key}={value}: the MoE positions {slots} are not distinct FFN positions of the backbone "
                          f"{cfg.backbone}, which has {n_slots} (0 to {n_slots - 1}): choose positions in that range "
                          f"(or model.n_moe_layers <= {n_slots})")
    return sorted(slots)



def _router(kind: ModelKind, cfg: ModelConfig, d_model: int) -> Router:
    common = dict(d_model=d_model, jitter=cfg.router_jitter, noise=cfg.router_noise)
    if kind == "dense":
        return UniformRouter(n_experts=1, top_k=1, **common)
    if kind == "moe":
        return TokenRouter(n_experts=cfg.n_experts, top_k=cfg.top_k, **common)
    return ProactiveRouter(mode=cfg.proactive_mode, rank=cfg.hyper_rank, n_experts=cfg.n_experts,
                           top_k=cfg.top_k, **common)


def build_model(backbone: nn.Module, family: str, cfg: ModelConfig, kind: ModelKind, *, seed: int = 0) -> MoEModel:
    """Upcycle ``backbone`` (modified in place) into the ``kind`` model of the experiment."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {MODEL_KINDS}")
    adapter = ADAPTERS[family]
    all_slots = adapter.slots(backbone)
    slots = moe_slots(cfg, len(all_slots))
    torch.manual_seed(seed)
    context = RoutingContext()
    routers = []
    for layer, s in enumerate(slots):
        ffn = adapter.read(all_slots[s], backbone.config)
        d_model = ffn.down.shape[0]
        res = cfg.shared_expert
        if kind == "dense":
            experts = experts_from_ffn(ffn, n_experts=1, width=cfg.expert_width, mix=cfg.top_k, residual=res)
        else:
            experts = experts_from_ffn(ffn, n_experts=cfg.n_experts, width=cfg.expert_width, residual=res)
        shared = experts_from_ffn(ffn, n_experts=1).to(ffn.down.dtype) if res else None
        experts.to(ffn.down.dtype)
        router = _router(kind, cfg, d_model)
        routers.append(router)
        adapter.replace(all_slots[s], MoEBlock(MoELayer(experts=experts, router=router, layer=layer, shared=shared),
                                               context))
    hyper = None
    if kind == "promoe":
        hyper = HyperNetwork(d_task=cfg.d_task, n_layers=len(slots), n_out=routers[0].n_generated,
                             d_hidden=cfg.d_hyper, d_layer=cfg.d_layer)
    if cfg.freeze_lower:
        backbone.requires_grad_(False)
        for s in range(slots[0], len(all_slots)):
            all_slots[s].requires_grad_(True)
    return MoEModel(backbone=backbone, family=family, kind=kind, slots=slots, context=context, hyper=hyper, cfg=cfg,
                    layer_stack=[adapter.stack(backbone, s) for s in slots])


def replace_routers(model: MoEModel, name: str, *, seed: int = 0) -> None:
    """Give every MoE layer a fresh router of registry entry ``name`` with the same shape, e.g. the
    ``uniform`` / ``random`` floors of a trained MoE (``random``: layer l draws from seed ``seed + l``).
    The hypernetwork is dropped for static routers."""
    for layer in model.moe_layers:
        r = layer.router
        kw = {"seed": seed + layer.layer} if ROUTERS[name] is RandomRouter else {}
        layer.router = ROUTERS[name](d_model=r.d_model, n_experts=r.n_experts, top_k=r.top_k, **kw)
    if name != "proactive":
        model.hyper = None
    model.clear_routing_cache()


def param_counts(model: MoEModel) -> dict[str, int]:
    """Total, activated (per token) and trainable parameters, and the MoE FFNs' share of each."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ffn_total = ffn_active = 0
    for layer in model.moe_layers:
        per = layer.experts.n_params_per_expert()
        shared = layer.shared.n_params_per_expert() if layer.shared is not None else 0
        ffn_total += per * layer.experts.n_experts + shared
        ffn_active += per * layer.router.top_k + shared
    hyper = sum(p.numel() for p in model.hyper.parameters()) if model.hyper is not None else 0
    return {"total": total, "activated": total - ffn_total + ffn_active - hyper, "trainable": trainable,
            "moe_ffn_total": ffn_total, "moe_ffn_activated": ffn_active, "hypernetwork_per_task": hyper}


def share_frozen_weights(model: MoEModel, source: nn.Module) -> int:
    """Point every frozen parameter of ``model.backbone`` that equals ``source``'s parameter of the same
    name at that tensor, so models upcycled from one backbone hold its frozen part once in memory.
    A shared tensor is frozen in ``source`` too: otherwise it would bring ``source``'s ``requires_grad``
    into ``model``, and training ``model`` would update a frozen weight that every other model shares
    (the tied embedding / output head gets gradients). Returns how many parameter tensors are now shared."""
    src = dict(source.named_parameters(remove_duplicate=False))
    shared = 0
    for mod_name, mod in model.backbone.named_modules():
        for name, p in list(mod._parameters.items()):
            q = src.get(f"{mod_name}.{name}" if mod_name else name)
            if p is not None and q is not None and p is not q and not p.requires_grad and p.shape == q.shape \
                    and torch.equal(p, q):
                mod._parameters[name] = q.requires_grad_(False)
                shared += 1
    return shared


def variant_copy(model: MoEModel) -> MoEModel:
    """A copy of ``model`` that shares every parameter and buffer with it (new modules, same tensors):
    give it other routers (:func:`replace_routers`, ``task_routed``) to evaluate another routing of the
    same experts without a second copy of the weights."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    out = copy.deepcopy(model, memo)
    out.clear_routing_cache()
    return out
