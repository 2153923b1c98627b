"""Router auxiliary losses as pure, mask-aware functions.

Each takes the tensors a router produced (flattened to ``N`` routed rows — tokens, or tasks in
proactive ``task`` mode) and an optional boolean ``mask`` of the rows that count (padding excluded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from promoe.model.router import RouterOutput


def _select(mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    if mask is None:
        return tensors
    keep = mask.reshape(-1).bool()
    return tuple(t[keep] for t in tensors)


def load_balancing_loss(*, probs: Tensor, indices: Tensor, mask: Tensor | None = None) -> Tensor:
    """Switch-Transformer load balancing: ``E * sum_e f_e * P_e``.

    ``probs`` (N, E) router probabilities, ``indices`` (N, k) chosen experts, ``mask`` (N,) rows that
    count. ``f_e`` is the fraction of routing assignments sent to expert e, ``P_e`` the mean probability
    of e. Equals 1 under uniform routing (its minimum for balanced assignments); grows with imbalance.
    """
    n_experts = probs.shape[-1]
    probs, indices = _select(mask, probs.reshape(-1, n_experts), indices.reshape(-1, indices.shape[-1]))
    if probs.shape[0] == 0:
        return probs.new_zeros(())
    counts = torch.zeros(n_experts, device=probs.device, dtype=probs.dtype)
    counts.scatter_add_(0, indices.reshape(-1), torch.ones_like(indices.reshape(-1), dtype=probs.dtype))
    f = counts / indices.numel()  # (E,)
    p = probs.mean(dim=0)  # (E,)
    return n_experts * (f * p).sum()


def router_z_loss(*, logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """ST-MoE router z-loss: mean squared log-partition of the router logits (keeps logits small)."""
    n_experts = logits.shape[-1]
    (logits,) = _select(mask, logits.reshape(-1, n_experts))
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def routing_target_loss(*, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy of the router's softmax against a target expert per row: ``logits`` (N, E), ``targets`` (N,)
    expert indices, -1 where a row has no target (it does not count, nor do rows outside ``mask``)."""
    n_experts = logits.shape[-1]
    keep = targets.reshape(-1) >= 0
    if mask is not None:
        keep = keep & mask.reshape(-1).bool()
    logits, targets = logits.reshape(-1, n_experts)[keep], targets.reshape(-1)[keep]
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def router_losses(layers: list[tuple[RouterOutput, Tensor | None]], *, balance: float, z: float,
                  targets: Tensor | None = None, target_weight: float = 0.0) -> Tensor:
    """The mean over MoE layers of ``balance`` x load balancing + ``z`` x z-loss (per token, or per example for
    task-level routing) + ``target_weight`` x the routing-target loss where ``targets`` (B,) are given.
    ``layers``: each layer's router output with its token mask (None: every token counts)."""
    total = layers[0][0].probs.new_zeros(())
    for r, token_mask in layers:
        if r.task_level:  # balance across the batch's tasks, not its tokens
            probs, idx, logits, mask = r.probs[:, 0], r.indices[:, 0], r.logits[:, 0], None
        else:
            probs, idx, logits, mask = r.probs, r.indices, r.logits, token_mask
        total = total + balance * load_balancing_loss(probs=probs, indices=idx, mask=mask)
        total = total + z * router_z_loss(logits=logits, mask=mask)
        if targets is not None:  # each example's target, at its every routed row
            rows = targets.to(logits.device).view(-1, *([1] * (logits.dim() - 2))).expand(logits.shape[:-1])
            total = total + target_weight * routing_target_loss(logits=logits, targets=rows, mask=mask)
    return total / len(layers)
