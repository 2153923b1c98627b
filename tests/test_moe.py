"""MoE layer, routers, losses, upcycling and the three experiment models: invariants on tiny configs.

Every backbone is a randomly initialised tiny Hugging Face model built in the test (no downloads).
Assertions are parity checks (against a naive reference, the dense FFN, the untouched backbone or
transformers' Mixtral block) or invariants, never golden floats.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.activations import ACT2FN
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from promoe.config import ModelConfig
from promoe.model.experts import Experts
from promoe.model.hypernet import HyperNetwork
from promoe.model.losses import load_balancing_loss, router_z_loss
from promoe.model.moe import MoELayer, RoutingInfo
from promoe.model.moe_model import (
    MODEL_KINDS,
    ModelOutput,
    MoEModel,
    build_model,
    moe_slots,
    param_counts,
    replace_routers,
)
from promoe.model.router import ProactiveRouter, RandomRouter, RouterOutput, TokenRouter, UniformRouter
from promoe.model.stats import RoutingStats
from promoe.model.upcycle import ADAPTERS, experts_from_ffn
from promoe.pipeline import LowerCache

D, D_FF, E, K, D_TASK, VOCAB = 32, 64, 4, 2, 16, 100
MODES = ("hyper", "prior", "task")


pytestmark = pytest.mark.usefixtures("tiny_tensors")


# -- tiny backbones -------------------------------------------------------------------------------

def tiny_llama() -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=D_FF, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def tiny_t5(ff: str = "gated-gelu") -> T5ForConditionalGeneration:
    cfg = T5Config(vocab_size=VOCAB, d_model=D, d_ff=D_FF, d_kv=8, num_layers=2, num_decoder_layers=2,
                   num_heads=4, feed_forward_proj=ff, decoder_start_token_id=0, pad_token_id=0)
    return T5ForConditionalGeneration(cfg).eval()


def bert_config(act: str = "gelu") -> BertConfig:
    return BertConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=D_FF, num_hidden_layers=2,
                      num_attention_heads=4, hidden_act=act)


def tiny_bert(act: str = "gelu") -> BertModel:
    return BertModel(bert_config(act)).eval()


def model_cfg(**kw) -> ModelConfig:
    """A tiny MoE config: 2 MoE layers of 4 experts, top-2, small hypernetwork."""
    base = dict(n_moe_layers=2, n_experts=E, top_k=K, d_task=D_TASK, d_hyper=32, d_layer=8, hyper_rank=4)
    return ModelConfig(**{**base, **kw})


def left_padded(b: int = 3, t: int = 6) -> tuple[Tensor, Tensor]:
    """Random ids and a left-padded attention mask (row i has i padding positions)."""
    ids = torch.randint(1, VOCAB, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    for i in range(b):
        mask[i, :i] = 0
    return ids, mask


def ref_experts(ex: Experts, x: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """Naive per-token reference: ``sum_k w_k * expert(indices_k)(x)`` from the raw parameters."""
    act = ACT2FN[ex.act_name]
    rows = []
    for n in range(x.shape[0]):
        y = torch.zeros_like(x[n])
        for j in range(indices.shape[1]):
            e = int(indices[n, j])
            h = F.linear(x[n], ex.w_in[e], None if ex.b_in is None else ex.b_in[e])
            if ex.gated:
                gate, up = h.chunk(2, dim=-1)
                h = act(gate) * up
            else:
                h = act(h)
            y = y + weights[n, j] * F.linear(h, ex.w_out[e], None if ex.b_out is None else ex.b_out[e])
        rows.append(y)
    return torch.stack(rows)


def grads(fn: Callable[[], Tensor], params: list[Tensor]) -> list[Tensor]:
    """Gradients of ``sum(fn()**2)`` with respect to ``params``."""
    for p in params:
        p.grad = None
    fn().pow(2).sum().backward()
    return [p.grad.clone() for p in params]


# -- 1. experts -----------------------------------------------------------------------------------

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


# -- 2. one expert equals the dense FFN -----------------------------------------------------------

def dense_moe(experts: Experts) -> MoELayer:
    return MoELayer(experts=experts, router=UniformRouter(d_model=D, n_experts=experts.n_experts, top_k=1),
                    layer=0)


def test_one_expert_moe_equals_llama_mlp() -> None:
    """A 1-expert MoE and the width-k dense baseline (``mix=k``) both equal the copied LlamaMLP."""
    base = tiny_llama()
    slot = base.model.layers[0]
    ffn = ADAPTERS["llama"].read(slot, base.config)
    x = torch.randn(2, 5, D)
    expected = slot.mlp(x)
    for mix in (1, 2, 3):
        experts = experts_from_ffn(ffn, n_experts=1, mix=mix)
        assert experts.d_ff == mix * D_FF
        y, info = dense_moe(experts)(x)
        torch.testing.assert_close(y, expected)
        assert torch.all(info.router.indices == 0) and torch.all(info.router.weights == 1)


def test_carved_experts_average_to_ffn() -> None:
    """Slices of the FFN: averaging a full carving, or one expert of ``mix`` slices covering d_ff, is the FFN."""
    base = tiny_llama()
    slot = base.model.layers[1]
    ffn = ADAPTERS["llama"].read(slot, base.config)
    x = torch.randn(2, 5, D)
    expected = slot.mlp(x)
    carved = experts_from_ffn(ffn, n_experts=4, width=D_FF // 4)
    torch.testing.assert_close(dense_moe(carved)(x)[0], expected)
    torch.testing.assert_close(dense_moe(experts_from_ffn(ffn, n_experts=1, width=D_FF // 2, mix=2))(x)[0],
                               expected)
    with pytest.raises(ValueError, match="exceeds"):
        experts_from_ffn(ffn, n_experts=2, width=D_FF + 1)


# -- 3. upcycling reproduces the backbone ---------------------------------------------------------

VARIANTS = [("dense", "prior"), ("moe", "prior")] + [("promoe", m) for m in MODES]


def build(base: nn.Module, family: str, kind: str, mode: str = "prior", **kw) -> MoEModel:
    return build_model(copy.deepcopy(base), family, model_cfg(proactive_mode=mode, **kw), kind).eval()


@pytest.mark.parametrize(("kind", "mode"), VARIANTS)
def test_upcycled_llama_reproduces_backbone(kind: str, mode: str) -> None:
    base = tiny_llama()
    model = build(base, "llama", kind, mode)
    ids, mask = left_padded()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, task_emb=torch.randn(3, D_TASK))
        ref = base(input_ids=ids, attention_mask=mask).logits
    assert isinstance(out, ModelOutput) and len(out.routing) == 2
    keep = mask.bool()
    torch.testing.assert_close(out.logits[keep], ref[keep], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ff", ["gated-gelu", "relu", "gated-silu"])
@pytest.mark.parametrize(("kind", "mode"), VARIANTS)
def test_upcycled_t5_reproduces_backbone(ff: str, kind: str, mode: str) -> None:
    base = tiny_t5(ff)
    model = build(base, "t5", kind, mode, n_moe_layers=3)  # 1 encoder + 2 decoder FFNs
    ids, mask = left_padded()
    labels = torch.randint(1, VOCAB, (3, 4))
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=labels, task_emb=torch.randn(3, D_TASK))
        ref = base(input_ids=ids, attention_mask=mask, labels=labels)
    assert len(out.routing) == 3
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.lm_loss, ref.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("kind", "mode"), VARIANTS)
def test_upcycled_bert_reproduces_backbone(kind: str, mode: str) -> None:
    """BertModel has no logits: compare ``last_hidden_state`` through ``model.backbone`` (static part)."""
    base = tiny_bert()
    model = build(base, "bert", kind, mode)
    ids, mask = left_padded()
    with torch.no_grad():
        model.context.task = model.task_routing(torch.randn(3, D_TASK))
        got = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        model.context.task, model.context.records = None, []
        ref = base(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_upcycled_bert_mlm_reproduces_backbone(kind: str) -> None:
    """Through ``MoEModel.forward`` for a BERT with an LM head (which does return logits)."""
    base = BertForMaskedLM(bert_config()).eval()
    model = build(base, "bert", kind)
    ids, mask = left_padded()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, task_emb=torch.randn(3, D_TASK))
        ref = base(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", ["relu", "silu"])
def test_upcycled_bert_keeps_activation(act: str) -> None:
    """The experts must use the backbone's ``hidden_act``, not a hard-coded GELU (gelu_new is too close to tell)."""
    base = tiny_bert(act)
    model = build(base, "bert", "moe")
    ids, mask = left_padded()
    with torch.no_grad():
        got = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        ref = base(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


# -- 4. parity with transformers' Mixtral block ---------------------------------------------------

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


# -- 5. proactive router with a zero task -----------------------------------------------------------

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


# -- 6. untrained PRo-MoE routes like the MoE -----------------------------------------------------

def test_untrained_promoe_routes_like_moe() -> None:
    base = tiny_llama()
    moe, pro = build(base, "llama", "moe"), build(base, "llama", "promoe", "prior")
    ids, mask = left_padded()
    with torch.no_grad():
        a = moe(ids, attention_mask=mask)
        b = pro(ids, attention_mask=mask, task_emb=torch.randn(3, D_TASK))
    assert len(a.routing) == len(b.routing) == 2
    for ra, rb in zip(a.routing, b.routing, strict=True):
        assert ra.layer == rb.layer
        assert torch.equal(ra.router.indices, rb.router.indices)
        assert torch.equal(ra.router.weights, rb.router.weights)
    assert torch.equal(a.logits, b.logits)


# -- 7. gradients -----------------------------------------------------------------------------------

def nonzero_grad(p: Tensor) -> bool:
    return p.grad is not None and bool(p.grad.abs().sum() > 0)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_hypernetwork(mode: str) -> None:
    base = tiny_llama()
    model = build(base, "llama", "promoe", mode, freeze_lower=True).train()
    ids, mask = left_padded()
    emb = torch.randn(3, D_TASK)
    hyper: HyperNetwork = model.hyper

    model(ids, attention_mask=mask, labels=ids, task_emb=emb).loss.backward()
    assert nonzero_grad(hyper.out.weight)
    assert not nonzero_grad(hyper.hidden.weight)  # the zero output layer blocks it on the first step
    with torch.no_grad():
        hyper.out.weight -= 1.0 * hyper.out.weight.grad
    model.zero_grad(set_to_none=True)

    model(ids, attention_mask=mask, labels=ids, task_emb=emb).loss.backward()
    for p in (hyper.hidden.weight, hyper.task_norm.weight, hyper.layer_emb.weight, hyper.out.weight):
        assert nonzero_grad(p)

    layers = model.backbone.model.layers
    assert model.slots == [2, 3]
    frozen = [model.backbone.model.embed_tokens.weight, *layers[0].parameters(), *layers[1].parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    for s in model.slots:
        params = list(layers[s].parameters())
        assert all(p.requires_grad for p in params)
        assert all(nonzero_grad(p) for p in params)


# -- 8. losses --------------------------------------------------------------------------------------

def test_load_balancing_loss_uniform_skewed_and_masked() -> None:
    n = 8
    uniform = torch.full((n, E), 1 / E)
    balanced = torch.stack([torch.tensor([i % E, (i + 1) % E]) for i in range(n)])
    loss = load_balancing_loss(probs=uniform, indices=balanced)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, torch.tensor(1.0))

    skewed = F.one_hot(torch.zeros(n, dtype=torch.long), E).float()
    torch.testing.assert_close(load_balancing_loss(probs=skewed, indices=torch.zeros(n, 1, dtype=torch.long)),
                               torch.tensor(float(E)))
    probs = torch.softmax(torch.randn(n, E), -1)
    assert load_balancing_loss(probs=probs, indices=torch.zeros(n, 1, dtype=torch.long)) > 1

    # (B, T) rows with a mask: padding rows changed arbitrarily do not change the loss
    probs = torch.softmax(torch.randn(2, 5, E), -1)
    indices = torch.topk(probs, K, -1).indices
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ref = load_balancing_loss(probs=probs, indices=indices, mask=mask)
    probs2, indices2 = probs.clone(), indices.clone()
    probs2[0, 3:] = F.one_hot(torch.tensor([3, 3]), E).float()
    indices2[0, 3:] = torch.tensor([[3, 2], [3, 0]])
    torch.testing.assert_close(load_balancing_loss(probs=probs2, indices=indices2, mask=mask), ref)
    keep = mask.bool()
    torch.testing.assert_close(ref, load_balancing_loss(probs=probs[keep], indices=indices[keep]))
    assert load_balancing_loss(probs=probs, indices=indices, mask=torch.zeros(2, 5)).dim() == 0


def test_router_z_loss_is_mask_aware_and_finite() -> None:
    logits = torch.randn(2, 5, E)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    z = router_z_loss(logits=logits, mask=mask)
    assert z.dim() == 0
    torch.testing.assert_close(z, torch.logsumexp(logits[mask.bool()], -1).pow(2).mean())
    changed = logits.clone()
    changed[0, 3:] = 1e4
    torch.testing.assert_close(router_z_loss(logits=changed, mask=mask), z)

    big = (torch.randn(2, 5, E) * 1e3).requires_grad_(True)
    router_z_loss(logits=big, mask=mask).backward()
    assert torch.isfinite(big.grad).all()
    assert torch.all(big.grad[0, 3:] == 0) and big.grad[mask.bool()].abs().sum() > 0
    assert router_z_loss(logits=logits, mask=torch.zeros(2, 5)).dim() == 0


# -- 9. proactive routing computed once per task ----------------------------------------------------

def test_routing_computed_once_per_task() -> None:
    model = build(tiny_llama(), "llama", "promoe", "prior")
    ids, mask = left_padded()
    emb = torch.randn(3, D_TASK)
    emb[2] = emb[0]
    keys = ["a", "b", "a"]
    with torch.no_grad():
        model(ids, attention_mask=mask, task_emb=emb, task_keys=keys)
        model(ids, attention_mask=mask, task_emb=emb, task_keys=keys)
    model.generate(ids, attention_mask=mask, task_emb=emb, task_keys=keys, max_new_tokens=2, do_sample=False,
                   pad_token_id=0)
    assert model.n_routing_computes == 2

    model.train()
    assert not model._routing_cache
    for step in range(1, 3):
        model(ids, attention_mask=mask, task_emb=emb, task_keys=keys)
        assert model.n_routing_computes == 2 + 2 * step
    model.eval()
    with torch.no_grad():
        model(ids, attention_mask=mask, task_emb=emb, task_keys=keys)
    assert model.n_routing_computes == 8  # the cache was cleared: recomputed once per task
    table = model.task_routing(emb, keys)
    assert torch.equal(table[0], table[2])


def test_routing_cache_without_keys_follows_task_emb() -> None:
    """Without ``task_keys`` nothing identifies a task: a new batch must not reuse an old batch's routing."""
    model = build(tiny_llama(), "llama", "promoe", "prior")
    with torch.no_grad():
        model.hyper.out.weight.normal_()
        first, second = torch.randn(3, D_TASK), torch.randn(3, D_TASK)
        model.task_routing(first)
        torch.testing.assert_close(model.task_routing(second), model.hyper(second))


# -- 10. router outputs -----------------------------------------------------------------------------

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


# -- 11. aux loss -----------------------------------------------------------------------------------

def test_aux_loss_zero_for_dense() -> None:
    model = build(tiny_llama(), "llama", "dense")
    ids, mask = left_padded()
    out = model(ids, attention_mask=mask, labels=ids)
    assert out.aux_loss.dim() == 0 and float(out.aux_loss) == 0.0
    torch.testing.assert_close(out.loss, out.lm_loss)


def test_aux_loss_token_level_uses_mask() -> None:
    model = build(tiny_llama(), "llama", "moe")
    ids, mask = left_padded()
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    cfg = model.cfg
    expected = sum(cfg.aux_loss_weight * load_balancing_loss(probs=r.router.probs, indices=r.router.indices,
                                                             mask=mask)
                   + cfg.z_loss_weight * router_z_loss(logits=r.router.logits, mask=mask)
                   for r in out.routing) / len(out.routing)
    torch.testing.assert_close(out.aux_loss, expected)
    assert out.aux_loss > 0


def test_aux_loss_task_level_balances_examples() -> None:
    """Task mode: one row per example; a batch of one shared task is less balanced than distinct tasks."""
    model = build(tiny_llama(), "llama", "promoe", "task", aux_loss_weight=1.0, z_loss_weight=0.0)
    with torch.no_grad():
        model.hyper.out.weight.normal_(std=3.0)
    ids = torch.randint(1, VOCAB, (8, 5))
    distinct = torch.randn(8, D_TASK)
    shared = distinct[:1].expand(8, D_TASK).clone()
    with torch.no_grad():
        keys = [f"t{i}" for i in range(8)]
        out_d = model(ids, task_emb=distinct, task_keys=keys)
        out_s = model(ids, task_emb=shared, task_keys=["s"] * 8)
        padded = model(ids, attention_mask=torch.tensor([[0, 0, 1, 1, 1]] * 8), task_emb=distinct,
                       task_keys=keys)
    for out in (out_d, out_s):
        expected = sum(load_balancing_loss(probs=r.router.probs[:, 0], indices=r.router.indices[:, 0])
                       for r in out.routing) / len(out.routing)
        torch.testing.assert_close(out.aux_loss, expected)
    torch.testing.assert_close(padded.aux_loss, out_d.aux_loss)  # per example: padding is irrelevant
    assert out_s.aux_loss > out_d.aux_loss


def test_aux_loss_t5_decoder_not_masked_by_encoder_mask() -> None:
    """Decoder routing is balanced over decoder tokens even when the encoder mask has the same shape."""
    model = build(tiny_t5(), "t5", "moe", n_moe_layers=4)
    ids, mask = left_padded(t=4)
    labels = torch.randint(1, VOCAB, (3, 4))  # same length as the encoder input
    dec_mask = torch.ones(3, 4, dtype=torch.long)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=labels, decoder_attention_mask=dec_mask)
    cfg = model.cfg
    expected = 0
    for info in out.routing:
        m = mask if info.layer < 2 else dec_mask  # layers 0, 1: encoder; 2, 3: decoder
        r = info.router
        expected = expected + cfg.aux_loss_weight * load_balancing_loss(probs=r.probs, indices=r.indices, mask=m)
        expected = expected + cfg.z_loss_weight * router_z_loss(logits=r.logits, mask=m)
    torch.testing.assert_close(out.aux_loss, expected / len(out.routing))


