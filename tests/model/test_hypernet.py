"""promoe.model.hypernet: gradients reach the hypernetwork (past its zero output layer) and the trained layers."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from promoe.model.hypernet import HyperNetwork, fit_to_targets
from tests.model.helpers import D_TASK, MODES, build, left_padded, tiny_llama

pytestmark = pytest.mark.usefixtures("tiny_tensors")


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


def test_fit_to_targets_routes_each_description_to_its_expert_at_every_layer() -> None:
    torch.manual_seed(0)
    hyper = HyperNetwork(d_task=16, n_layers=3, n_out=4, d_hidden=32, d_layer=8)
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    targets = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    assert not (hyper(emb).argmax(-1) == targets[:, None]).all()  # zero output layer: no choice yet
    losses = fit_to_targets(hyper, emb, targets, steps=200, seed=0)
    assert len(losses) == 200 and losses[-1] < 0.1 * losses[0]
    assert (hyper(emb).argmax(-1) == targets[:, None]).all() and hyper.training
    assert fit_to_targets(hyper, emb, targets, steps=0) == []
