"""Routers: one interface, each implementation only says how logits are made.

``Router.forward(x, task)`` turns logits into a :class:`RouterOutput` (softmax, optional noise and
jitter in training, top-k, renormalised weights). ``task`` is the per-example routing parameters a
proactive router received from the hypernetwork for this layer (``None`` for static routers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class RouterOutput:
    """What a router decided for a batch of tokens."""

    weights: Tensor  # (B, T, k) mixing weights of the chosen experts, summing to 1
    indices: Tensor  # (B, T, k) chosen experts
    probs: Tensor  # (B, T, E) softmax of the logits (float32)
    logits: Tensor  # (B, T, E)
    task_level: bool = False
    """True when the routing does not depend on the token (proactive ``task`` mode, uniform)."""


class Router(nn.Module, ABC):
    """Base router: subclasses implement :meth:`logits` only."""

    task_level = False

    def __init__(self, *, d_model: int, n_experts: int, top_k: int, jitter: float = 0.0,
                 noise: float = 0.0) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be in [1, n_experts={n_experts}]")
        self.d_model, self.n_experts, self.top_k = d_model, n_experts, top_k
        self.jitter, self.noise = jitter, noise

    @abstractmethod
    def logits(self, x: Tensor, task: Tensor | None) -> Tensor:
        """Router logits (B, T, E) for hidden states ``x`` (B, T, D)."""

    def forward(self, x: Tensor, task: Tensor | None = None) -> RouterOutput:
        """Route ``x`` (B, T, D). A task-level router decides once per row (on its first position; its
        logits ignore the token) and its outputs are that decision expanded over the T positions."""
        t = x.shape[1]
        if self.task_level:
            x = x[:, :1]
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        logits = self.logits(x, task)  # (B, T, E), T = 1 when task-level
        if self.training and self.noise > 0:
            logits = logits + torch.randn_like(logits) * self.noise
        probs = F.softmax(logits.float(), dim=-1)
        top, indices = torch.topk(probs, self.top_k, dim=-1)  # (B, T, k)
        weights = (top / top.sum(dim=-1, keepdim=True)).to(x.dtype)
        if self.task_level:
            weights, indices, probs, logits = (v.expand(-1, t, -1) for v in (weights, indices, probs, logits))
        return RouterOutput(weights=weights, indices=indices, probs=probs, logits=logits,
                            task_level=self.task_level)


class TokenRouter(Router):
    """Static learned token-level gate (Switch / Mixtral): ``logits = x W^T``."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.weight = nn.Parameter(torch.empty(self.n_experts, self.d_model))
        nn.init.normal_(self.weight, std=self.d_model**-0.5)

    def logits(self, x: Tensor, task: Tensor | None) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class UniformRouter(Router):
    """Average routing: every expert, always, with weight 1/E (``top_k`` is raised to ``n_experts``).

    A known strong floor for routers; with a single expert it is the plain dense FFN.
    """

    task_level = True

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.top_k = self.n_experts

    def logits(self, x: Tensor, task: Tensor | None) -> Tensor:
        return x.new_zeros(*x.shape[:-1], self.n_experts)


class RandomRouter(Router):
    """Random routing floor: fresh Gaussian logits per token from the router's own generator (``seed``),
    so its draws do not depend on what else ran in the process (other rows, a resumed run)."""

    def __init__(self, *, seed: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Restart the random sequence from ``seed``."""
        self._gen = None
        self._pending: Tensor | None = None

    def rng_state(self) -> Tensor | None:
        """Where the random sequence is (None: at its start), to continue it in another process."""
        return self._gen.get_state() if self._gen is not None else self._pending

    def set_rng_state(self, state: Tensor | None) -> None:
        """Continue the random sequence from ``state`` (from :meth:`rng_state`) at the next draw."""
        self._gen, self._pending = None, state

    def logits(self, x: Tensor, task: Tensor | None) -> Tensor:
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device).manual_seed(self.seed)
            if self._pending is not None:
                self._gen.set_state(self._pending)
                self._pending = None
        return torch.randn(*x.shape[:-1], self.n_experts, device=x.device, dtype=x.dtype, generator=self._gen)


ProactiveMode = Literal["hyper", "prior", "task"]


class ProactiveRouter(Router):
    """Routing configured per task by generated parameters ``task`` (from the hypernetwork).

    * ``hyper``: ``logits = x (W + U_task V)^T`` — a generated rank-r update ``U_task`` (E, r) of the
      static token router through a learned basis ``V`` (r, D); with ``rank=None`` the whole
      (E, D) update is generated.
    * ``prior``: ``logits = x W^T + b_task`` — a generated task prior on a static token router.
    * ``task``: ``logits = b + b_task`` — task-level expert logits, no token dependence.

    A zero ``task`` gives exactly the static router (the generator's output layer starts at zero).
    """

    def __init__(self, *, mode: ProactiveMode, rank: int | None = 8, **kw) -> None:
        super().__init__(**kw)
        self.mode, self.rank = mode, rank
        self.task_level = mode == "task"
        if mode == "task":
            self.bias = nn.Parameter(torch.zeros(self.n_experts))
        else:
            self.weight = nn.Parameter(torch.empty(self.n_experts, self.d_model))
            nn.init.normal_(self.weight, std=self.d_model**-0.5)
        if mode == "hyper" and rank is not None:
            self.basis = nn.Parameter(torch.randn(rank, self.d_model) * self.d_model**-0.5)

    @property
    def n_generated(self) -> int:
        """How many numbers the hypernetwork must generate for this router, per task."""
        if self.mode == "hyper":
            return self.n_experts * (self.rank if self.rank is not None else self.d_model)
        return self.n_experts

    def logits(self, x: Tensor, task: Tensor | None) -> Tensor:
        b = x.shape[0]
        if self.mode == "task":
            logits = self.bias.to(x.dtype).expand(*x.shape[:-1], self.n_experts)
            return logits if task is None else logits + task.to(x.dtype).view(b, 1, self.n_experts)
        logits = F.linear(x, self.weight.to(x.dtype))  # (B, T, E)
        if task is None:
            return logits
        task = task.to(x.dtype)
        if self.mode == "prior":
            return logits + task.view(b, 1, self.n_experts)
        if self.rank is None:
            delta = task.view(b, self.n_experts, self.d_model)  # (B, E, D)
            return logits + torch.einsum("btd,bed->bte", x, delta)
        u = task.view(b, self.n_experts, self.rank)  # (B, E, r)
        return logits + torch.einsum("btr,ber->bte", F.linear(x, self.basis.to(x.dtype)), u)


ROUTERS: dict[str, type[Router]] = {
    "token": TokenRouter,
    "proactive": ProactiveRouter,
    "uniform": UniformRouter,
    "random": RandomRouter,
}
"""Router registry: a config names one of these keys."""
