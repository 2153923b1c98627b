"""A bank of FFN experts stored as stacked weights, with grouped token dispatch.

Each expert is a (gated) FFN: ``down(act(gate(x)) * up(x))`` for SwiGLU-style families (Llama, Qwen,
SmolLM, gated T5) or ``down(act(up(x)))`` otherwise (BERT, original T5), with optional biases.
Dispatch sorts the (token, expert) assignments by expert and runs one matmul per expert that received
tokens, so there is no per-token Python loop.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.activations import ACT2FN


class Experts(nn.Module):
    """``n_experts`` FFNs of width ``d_ff``: ``w_in`` (E, d_in, D), ``w_out`` (E, D, d_ff)."""

    def __init__(self, *, n_experts: int, d_model: int, d_ff: int, act: str = "silu", gated: bool = True,
                 bias: bool = False) -> None:
        super().__init__()
        self.n_experts, self.d_model, self.d_ff, self.gated, self.act_name = n_experts, d_model, d_ff, gated, act
        d_in = 2 * d_ff if gated else d_ff
        self.w_in = nn.Parameter(torch.empty(n_experts, d_in, d_model))  # [gate; up] when gated
        self.w_out = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        self.b_in = nn.Parameter(torch.zeros(n_experts, d_in)) if bias else None
        self.b_out = nn.Parameter(torch.zeros(n_experts, d_model)) if bias else None
        self.act = ACT2FN[act]
        nn.init.normal_(self.w_in, std=d_model**-0.5)
        nn.init.normal_(self.w_out, std=d_ff**-0.5)

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Apply expert ``e`` to rows ``x`` (n, D) -> (n, D)."""
        h = x @ self.w_in[e].T.to(x.dtype)
        if self.b_in is not None:
            h = h + self.b_in[e].to(x.dtype)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        y = h @ self.w_out[e].T.to(x.dtype)
        if self.b_out is not None:
            y = y + self.b_out[e].to(x.dtype)
        return y

    def forward(self, x: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        """Mix the chosen experts: ``x`` (N, D), ``indices`` / ``weights`` (N, k) -> (N, D)."""
        n, k = indices.shape
        flat = indices.reshape(-1)  # (N*k,)
        order = torch.argsort(flat, stable=True)
        token = order // k  # token of each sorted assignment
        counts = torch.bincount(flat, minlength=self.n_experts).tolist()
        w = weights.reshape(-1)[order].to(x.dtype)  # (N*k,)
        out = torch.zeros_like(x)
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                continue
            rows = token[start:start + c]
            y = self.expert(e, x.index_select(0, rows)) * w[start:start + c, None]
            out.index_add_(0, rows, y)
            start += c
        return out

    def n_params_per_expert(self) -> int:
        per = self.w_in[0].numel() + self.w_out[0].numel()
        if self.b_in is not None:
            per += self.b_in[0].numel() + self.b_out[0].numel()
        return per
