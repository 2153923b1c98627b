"""The hypernetwork of the Proactive Router: ``H(task_embedding, layer_embedding) -> router params``.

It runs once per task (not per token) and generates the routing parameters of every MoE layer from
the task-description embedding and a learned embedding of the layer. Its output layer starts at zero,
so an untrained PRo-MoE routes exactly like its static router.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HyperNetwork(nn.Module):
    """Two-layer MLP over ``[task_emb ; layer_emb]``, shared by all MoE layers."""

    def __init__(self, *, d_task: int, n_layers: int, n_out: int, d_hidden: int = 256, d_layer: int = 32) -> None:
        super().__init__()
        self.d_task, self.n_layers, self.n_out = d_task, n_layers, n_out
        self.layer_emb = nn.Embedding(n_layers, d_layer)
        nn.init.normal_(self.layer_emb.weight, std=1.0)
        self.task_norm = nn.LayerNorm(d_task)
        self.hidden = nn.Linear(d_task + d_layer, d_hidden)
        self.act = nn.GELU()
        self.out = nn.Linear(d_hidden, n_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, task_emb: Tensor) -> Tensor:
        """Routing parameters (B, n_layers, n_out) for task embeddings (B, d_task)."""
        b = task_emb.shape[0]
        t = self.task_norm(task_emb.float())[:, None, :].expand(b, self.n_layers, self.d_task)
        layer = self.layer_emb.weight[None].expand(b, -1, -1)  # (B, L, d_layer)
        return self.out(self.act(self.hidden(torch.cat([t, layer], dim=-1))))  # (B, L, n_out)


def fit_to_targets(hyper: HyperNetwork, task_emb: Tensor, targets: Tensor, *, steps: int, lr: float = 1e-2,
                   seed: int = 0, batch_size: int = 64) -> list[float]:
    """Fit ``hyper``'s expert logits at every layer to a target expert per description: cross-entropy, Adam,
    ``steps`` mini-batches of ``batch_size`` rows of ``task_emb`` (N, d_task) with ``targets`` (N,) drawn by a
    generator seeded with ``seed``. Only for a generator that makes one logit per expert (``n_out`` = experts:
    proactive ``task`` and ``prior`` modes). Returns the loss of each step. Runs in seconds on a CPU: no backbone."""
    n_experts = hyper.n_out
    if len(task_emb) == 0 or steps == 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(hyper.parameters(), lr=lr)
    was_training, losses = hyper.training, []
    hyper.train()
    for _ in range(steps):
        rows = torch.randint(len(task_emb), (min(batch_size, len(task_emb)),), generator=gen)
        logits = hyper(task_emb[rows])  # (b, L, E)
        loss = nn.functional.cross_entropy(logits.reshape(-1, n_experts).float(),
                                           targets[rows][:, None].expand(-1, hyper.n_layers).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    hyper.train(was_training)
    return losses
