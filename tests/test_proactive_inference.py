"""Proactive inference: task-level routing skips per-token routing and dispatch, with the same outputs.

A task-level router (promoe in ``task`` mode, uniform, the knn/skill generators) decides once per row;
the MoE layer then dispatches rows instead of tokens (:meth:`Experts.forward_rows`), and a task's
experts merge into one ordinary FFN (:meth:`Experts.merged`, the basis of ``promoe export``). Each fast
path is compared with the token-level path it replaces, in float64 so that summation order stays invisible.
"""

from __future__ import annotations

import copy

import pytest
import torch

from promoe.model.build import build_model
from promoe.model.experts import Experts
from promoe.model.moe import MoELayer
from promoe.model.router import ProactiveRouter, UniformRouter
from tests.model.helpers import D, E, grads, model_cfg, ref_experts, tiny_llama


def experts(gated: bool = True, bias: bool = False) -> Experts:
    ex = Experts(n_experts=E, d_model=D, d_ff=12, act="silu" if gated else "gelu", gated=gated, bias=bias).double()
    if bias:
        with torch.no_grad():
            ex.b_in.normal_()
            ex.b_out.normal_()
    return ex


def per_token(x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor):
    """Row routing (B, k) repeated for each of the row's T tokens, flattened as the token path takes it."""
    t = x.shape[1]
    return x.reshape(-1, x.shape[-1]), indices.repeat_interleave(t, 0), weights.repeat_interleave(t, 0)


@pytest.mark.parametrize("gated,bias", [(True, False), (False, True), (True, True)])
def test_row_dispatch_equals_token_dispatch(gated: bool, bias: bool) -> None:
    """Rows with different, shared and overlapping experts; outputs and every gradient."""
    ex = experts(gated, bias)
    x = torch.randn(5, 7, D, dtype=torch.float64, requires_grad=True)
    indices = torch.tensor([[1, 3], [3, 1], [0, 2], [1, 3], [2, 1]])
    weights = torch.softmax(torch.randn(5, 2, dtype=torch.float64), -1).requires_grad_(True)
    rows = ex.forward_rows(x, indices, weights)
    tokens = ex(*per_token(x, indices, weights)).view_as(x)
    torch.testing.assert_close(rows, tokens)
    torch.testing.assert_close(rows.reshape(-1, D), ref_experts(ex, *per_token(x, indices, weights)))
    params = [x, weights, *ex.parameters()]
    for a, b in zip(grads(lambda: ex.forward_rows(x, indices, weights), params),
                    grads(lambda: ex(*per_token(x, indices, weights)).view_as(x), params), strict=True):
        torch.testing.assert_close(a, b)


def test_row_dispatch_with_one_routing_for_the_batch() -> None:
    """Every row on the same experts (one task's batch): no gathering, same result."""
    ex = experts()
    x = torch.randn(4, 6, D, dtype=torch.float64)
    indices, weights = torch.tensor([[2, 0]]).expand(4, 2), torch.tensor([[0.7, 0.3]], dtype=torch.float64).expand(4, 2)
    torch.testing.assert_close(ex.forward_rows(x, indices, weights), ex(*per_token(x, indices, weights)).view_as(x))


@pytest.mark.parametrize("gated,bias", [(True, False), (False, True)])
def test_merged_experts_are_one_ffn_with_the_same_output(gated: bool, bias: bool) -> None:
    ex = experts(gated, bias)
    x = torch.randn(9, D, dtype=torch.float64)
    idx, w = torch.tensor([3, 1]), torch.tensor([0.6, 0.4], dtype=torch.float64)
    merged = ex.merged(idx, w)
    assert merged.n_experts == 1 and merged.d_ff == 2 * ex.d_ff
    torch.testing.assert_close(merged.expert(0, x), ex(x, idx.expand(9, 2), w.expand(9, 2)))


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


def test_task_mode_promoe_generates_as_with_token_dispatch(monkeypatch) -> None:
    """A whole task-mode promoe model: greedy generation with row dispatch equals token dispatch."""
    torch.manual_seed(0)
    model = build_model(tiny_llama(), "llama", model_cfg(proactive_mode="task"), "promoe").eval()
    with torch.no_grad():
        model.hyper.out.weight.normal_(std=1.0)
    ids = torch.randint(3, 50, (3, 6))
    emb = torch.randn(3, model.hyper.d_task)
    kw = dict(max_new_tokens=5, do_sample=False, task_emb=emb, task_keys=["a", "b", "c"])
    fast = model.generate(ids, torch.ones_like(ids), **kw)
    token_path = copy.deepcopy(model)
    for layer in token_path.moe_layers:
        monkeypatch.setattr(layer.experts, "forward_rows",
                            lambda x, i, w, ex=layer.experts: ex(*per_token(x, i, w)).view_as(x))
    assert torch.equal(fast, token_path.generate(ids, torch.ones_like(ids), **kw))
