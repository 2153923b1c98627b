"""A bank of FFN experts stored as stacked weights, with grouped token dispatch.

Each expert is a (gated) FFN: ``down(act(gate(x)) * up(x))`` for SwiGLU-style families (Llama, Qwen,
SmolLM, gated T5) or ``down(act(up(x)))`` otherwise (BERT, original T5), with optional biases.
Dispatch sorts the (token, expert) assignments by expert once, so each expert's tokens are one
contiguous block of rows, and runs each expert's FFN on its block: no per-token Python loop.

Two small autograd functions carry that path, because spelled with plain autograd ops it costs up to a
third more than a dense FFN of the same activated width on CPU (torch 2.13, fp32): indexing ``w_in[e]``
makes backward allocate, zero and add up a full (E, ...) gradient per expert; the backward of a row
gather is ``index_add_``, several times slower than the gather; and an (S, 2·d_ff) hidden for all rows
is past glibc's 32 MB mmap threshold at training sizes, so its pages are faulted in afresh every step.
:class:`_ExpertsFFN` keeps every intermediate per expert (reused heap memory, no page faults) and writes
each expert's output and weight gradients straight into its slice of one buffer; :class:`_Gather` moves
rows by a permutation whose backward is again a gather. Double backward is not supported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from transformers.activations import ACT2FN

_aten = torch.ops.aten
_ACT_GRAD: dict[str, Callable[[Tensor, Tensor, Tensor], object]] = {
    "silu": lambda g, x, out: _aten.silu_backward.grad_input(g, x, grad_input=out),
    "swish": lambda g, x, out: _aten.silu_backward.grad_input(g, x, grad_input=out),
    "gelu": lambda g, x, out: _aten.gelu_backward.grad_input(g, x, grad_input=out),
    "gelu_pytorch_tanh": lambda g, x, out: _aten.gelu_backward.grad_input(g, x, approximate="tanh", grad_input=out),
    "relu": lambda g, x, out: _aten.threshold_backward.grad_input(g, x, 0, grad_input=out),
}
"""``out = g * act'(x)`` in one kernel for the activations whose derivative aten has (others: autograd)."""

NEGLIGIBLE_WEIGHT = 1e-6
"""At inference, :meth:`Experts.forward_rows` does not run an expert for a row whose weight on it is at most
this: it would change the layer's output by at most a millionth of that expert's own output. Task-level
routings floor the probabilities of the experts they do not choose at 1e-8 (``task_routing.MIN_PROB``; the
oracle's one-hot choice, knn and skill routing), and with top-2 one of those was run for nothing."""


def _act_grad(act: nn.Module, name: str, g: Tensor, x: Tensor, out: Tensor) -> None:
    if name in _ACT_GRAD:
        _ACT_GRAD[name](g, x, out)
        return
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out.copy_(torch.autograd.grad(act(x), x, g)[0])


def _run_experts(x: Tensor, p: tuple[Tensor | None, ...], counts: list[int], act: nn.Module, gated: bool,
                 saved: list[Tensor] | None) -> Tensor:
    """Rows ``x`` (S, D) sorted by expert, ``counts[e]`` rows for expert e -> (S, D); ``p`` holds
    ``w_in, b_in, w_out, b_out``. Appends each active expert's (hidden, act, product) to ``saved``."""
    w_in, b_in, w_out, b_out = p
    y = x.new_empty(x.shape[0], w_out.shape[1])
    # per-expert views made once: at decoding sizes the per-op overhead is what a loop over experts costs
    xs, ys, wi, wo = x.split(counts), y.split(counts), w_in.transpose(1, 2).unbind(0), w_out.transpose(1, 2).unbind(0)
    for e, c in enumerate(counts):
        if c == 0:
            continue
        h = torch.mm(xs[e], wi[e]) if b_in is None else torch.addmm(b_in[e], xs[e], wi[e])  # (c, d_in)
        if gated:
            gate, up = h.chunk(2, dim=1)
            s = act(gate)
            a = s * up  # (c, d_ff)
        else:
            s = a = act(h)
        if b_out is None:
            torch.mm(a, wo[e], out=ys[e])
        else:
            torch.addmm(b_out[e], a, wo[e], out=ys[e])
        if saved is not None:
            saved += [h, s, a]
    return y


