"""promoe.model.losses: load balancing and router z-loss, minimal under uniform routing and mask-aware; the routing-target
loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from promoe.model.losses import load_balancing_loss, router_z_loss, routing_target_loss
from tests.model.helpers import E, K

pytestmark = pytest.mark.usefixtures("tiny_tensors")


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


def test_routing_target_loss_is_the_cross_entropy_of_rows_with_a_target() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 5.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([0, 2, -1, 1])  # row 2 has no target
    mask = torch.tensor([True, True, True, False])  # row 3 is padding
    expected = torch.nn.functional.cross_entropy(logits[:2], targets[:2])
    assert torch.allclose(routing_target_loss(logits=logits, targets=targets, mask=mask), expected)
    assert routing_target_loss(logits=logits, targets=torch.full((4,), -1), mask=None) == 0
    right = routing_target_loss(logits=logits[:1], targets=torch.tensor([0]))
    assert right < routing_target_loss(logits=logits[:1], targets=torch.tensor([1]))  # lower where it routes right