# -- 12. parameter counts -----------------------------------------------------------------------------

def test_param_counts() -> None:
    base = tiny_llama()
    counts = {kind: param_counts(build(base, "llama", kind)) for kind in MODEL_KINDS}
    dense, moe, pro = counts["dense"], counts["moe"], counts["promoe"]
    n_layers = 2
    assert dense["moe_ffn_activated"] == moe["moe_ffn_activated"] == pro["moe_ffn_activated"]
    assert moe["moe_ffn_activated"] == n_layers * K * 3 * D * D_FF
    assert moe["moe_ffn_total"] == E // K * moe["moe_ffn_activated"] == pro["moe_ffn_total"]
    assert dense["moe_ffn_total"] == dense["moe_ffn_activated"]
    assert moe["activated"] - dense["activated"] == n_layers * E * D  # the token routers
    assert pro["activated"] == moe["activated"]  # prior mode: same router; hypernetwork runs per task
    assert dense["hypernetwork_per_task"] == moe["hypernetwork_per_task"] == 0
    assert pro["hypernetwork_per_task"] == sum(p.numel() for p in build(base, "llama", "promoe").hyper.parameters())
    assert pro["total"] == moe["total"] + pro["hypernetwork_per_task"]
    n_frozen = sum(p.numel() for p in base.parameters()) - sum(
        p.numel() for s in (2, 3) for p in base.model.layers[s].parameters())
    for c in counts.values():  # freeze_lower: embeddings, layers 0-1, final norm and head are frozen
        assert c["trainable"] == c["total"] - n_frozen


