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

    def forward_rows(self, x: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        """Task-level routing: row b of ``x`` (B, T, D) mixes experts ``indices[b]`` (k,) with
        ``weights[b]`` at every position, so rows (not tokens) are dispatched, and an expert every row
        uses runs on the whole batch with no gathering. Equals :meth:`forward` with the row's routing
        repeated for each of its tokens."""
        b, t, d = x.shape
        out = None
        for e in torch.unique(indices).tolist():
            chosen = indices == e  # (B, k)
            w = (weights * chosen).sum(-1)  # (B,)
            rows = chosen.any(-1).nonzero().squeeze(1)
            if len(rows) == b:
                y = self.expert(e, x.reshape(b * t, d)).view(b, t, d) * w.to(x.dtype)[:, None, None]
                out = y if out is None else out + y
                continue
            xs = x.index_select(0, rows)
            y = self.expert(e, xs.reshape(-1, d)).view(-1, t, d) * w[rows].to(x.dtype)[:, None, None]
            out = (torch.zeros_like(x) if out is None else out).index_add(0, rows, y)
        return out

    @torch.no_grad()
    def merged(self, indices: Tensor, weights: Tensor) -> Experts:
        """Experts ``indices`` (k,) mixed with ``weights`` (k,) as one ordinary FFN of width k·d_ff:
        their neurons side by side, each down projection scaled by its weight (the sum of the experts'
        outputs, exactly). A task-level routing turns a whole MoE layer into this one FFN."""
        idx = [int(e) for e in indices]
        w = weights.to(self.w_out.dtype)
        merged = Experts(n_experts=1, d_model=self.d_model, d_ff=len(idx) * self.d_ff, act=self.act_name,
                         gated=self.gated, bias=self.b_in is not None).to(self.w_in.dtype)

        def side_by_side(t: Tensor) -> Tensor:  # (k, rows, ...) -> [gate_1..gate_k; up_1..up_k] when gated
            halves = t.chunk(2, dim=1) if self.gated else (t,)
            return torch.cat([h.flatten(0, 1) for h in halves])

        merged.w_in[0].copy_(side_by_side(self.w_in[idx]))
        merged.w_out[0].copy_(torch.cat([self.w_out[e] * w[j] for j, e in enumerate(idx)], dim=1))
        if self.b_in is not None:
            merged.b_in[0].copy_(side_by_side(self.b_in[idx]))
            merged.b_out[0].copy_((self.b_out[idx] * w[:, None]).sum(0))
        return merged

    def n_params_per_expert(self) -> int:
        per = self.w_in[0].numel() + self.w_out[0].numel()
        if self.b_in is not None:
            per += self.b_in[0].numel() + self.b_out[0].numel()
        return per