class _ExpertsFFN(torch.autograd.Function):
    """:func:`_run_experts` with a hand-written backward: per expert, the gradients of its weights go
    straight into its slice of one (E, ...) buffer (idle experts: zeros) and the activation derivative is
    one fused aten kernel; no intermediate of width d_ff ever spans all S rows."""

    @staticmethod
    def forward(ctx, x: Tensor, w_in: Tensor, b_in: Tensor | None, w_out: Tensor, b_out: Tensor | None,
                counts: list[int], act: nn.Module, act_name: str, gated: bool) -> Tensor:
        saved: list[Tensor] = []
        y = _run_experts(x, (w_in, b_in, w_out, b_out), counts, act, gated, saved)
        ctx.save_for_backward(x, w_in, w_out, *saved)
        ctx.counts, ctx.act, ctx.act_name, ctx.gated = counts, act, act_name, gated
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, w_in, w_out, *saved = ctx.saved_tensors
        need = ctx.needs_input_grad[:5]
        like = (x, w_in, w_in[:, :, 0], w_out, w_out[:, :, 0])  # x, w_in, b_in, w_out, b_out
        gx, gwi, gbi, gwo, gbo = (torch.empty_like(t, memory_format=torch.contiguous_format) if n else None
                                  for t, n in zip(like, need, strict=True))
        start, rest = 0, iter(saved)
        for e, c in enumerate(ctx.counts):
            if c == 0:
                for g in (gwi, gbi, gwo, gbo):
                    if g is not None:
                        g[e].zero_()
                continue
            h, s, a = next(rest), next(rest), next(rest)
            xe, ge = x[start:start + c], gy[start:start + c]
            if gwo is not None:
                torch.mm(ge.t(), a, out=gwo[e])
            if gbo is not None:
                torch.sum(ge, 0, out=gbo[e])
            ga = ge @ w_out[e]  # (c, d_ff)
            gh = torch.empty_like(h)
            if ctx.gated:
                gate, up = h.chunk(2, dim=1)
                g_gate, g_up = gh.chunk(2, dim=1)
                torch.mul(ga, s, out=g_up)
                _act_grad(ctx.act, ctx.act_name, ga * up, gate, g_gate)
            else:
                _act_grad(ctx.act, ctx.act_name, ga, h, gh)
            if gwi is not None:
                torch.mm(gh.t(), xe, out=gwi[e])
            if gbi is not None:
                torch.sum(gh, 0, out=gbi[e])
            if gx is not None:
                torch.mm(gh, w_in[e], out=gx[start:start + c])
            start += c
        return gx, gwi, gbi, gwo, gbo, None, None, None, None


class _Gather(torch.autograd.Function):
    """``src[index]`` where ``index`` lists every row of ``src`` exactly ``fold`` times: the gradient is
    ``grad[back]`` (``back`` the inverse permutation) summed over each row's ``fold`` copies, a gather."""

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, back: Tensor, fold: int) -> Tensor:
        ctx.save_for_backward(back)
        ctx.fold = fold
        return src.index_select(0, index)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        (back,) = ctx.saved_tensors
        g = grad.index_select(0, back).view(-1, ctx.fold, grad.shape[-1])
        out = g[:, 0]
        for j in range(1, ctx.fold):  # adds of strided views: a reduction over the middle dim is ~2x slower
            out = out + g[:, j]
        return out, None, None, None


