"""The MoE layer (router + experts) and its hook into a Hugging Face backbone.

:class:`MoELayer` is plain: ``(x, task) -> (y, RoutingInfo)``. A backbone calls its FFN modules with
hidden states only, so :class:`MoEBlock` stands in the FFN's place and exchanges the rest through a
:class:`RoutingContext` owned by the model wrapper: the wrapper puts the per-task routing parameters
in before a forward pass and takes every layer's :class:`RoutingInfo` out after it. Nothing is global.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from promoe.model.experts import Experts
from promoe.model.router import Router, RouterOutput


@dataclass
class RoutingInfo:
    """One MoE layer's routing decision for one forward pass."""

    layer: int  # index among the model's MoE layers
    router: RouterOutput
    mask: Tensor | None = None
    """(B, T) tokens that count (padding excluded), set by the model wrapper after the forward pass."""


class MoELayer(nn.Module):
    """A router choosing among a bank of experts, token by token; with a ``shared`` expert (one FFN every
    token passes through, ``model.shared_expert``) the routed experts add to its output."""

    def __init__(self, *, experts: Experts, router: Router, layer: int, shared: Experts | None = None) -> None:
        super().__init__()
        self.experts, self.router, self.layer, self.shared = experts, router, layer, shared

    def forward(self, x: Tensor, task: Tensor | None = None) -> tuple[Tensor, RoutingInfo]:
        b, t, d = x.shape
        r = self.router(x, task)  # weights/indices (B, T, k)
        if r.task_level:  # one routing per row: no per-token dispatch
            y = self.experts.forward_rows(x, r.indices[:, 0], r.weights[:, 0])
        else:
            k = r.indices.shape[-1]
            y = self.experts(x.reshape(b * t, d), r.indices.reshape(b * t, k), r.weights.reshape(b * t, k)).view(b, t, d)
        if self.shared is not None:
            y = y + self.shared.expert(0, x.reshape(b * t, d)).view(b, t, d)
        return y, RoutingInfo(layer=self.layer, router=r)

    def expert(self, e: int, x: Tensor) -> Tensor:
        """What the layer computes on rows ``x`` (n, D) with every row routed to expert ``e`` alone."""
        y = self.experts.expert(e, x)
        return y if self.shared is None else y + self.shared.expert(0, x)


@dataclass
class RoutingContext:
    """Per-forward exchange between a model wrapper and its MoE blocks."""

    task: Tensor | None = None
    """Generated routing parameters (B, n_layers, n_out), or None for static routing."""
    record: bool = True
    records: list[RoutingInfo] = field(default_factory=list)

    def layer_task(self, layer: int, batch: int) -> Tensor | None:
        """Routing parameters of ``layer`` for a batch of ``batch`` rows.

        Generation with beams or several sequences per prompt repeats each prompt's rows
        consecutively, so each task row is repeated the same way.
        """
        if self.task is None:
            return None
        task = self.task[:, layer]
        if batch != task.shape[0]:
            if batch % task.shape[0]:
                raise ValueError(f"batch of {batch} rows does not extend {task.shape[0]} task rows")
            task = task.repeat_interleave(batch // task.shape[0], dim=0)
        return task


class MoEBlock(nn.Module):
    """Stands in for a backbone's FFN module: runs its :class:`MoELayer` with the context's task."""

    def __init__(self, moe: MoELayer, context: RoutingContext) -> None:
        super().__init__()
        self.moe = moe
        self.context = context

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        y, info = self.moe(hidden_states, self.context.layer_task(self.moe.layer, hidden_states.shape[0]))
        if self.context.record:
            self.context.records.append(info)
        return y


class PassThrough(nn.Module):
    """Identity used where a family splits its FFN over two modules (BERT's intermediate/output)."""

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        return hidden_states
