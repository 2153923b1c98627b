"""promoe.model.router: output invariants, the proactive router with a zero task, uniform, random and noisy routers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from promoe.model.router import ProactiveRouter, RandomRouter, RouterOutput, TokenRouter, UniformRouter
from tests.model.helpers import D, E, K

pytestmark = pytest.mark.usefixtures("tiny_tensors")


# -- proactive router with a zero task -----------------------------------------------------------

@pytest.mark.parametrize(("mode", "rank"), [("hyper", 4), ("hyper", None), ("prior", None)])
def test_proactive_router_with_zero_task_is_token_router(mode: str, rank: int | None) -> None:
    pro = ProactiveRouter(mode=mode, rank=rank, d_model=D, n_experts=E, top_k=K).eval()
    tok = TokenRouter(d_model=D, n_experts=E, top_k=K).eval()
    with torch.no_grad():
        tok.weight.copy_(pro.weight)
    x = torch.randn(2, 5, D)
    ref = tok(x)
    for task in (None, torch.zeros(2, pro.n_generated)):
        out = pro(x, task)
        assert torch.equal(out.logits, ref.logits)
        assert torch.equal(out.indices, ref.indices)
        assert torch.equal(out.weights, ref.weights)
        assert not out.task_level
    assert not torch.equal(pro(x, torch.randn(2, pro.n_generated)).logits, ref.logits)


def test_proactive_router_task_mode_is_token_independent() -> None:
    pro = ProactiveRouter(mode="task", d_model=D, n_experts=E, top_k=K).eval()
    with torch.no_grad():
        pro.bias.normal_()
    x = torch.randn(2, 5, D)
    task = torch.randn(2, pro.n_generated)
    out = pro(x, task)
    assert out.task_level
    expected = (pro.bias + task)[:, None, :].expand(2, 5, E)
    torch.testing.assert_close(out.logits, expected)
    assert torch.equal(out.logits, out.logits[:, :1].expand_as(out.logits))
    assert torch.equal(out.indices, out.indices[:, :1].expand_as(out.indices))
    torch.testing.assert_close(pro(x, None).logits, pro.bias.expand(2, 5, E))


# -- router outputs -----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: TokenRouter(d_model=D, n_experts=E, top_k=K),
    lambda: RandomRouter(d_model=D, n_experts=E, top_k=3),
    lambda: ProactiveRouter(mode="hyper", d_model=D, n_experts=E, top_k=1),
    lambda: ProactiveRouter(mode="task", d_model=D, n_experts=E, top_k=K),
])
def test_router_output_invariants(make: Callable[[], nn.Module]) -> None:
    router = make().eval()
    x = torch.randn(2, 5, D)
    task = torch.randn(2, router.n_generated) if isinstance(router, ProactiveRouter) else None
    out: RouterOutput = router(x, task)
    k = router.top_k
    assert out.indices.shape == out.weights.shape == (2, 5, k)
    assert out.probs.shape == out.logits.shape == (2, 5, E)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(2, 5))
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(2, 5))
    assert out.indices.min() >= 0 and out.indices.max() < E
    assert all(len(set(row.tolist())) == k for row in out.indices.reshape(-1, k))
    assert torch.equal(out.indices, out.probs.topk(k, -1).indices)
    with pytest.raises(ValueError):
        type(router)(**({"mode": "prior"} if isinstance(router, ProactiveRouter) else {}),
                     d_model=D, n_experts=E, top_k=E + 1)


def test_uniform_and_random_routers() -> None:
    x = torch.randn(2, 5, D)
    uni = UniformRouter(d_model=D, n_experts=E, top_k=1)(x)
    assert torch.equal(uni.indices.sort(-1).values, torch.arange(E).expand(2, 5, E))
    assert torch.equal(uni.weights, torch.full((2, 5, E), 1 / E))
    assert uni.task_level

    rnd = RandomRouter(d_model=D, n_experts=E, top_k=K, seed=1)
    a = rnd(x)
    torch.randn(100)  # other draws in the process do not change the router's sequence
    b = rnd(x)
    rnd.reset()
    assert torch.equal(rnd(x).logits, a.logits)  # the same sequence again from its seed
    assert not torch.equal(a.logits, b.logits)  # fresh logits per call
    c = RandomRouter(d_model=D, n_experts=E, top_k=K, seed=2)(x)
    assert not torch.equal(a.logits, c.logits)


def test_jitter_and_noise_only_in_training() -> None:
    noisy = TokenRouter(d_model=D, n_experts=E, top_k=K, jitter=0.5, noise=1.0)
    clean = TokenRouter(d_model=D, n_experts=E, top_k=K)
    with torch.no_grad():
        clean.weight.copy_(noisy.weight)
    x = torch.randn(2, 5, D)
    ref = clean.eval()(x)
    eval_out = noisy.eval()(x)
    assert torch.equal(eval_out.logits, ref.logits) and torch.equal(eval_out.indices, ref.indices)
    assert torch.equal(clean.train()(x).logits, ref.logits)
    assert not torch.equal(noisy.train()(x).logits, ref.logits)
    for kw in ({"jitter": 0.5}, {"noise": 1.0}):
        r = TokenRouter(d_model=D, n_experts=E, top_k=K, **kw)
        with torch.no_grad():
            r.weight.copy_(clean.weight)
        assert not torch.equal(r.train()(x).logits, ref.logits)
