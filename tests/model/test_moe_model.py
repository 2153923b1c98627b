"""promoe.model.moe_model: the three experiment models built on a tiny backbone.

Routing computed once per task, the aux loss, parameter counts, MoE positions, the cached frozen lower
part, target-only loss and routing-only forward, router replacement, task-mode generation with row
dispatch: parity checks and invariants.
"""

from __future__ import annotations

import copy

import pytest
import torch

from promoe.config import ModelConfig
from promoe.model.build import build_model, moe_slots, param_counts, replace_routers
from promoe.model.losses import load_balancing_loss, router_z_loss
from promoe.model.moe_model import MODEL_KINDS, TaskRouting
from promoe.model.router import UniformRouter
from tests.model.helpers import (
    D_FF,
    D_TASK,
    VARIANTS,
    VOCAB,
    D,
    E,
    K,
    build,
    left_padded,
    model_cfg,
    per_token,
    tiny_llama,
    tiny_t5,
)

pytestmark = pytest.mark.usefixtures("tiny_tensors")


# -- untrained PRo-MoE routes like the MoE -----------------------------------------------------

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


# -- proactive routing computed once per task ----------------------------------------------------

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


def test_task_routing_is_explicit_per_row_and_per_task() -> None:
    """Two rows that give one model different descriptions of the same task name get their own routing
    (no cache keys shared through the model), each computed once per task, equal to the model's own."""
    model = build(tiny_llama(), "llama", "promoe", "prior")
    with torch.no_grad():
        model.hyper.out.weight.normal_()
    own, other = {"a": torch.randn(D_TASK), "b": torch.randn(D_TASK)}, {"a": torch.randn(D_TASK)}
    rows, ablated = TaskRouting(model, own), TaskRouting(model, other)
    first = rows.rows(["a", "b", "a"])
    assert torch.equal(first[0], first[2]) and model.n_routing_computes == 2
    rows.rows(["b", "a"])
    assert model.n_routing_computes == 2  # each task once per row
    assert not torch.equal(ablated.rows(["a"])[0], first[0])
    with torch.no_grad():
        torch.testing.assert_close(first, model.task_routing(torch.stack([own["a"], own["b"], own["a"]])))
        ids, mask = left_padded()
        out_explicit = model(ids, attention_mask=mask, routing=first)
        out_emb = model(ids, attention_mask=mask, task_emb=torch.stack([own["a"], own["b"], own["a"]]))
    torch.testing.assert_close(out_explicit.logits, out_emb.logits)
    moe = build(tiny_llama(), "llama", "moe")
    assert TaskRouting(moe, own).rows(["a"]) is None  # a static router generates nothing


# -- aux loss -----------------------------------------------------------------------------------

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


# -- parameter counts, generation ---------------------------------------------------------------

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


# -- MoE positions --------------------------------------------------------------------------------

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


def test_lower_hidden_needs_a_frozen_decoder_stack() -> None:
    with pytest.raises(ValueError, match="freeze_lower"):
        build(tiny_llama(), "llama", "moe", freeze_lower=False).lower_hidden(torch.ones(1, 3, dtype=torch.long))


# -- router floors, target-only loss, routing-only forward ---------------------------------------

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


# -- the scoring regime ---------------------------------------------------------------------------

def test_scoring_regime_routes_with_eval_top_k_and_restores_training_routing() -> None:
    model = build(tiny_llama(), "llama", "moe", eval_top_k=1)
    ids, mask = left_padded()
    with pytest.raises(RuntimeError), model.scoring_regime():
        assert model.top_ks == [1, 1] and model(ids, attention_mask=mask).routing[0].router.indices.shape[-1] == 1
        raise RuntimeError  # whatever happens inside, training's routing comes back
    assert model.top_ks == [K, K]
    with model.routing_top_k(None):  # no scoring top-k: routing as it is
        assert model.top_ks == [K, K]
    assert model.train().for_scoring().top_ks == [1, 1] and not model.training
    floor = build(tiny_llama(), "llama", "moe", eval_top_k=1)
    replace_routers(floor, "uniform")
    assert floor.for_scoring().top_ks == [E, E]  # uniform mixing always uses every expert