def test_promoe_beam_search_repeats_task_routing() -> None:
    """Beams repeat each prompt's rows; each row keeps its own task's routing."""
    base = tiny_llama()
    model = build(base, "llama", "promoe", "task")
    with torch.no_grad():
        model.hyper.out.weight.normal_()  # make the two tasks route differently
    ids, mask = left_padded(b=2)
    emb = torch.randn(2, D_TASK)
    beams = model.generate(ids, attention_mask=mask, task_emb=emb, task_keys=["a", "b"], max_new_tokens=3,
                           num_beams=2, do_sample=False)
    single = [model.generate(ids[i:i + 1], attention_mask=mask[i:i + 1], task_emb=emb[i:i + 1],
                             task_keys=["ab"[i]], max_new_tokens=3, num_beams=2, do_sample=False)
              for i in range(2)]
    assert beams.shape[0] == 2
    for i in range(2):
        keep = mask[i].bool()
        assert torch.equal(beams[i, ids.shape[1]:], single[i][0, ids.shape[1]:]), (i, keep)


# -- 13. routing statistics ---------------------------------------------------------------------------

def routing_info(layer: int, indices: Tensor) -> RoutingInfo:
    b, t, _ = indices.shape
    logits = torch.randn(b, t, E)
    probs = torch.softmax(logits, -1)
    weights = torch.full(indices.shape, 1 / indices.shape[-1])
    return RoutingInfo(layer=layer, router=RouterOutput(weights=weights, indices=indices, probs=probs,
                                                        logits=logits))


