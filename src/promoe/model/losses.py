"""Router auxiliary losses as pure, mask-aware functions.

Each takes the tensors a router produced (flattened to ``N`` routed rows — tokens, or tasks in
proactive ``task`` mode) and an optional boolean ``mask`` of the rows that count (padding excluded).
"""

from __future__ import annotations

import torch
from torch import Tensor


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