def _gather(src: Tensor, index: Tensor, back: Tensor, fold: int) -> Tensor:
    if torch.is_grad_enabled() and src.requires_grad:
        return _Gather.apply(src, index, back, fold)
    return src.index_select(0, index)


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
        counts = [0] * self.n_experts
        counts[e] = x.shape[0]
        return self._ffn(x, counts)

    def _ffn(self, x: Tensor, counts: list[int]) -> Tensor:
        """Rows ``x`` (S, D) sorted by expert, ``counts[e]`` rows for expert e -> (S, D). Under autocast the
        matmuls run in its dtype, as ``x @ w.T`` would (an ``out=`` matmul is not autocast)."""
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        p = tuple(None if t is None else t.to(dtype) for t in (self.w_in, self.b_in, self.w_out, self.b_out))
        x = x.to(dtype)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *p)):
            return _ExpertsFFN.apply(x, *p, counts, self.act, self.act_name, self.gated)
        return _run_experts(x, p, counts, self.act, self.gated, None)  # inference: nothing kept

    def forward(self, x: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        """Mix the chosen experts: ``x`` (N, D), ``indices`` / ``weights`` (N, k) -> (N, D)."""
        (n, k), d = indices.shape, x.shape[1]
        flat = indices.reshape(-1)  # (N*k,) assignment j of token t at t*k + j
        order = torch.argsort(flat, stable=True)  # sorted position -> assignment
        inv = torch.empty_like(order).scatter_(0, order, torch.arange(n * k, device=order.device))
        counts = torch.bincount(flat, minlength=self.n_experts).tolist()  # the one host sync
        xs = _gather(x, order // k, inv, k)  # (N*k, D), grouped by expert
        ys = _gather(self._ffn(xs, counts), inv, order, 1).view(n, k, d)  # back in assignment order
        return torch.bmm(weights.to(ys.dtype).view(n, 1, k), ys).view(n, d).to(x.dtype)  # (N, 1, k) @ (N, k, D)

    def forward_rows(self, x: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        """Task-level routing: row b of ``x`` (B, T, D) mixes experts ``indices[b]`` (k,) with
        ``weights[b]`` at every position, so rows (not tokens) are dispatched, and an expert every row
        uses runs on the whole batch with no gathering. Equals :meth:`forward` with the row's routing
        repeated for each of its tokens. Without autograd, an expert is not run for rows where its weight is
        at most :data:`NEGLIGIBLE_WEIGHT` (see there)."""
        b, t, d = x.shape
        out = None
        skip = not torch.is_grad_enabled()
        for e in torch.unique(indices).tolist():
            chosen = indices == e  # (B, k)
            w = (weights * chosen).sum(-1)  # (B,)
            if skip:
                chosen = chosen & ~(w <= NEGLIGIBLE_WEIGHT)[:, None]  # a NaN weight still runs (and propagates)
            rows = chosen.any(-1).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            if len(rows) == b:
                y = self.expert(e, x.reshape(b * t, d)).view(b, t, d) * w.to(x.dtype)[:, None, None]
                out = y if out is None else out + y
                continue
            xs = x.index_select(0, rows)
            y = self.expert(e, xs.reshape(-1, d)).view(-1, t, d) * w[rows].to(x.dtype)[:, None, None]
            out = (torch.zeros_like(x) if out is None else out).index_add(0, rows, y)
        return out if out is not None else torch.zeros_like(x)

    @torch.no_grad()
    def merged(self, indices: Tensor, weights: Tensor, shared: Experts | None = None) -> Experts:
        """Experts ``indices`` (k,) mixed with ``weights`` (k,) as one ordinary FFN: their neurons side by side,
        each down projection scaled by its weight (the sum of the experts' outputs, exactly), and a ``shared``
        expert's neurons beside them at weight 1. A task-level routing turns a whole MoE layer into this one FFN."""
        w = weights.to(self.w_out.dtype)
        parts = [(self, int(e), w[j]) for j, e in enumerate(indices)] + ([(shared, 0, 1.0)] if shared else [])
        merged = Experts(n_experts=1, d_model=self.d_model, d_ff=sum(m.d_ff for m, _, _ in parts), act=self.act_name,
                         gated=self.gated, bias=self.b_in is not None).to(self.w_in.dtype)

        def side_by_side(ts: list[Tensor]) -> Tensor:  # [gate_1..gate_k; up_1..up_k] when gated
            halves = [t.chunk(2, dim=0) if self.gated else (t,) for t in ts]
            return torch.cat([h[i] for i in range(len(halves[0])) for h in halves])

        merged.w_in[0].copy_(side_by_side([m.w_in[e] for m, e, _ in parts]))
        merged.w_out[0].copy_(torch.cat([m.w_out[e] * s for m, e, s in parts], dim=1))
        if self.b_in is not None:
            merged.b_in[0].copy_(side_by_side([m.b_in[e] for m, e, _ in parts]))
            merged.b_out[0].copy_(sum(m.b_out[e] * s for m, e, s in parts))
        return merged

    def n_params_per_expert(self) -> int:
        per = self.w_in[0].numel() + self.w_out[0].numel()
        if self.b_in is not None:
            per += self.b_in[0].numel() + self.b_out[0].numel()
        return per