def test_routing_stats(tmp_path: Path) -> None:
    idx0 = torch.tensor([[[0, 1], [0, 1], [2, 3]], [[0, 2], [3, 1], [3, 1]]])
    idx1 = torch.tensor([[[1, 0], [1, 2], [1, 3]], [[2, 0], [0, 3], [0, 1]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # last token of example 1 is padding
    stats = RoutingStats(n_layers=2, n_experts=E)
    masked = [routing_info(0, idx0), routing_info(1, idx1)]
    for info in masked:
        info.mask = mask
    stats.update(masked, ["x", "y"])
    stats.update([routing_info(0, idx0), routing_info(1, idx1)], ["x", "x"])

    for layer, idx in enumerate((idx0, idx1)):
        hand = np.zeros(E)
        for bi in range(2):
            for ti in range(3):
                for e in idx[bi, ti].tolist():
                    hand[e] += mask[bi, ti].item() + 1  # masked batch + unmasked batch
        np.testing.assert_array_equal(stats.load[layer], hand)
    np.testing.assert_array_equal(stats.tokens, [5 + 6, 5 + 6])

    keys, hist = stats.task_histograms()
    assert keys == ["x", "y"] and hist.shape == (2, 2, E)
    np.testing.assert_allclose(hist.sum(-1), np.ones((2, 2)))
    np.testing.assert_array_equal(stats.task_load["y"][0], [1, 1, 1, 1])  # (0,2), (3,1); padding dropped

    summary = stats.summary()
    np.testing.assert_allclose(np.sum(summary["load"], axis=1), [1, 1])
    assert all(0 <= h <= summary["max_entropy"] + 1e-9 for h in summary["token_entropy"])

    path = tmp_path / "routing.npz"
    stats.save(path)
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["load"], stats.load)
        np.testing.assert_array_equal(z["prob_sum"], stats.prob_sum)
        np.testing.assert_array_equal(z["entropy_sum"], stats.entropy_sum)
        np.testing.assert_array_equal(z["tokens"], stats.tokens)
        np.testing.assert_array_equal(z["task_histograms"], hist)
        np.testing.assert_array_equal(z["load_cv"], summary["load_cv"])
        np.testing.assert_array_equal(z["token_entropy"], summary["token_entropy"])
        assert z["task_names"].tolist() == keys


# -- 14. MoE positions --------------------------------------------------------------------------------

def test_moe_slots() -> None:
    assert moe_slots(ModelConfig(n_moe_layers=2), 4) == [2, 3]
    assert moe_slots(ModelConfig(n_moe_layers=4), 4) == [0, 1, 2, 3]
    assert moe_slots(ModelConfig(moe_layers=[3, 0]), 4) == [0, 3]
    for bad in ([4], [-1], [1, 1], []):
        with pytest.raises(ValueError):
            moe_slots(ModelConfig(moe_layers=bad), 4)
    for n in (0, 5):
        with pytest.raises(ValueError):
            moe_slots(ModelConfig(n_moe_layers=n), 4)


# -- frozen lower part computed once ------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "mode"), VARIANTS)
def test_cached_lower_part_gives_the_same_loss_and_gradients(kind: str, mode: str) -> None:
    """``forward(lower=lower_hidden(...))`` equals the full forward, value and gradients."""
    base = tiny_llama()
    ids, mask = left_padded()
    labels = ids.masked_fill(mask == 0, -100)
    emb = torch.randn(3, D_TASK)
    full, split = build(base, "llama", kind, mode).train(), build(base, "llama", kind, mode).train()
    assert split.split == 2
    a = full(ids, attention_mask=mask, labels=labels, task_emb=emb, task_keys=["a", "b", "c"])
    lower = split.lower_hidden(ids, mask)
    assert not lower.requires_grad and lower.shape == (3, ids.shape[1], D)
    b = split(attention_mask=mask, labels=labels, task_emb=emb, task_keys=["a", "b", "c"], lower=lower)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.loss, b.loss)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(full.named_parameters(), split.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert len(split.backbone.model.layers) == 4  # the full stack is restored afterwards


def test_lower_cache_does_not_depend_on_the_batch_that_fills_it() -> None:
    """An example's cached hidden states are those of the example alone, whichever (right-padded)
    batch first needed it: a resumed run caches bit-identical values to an uninterrupted one."""
    model = build(tiny_llama(), "llama", "moe")
    lengths = [3, 9, 5, 12, 7, 2]
    ids = torch.randint(1, VOCAB, (len(lengths), max(lengths)))
    mask = torch.tensor([[1] * n + [0] * (max(lengths) - n) for n in lengths])

    def fill(order: list[list[int]]) -> LowerCache:
        cache = LowerCache()
        for rows in order:
            out = cache(model, rows, ids[rows], mask[rows])
            assert out.shape == (len(rows), max(lengths), D)
            for r, i in enumerate(rows):  # padding positions stay zero
                assert not out[r, lengths[i]:].any()
        return cache

    a, b = fill([[0, 1, 2], [3, 4, 5]]), fill([[5], [3, 1], [0, 4], [2, 1, 3]])
    assert sorted(a.store) == sorted(b.store) == list(range(len(lengths)))
    for i, n in enumerate(lengths):
        alone = model.lower_hidden(ids[i:i + 1, :n], mask[i:i + 1, :n])[0]
        assert torch.equal(a.store[i], b.store[i]) and torch.equal(a.store[i], alone)
    b.store[0] += 1  # filled entries are reused, not recomputed
    assert torch.equal(b(model, [0], ids[:1], mask[:1])[0, :lengths[0]], a.store[0] + 1)


def test_lower_hidden_needs_a_frozen_decoder_stack() -> None:
    with pytest.raises(ValueError, match="freeze_lower"):
        build(tiny_llama(), "llama", "moe", freeze_lower=False).lower_hidden(torch.ones(1, 3, dtype=torch.long))


def test_replace_routers_with_floors() -> None:
    model = build(tiny_llama(), "llama", "promoe", "prior")
    replace_routers(model, "uniform")
    assert model.hyper is None and all(isinstance(m.router, UniformRouter) for m in model.moe_layers)
    ids, mask = left_padded()
    out = model(ids, attention_mask=mask, task_emb=torch.randn(3, D_TASK))
    assert all(info.router.indices.shape[-1] == E for info in out.routing)  # every expert, always


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_target_only_loss_equals_the_backbone_loss(kind: str) -> None:
    """The output head runs on target positions only, with the backbone's own loss value and gradients."""
    base = tiny_llama()
    ids, mask = left_padded()
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100  # prompt positions
    emb = torch.randn(3, D_TASK)
    fast, full = build(base, "llama", kind).train(), build(base, "llama", kind).train()
    a = fast(ids, attention_mask=mask, labels=labels, task_emb=emb)
    b = full(ids, attention_mask=mask, labels=labels, task_emb=emb, full_logits=True)
    assert a.logits is None and b.logits is not None
    with torch.no_grad():
        ref = base(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(a.lm_loss, ref)
    torch.testing.assert_close(a.loss, b.loss)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(fast.named_parameters(), full.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_routing_only_forward_routes_like_the_full_forward() -> None:
    cfg = ModelConfig(n_moe_layers=2, n_experts=E, top_k=K)
    model = build_model(tiny_llama(), "llama", cfg, "moe", seed=0).eval()
    ids = torch.randint(5, VOCAB, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    full = model(input_ids=ids, attention_mask=mask)
    only = model(input_ids=ids, attention_mask=mask, routing_only=True)
    assert only.logits is None and full.logits is not None and len(only.routing) == len(full.routing) == 2
    for a, b in zip(full.routing, only.routing, strict=True):
        torch.testing.assert_close(a.router.probs, b.router.probs)
        assert torch.equal(a.router.indices, b.router.indices)
