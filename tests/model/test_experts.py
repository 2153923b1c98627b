"""promoe.model.experts: grouped dispatch and its fast paths against the naive per-token loop.

``Experts.forward`` runs on hand-written autograd functions (a per-expert FFN whose backward writes
gradients into slices, a row gather whose backward is a gather, a fused activation derivative per
activation), so each of them is checked here: in float64 (summation order invisible), then in fp32, as
trained: outputs and gradients with respect to the input, the routing weights and every expert parameter,
over activations, biases, k, token counts, idle experts, partial ``requires_grad``, inference mode and
autocast.

A task-level router decides once per row: ``Experts.forward_rows`` dispatches rows instead of tokens and
``Experts.merged`` turns a task's experts into one ordinary FFN (the basis of ``promoe export``); both
are compared with the token path they replace, in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from promoe.model.experts import Experts
from tests.model.helpers import D_FF, D, E, experts, grads, per_token, ref_experts

pytestmark = pytest.mark.usefixtures("tiny_tensors")


# -- float64: the naive loop exactly -------------------------------------------------------------

@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k", range(1, E + 1))
def test_experts_match_naive_loop(gated: bool, bias: bool, k: int) -> None:
    """Grouped dispatch equals the per-token loop, outputs and gradients (x, weights, parameters)."""
    ex = Experts(n_experts=E, d_model=D, d_ff=D_FF, act="gelu" if gated else "relu", gated=gated, bias=bias)
    ex.double()  # float64: summation order is the only difference, keep it invisible
    if bias:
        with torch.no_grad():
            ex.b_in.normal_()
            ex.b_out.normal_()
    n = 7
    x = torch.randn(n, D, dtype=torch.float64, requires_grad=True)
    indices = torch.stack([torch.randperm(E)[:k] for _ in range(n)])
    weights = torch.softmax(torch.randn(n, k, dtype=torch.float64), -1).requires_grad_(True)
    torch.testing.assert_close(ex(x, indices, weights), ref_experts(ex, x, indices, weights))
    params = [x, weights, *ex.parameters()]
    g_ours = grads(lambda: ex(x, indices, weights), params)
    g_ref = grads(lambda: ref_experts(ex, x, indices, weights), params)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("gated", [True, False])
def test_experts_with_idle_experts(gated: bool) -> None:
    """Experts that receive no token are skipped and get zero gradient; the others match the loop."""
    ex = Experts(n_experts=E, d_model=D, d_ff=D_FF, gated=gated, bias=True)
    x = torch.randn(5, D)
    indices = torch.tensor([[1, 3], [3, 1], [1, 3], [3, 1], [1, 3]])  # experts 0 and 2 idle
    weights = torch.softmax(torch.randn(5, 2), -1)
    torch.testing.assert_close(ex(x, indices, weights), ref_experts(ex, x, indices, weights))
    ex(x, indices, weights).sum().backward()
    for p in (ex.w_in, ex.w_out, ex.b_in, ex.b_out):
        assert torch.all(p.grad[[0, 2]] == 0)
        assert torch.all(p.grad[[1, 3]].abs().sum(tuple(range(1, p.dim()))) > 0)
    single = torch.full((5, 1), 2)  # every token to one expert
    torch.testing.assert_close(ex(x, single, torch.ones(5, 1)), ref_experts(ex, x, single, torch.ones(5, 1)))


# -- fp32 fast paths ------------------------------------------------------------------------------

TOL = {"atol": 1e-5, "rtol": 1e-4}  # fp32: only the summation order differs from the loop


def make(act: str, gated: bool, bias: bool) -> Experts:
    ex = Experts(n_experts=E, d_model=D, d_ff=D_FF, act=act, gated=gated, bias=bias)
    if bias:
        with torch.no_grad():
            ex.b_in.normal_()
            ex.b_out.normal_()
    return ex


def routing(n: int, k: int, experts: int = E) -> tuple[Tensor, Tensor]:
    """``k`` distinct experts per token among the first ``experts`` (the rest idle), softmax weights."""
    indices = torch.stack([torch.randperm(experts)[:k] for _ in range(n)]).reshape(n, k)
    return indices, torch.softmax(torch.randn(n, k), -1).requires_grad_(True)


def assert_parity(ex: Experts, x: Tensor, indices: Tensor, weights: Tensor, loss: str = "square") -> None:
    torch.testing.assert_close(ex(x, indices, weights), ref_experts(ex, x, indices, weights), **TOL)
    params = [t for t in (x, weights, *ex.parameters()) if t.requires_grad]

    def grads(fn: Callable[[], Tensor]) -> list[Tensor]:  # "sum" hands backward an expanded (stride 0) grad
        y = fn()
        return list(torch.autograd.grad(y.pow(2).sum() if loss == "square" else y.sum(), params))

    g_ours = grads(lambda: ex(x, indices, weights))
    g_ref = grads(lambda: ref_experts(ex, x, indices, weights))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("act", ["silu", "gelu", "relu", "gelu_pytorch_tanh", "gelu_new"])
@pytest.mark.parametrize("gated", [True, False])
def test_every_activation_derivative(act: str, gated: bool) -> None:
    """Fused aten derivatives (silu, gelu, relu, tanh-gelu) and the autograd fallback (gelu_new)."""
    ex = make(act, gated, bias=True)
    assert_parity(ex, torch.randn(9, D, requires_grad=True), *routing(9, 2))


@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("gated", [True, False])
def test_dispatch_matches_naive_loop_fp32(gated: bool, bias: bool, k: int, n: int) -> None:
    ex = make("silu" if gated else "gelu", gated, bias)
    assert_parity(ex, torch.randn(n, D, requires_grad=True), *routing(n, k))


@pytest.mark.parametrize("loss", ["square", "sum"])
def test_idle_experts_and_expanded_gradient(loss: str) -> None:
    """Experts 2 and 3 receive nothing: their gradients are exact zeros, the others match the loop."""
    ex = make("silu", gated=True, bias=True)
    x = torch.randn(16, D, requires_grad=True)
    indices, weights = routing(16, 2, experts=2)
    assert_parity(ex, x, indices, weights, loss)
    ex(x, indices, weights).pow(2).sum().backward()
    for p in ex.parameters():
        assert torch.all(p.grad[2:] == 0) and torch.all(p.grad[:2].abs().sum(tuple(range(1, p.dim()))) > 0)


def test_partial_requires_grad() -> None:
    """Frozen experts with a trainable input (and router), and trainable experts with a frozen input."""
    ex = make("silu", gated=True, bias=True)
    indices, weights = routing(11, 2)
    ex.requires_grad_(False)
    assert_parity(ex, torch.randn(11, D, requires_grad=True), indices, weights)
    ex.requires_grad_(True)
    assert_parity(ex, torch.randn(11, D), indices, weights.detach())


def test_inference_path_and_empty_batch() -> None:
    ex = make("silu", gated=True, bias=True)
    x = torch.randn(13, D)
    indices, weights = routing(13, 2)
    with torch.no_grad():
        torch.testing.assert_close(ex(x, indices, weights), ref_experts(ex, x, indices, weights), **TOL)
    with torch.inference_mode():
        torch.testing.assert_close(ex(x, indices, weights), ref_experts(ex, x, indices, weights), **TOL)
    empty = ex(torch.randn(0, D, requires_grad=True), indices[:0], weights[:0])
    assert empty.shape == (0, D)
    empty.sum().backward()


def test_single_expert_method_matches_the_loop() -> None:
    """``expert(e, x)`` (used by row dispatch) runs the same function with every other expert idle."""
    ex = make("gelu", gated=False, bias=True)
    x = torch.randn(6, D, requires_grad=True)
    one = torch.full((6, 1), 3)
    assert_parity(ex, x, one, torch.ones(6, 1))
    torch.testing.assert_close(ex.expert(3, x), ref_experts(ex, x, one, torch.ones(6, 1)), **TOL)


def test_autocast_bf16_runs_in_bf16_and_returns_the_input_dtype() -> None:
    ex = make("silu", gated=True, bias=False)
    x = torch.randn(20, D, requires_grad=True)
    indices, weights = routing(20, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ex(x, indices, weights)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref_experts(ex, x, indices, weights), atol=0.05, rtol=0.05)
    y.pow(2).sum().backward()
    assert ex.w_in.grad.dtype == torch.float32 and torch.isfinite(ex.w_in.grad).all()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# -- task-level routing: one decision per row, and a task's experts merged into one FFN -------------

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


def test_row_dispatch_skips_experts_below_the_dtype_s_resolution_at_inference(monkeypatch) -> None:
    """A one-hot routing clamped above 0 (the oracle's) runs one expert per row, not k, and gives the same
    output; with autograd every chosen expert still runs (its weight's gradient is wanted)."""
    ex = experts()
    x = torch.randn(3, 5, D)
    indices = torch.tensor([[2, 0], [1, 2], [0, 3]])
    weights = torch.tensor([[1.0, 1e-8], [1 - 1e-9, 1e-9], [0.6, 0.4]])
    ran = []
    real = ex.expert
    monkeypatch.setattr(ex, "expert", lambda e, h: ran.append((e, h.shape[0])) or real(e, h))
    with torch.no_grad():
        out = ex.forward_rows(x, indices, weights)
    assert sorted(ran) == [(0, 5), (1, 5), (2, 5), (3, 5)]  # expert 0 and 2: one row each, not two
    torch.testing.assert_close(out, ex(*per_token(x, indices, weights)).view_as(x))
    ran.clear()
    ex.forward_rows(x, indices, weights)
    assert sorted(e for e, _ in ran) == [0, 1, 2, 3] and sum(n for _, n in ran) == 6 * 5
    with torch.no_grad():  # a NaN weight is not skipped: it reaches the output; no expert at all gives zeros
        assert torch.isnan(ex.forward_rows(x, indices, torch.full((3, 2), float("nan")))).all()
        assert torch.equal(ex.forward_rows(x, indices, torch.zeros(3, 2)), torch.zeros_like(x))


@pytest.mark.parametrize("gated,bias", [(True, False), (False, True)])
def test_merged_experts_are_one_ffn_with_the_same_output(gated: bool, bias: bool) -> None:
    ex = experts(gated, bias)
    x = torch.randn(9, D, dtype=torch.float64)
    idx, w = torch.tensor([3, 1]), torch.tensor([0.6, 0.4], dtype=torch.float64)
    merged = ex.merged(idx, w)
    assert merged.n_experts == 1 and merged.d_ff == 2 * ex.d_ff
    torch.testing.assert_close(merged.expert(0, x), ex(x, idx.expand(9, 2), w.expand(9, 2)))


def test_a_shared_expert_merges_beside_the_chosen_ones() -> None:
    ex, shared = experts(True, False), experts(True, False)
    x = torch.randn(9, D, dtype=torch.float64)
    idx, w = torch.tensor([2, 0]), torch.tensor([0.7, 0.3], dtype=torch.float64)
    merged = ex.merged(idx, w, shared)
    assert merged.d_ff == 2 * ex.d_ff + shared.d_ff
    torch.testing.assert_close(merged.expert(0, x), ex(x, idx.expand(9, 2), w.expand(9, 2)) + shared.expert(0, x))
