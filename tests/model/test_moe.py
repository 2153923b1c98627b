"""promoe.model.moe: the MoE layer equals transformers' Mixtral block given the same weights; with a
task-level router it dispatches rows (one decision per row), with the same output as token dispatch."""

from __future__ import annotations

import pytest
import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from promoe.model.experts import Experts
from promoe.model.moe import MoELayer
from promoe.model.router import ProactiveRouter, TokenRouter, UniformRouter
from tests.model.helpers import D_FF, D, E, K, experts

pytestmark = pytest.mark.usefixtures("tiny_tensors")


def test_moe_layer_matches_hf_mixtral() -> None:
    cfg = MixtralConfig(hidden_size=D, intermediate_size=D_FF, num_local_experts=E, num_experts_per_tok=K,
                        router_jitter_noise=0.0)
    hf = MixtralSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(std=D**-0.5)
    router = TokenRouter(d_model=D, n_experts=E, top_k=K)
    experts = Experts(n_experts=E, d_model=D, d_ff=D_FF, act=cfg.hidden_act, gated=True)
    assert hf.experts.gate_up_proj.shape == experts.w_in.shape
    assert hf.experts.down_proj.shape == experts.w_out.shape
    with torch.no_grad():
        router.weight.copy_(hf.gate.weight)
        experts.w_in.copy_(hf.experts.gate_up_proj)  # [gate; up] along dim 1, like ours
        experts.w_out.copy_(hf.experts.down_proj)
    layer = MoELayer(experts=experts, router=router, layer=0).eval()
    x = torch.randn(3, 5, D)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], hf(x.clone()), atol=1e-6, rtol=1e-6)


def test_task_level_router_decides_once_per_row() -> None:
    """Task-mode logits do not depend on the token: the router's expanded row decision equals routing
    every token, and the layer's output equals token dispatch."""
    router = ProactiveRouter(mode="task", d_model=D, n_experts=E, top_k=2).double()
    with torch.no_grad():
        router.bias.normal_()
    layer = MoELayer(experts=experts(), router=router, layer=0)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    task = torch.randn(3, E, dtype=torch.float64)
    y, info = layer(x, task)
    r = info.router
    assert r.task_level and r.indices.shape == (3, 5, 2) and r.probs.shape == (3, 5, E)
    full = torch.softmax(router.bias + task, -1).float()[:, None].expand(3, 5, E)  # probs are float32
    torch.testing.assert_close(r.probs, full)
    assert torch.equal(r.indices, full.topk(2, -1).indices)
    tokens = layer.experts(x.reshape(-1, D), r.indices.reshape(-1, 2), r.weights.reshape(-1, 2)).view_as(x)
    torch.testing.assert_close(y, tokens)


def test_uniform_router_runs_every_expert_on_every_row() -> None:
    ex = experts()
    layer = MoELayer(experts=ex, router=UniformRouter(d_model=D, n_experts=E, top_k=1), layer=0).double()
    x = torch.randn(2, 4, D, dtype=torch.float64)
    y, _ = layer(x)
    every = torch.arange(E).expand(8, E)
    torch.testing.assert_close(y, ex(x.reshape(-1, D), every, torch.full((8, E), 1 / E, dtype=torch.float64)).view_as(x))
