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
