"""One optimizer step: the body of every training loop (meta-training, few-shot fine-tuning and
``promoe model check``).

A step runs the model on each micro-batch of one batch and backpropagates its loss (so gradients
accumulate), clips the gradients, steps the optimizer and the learning-rate schedule and clears the
gradients. A non-finite loss or gradient norm stops it with a :class:`TrainingError` before the
optimizer moves, so the weights stay those of the last good step; the message has one format for
every caller: where, which step, what was non-finite, on which tasks, and what to try.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import Tensor

from promoe.data.collate import Batch
from promoe.errors import PromoeError
from promoe.model.moe_model import ModelOutput


class TrainingError(PromoeError):
    """Training cannot go on (non-finite loss or gradients)."""


@dataclass
class MicroBatch:
    """One forward pass of a step and the model options it runs with."""

    batch: Batch
    task_emb: Tensor | None = None  # (B, d_task)
    lower: Tensor | Callable[[], Tensor] | None = None
    """Hidden states of the frozen lower layers (they replace ``input_ids``); a callable is called inside
    the step's autocast, as the frozen layers would run there."""
    num_items: float | None = None
    """The target-token sum of the loss is divided by this (None: the token mean)."""
    global_batch: int | None = None
    """Examples in the whole step over all processes: the aux loss (a mean over this micro-batch) is
    weighted by the micro-batch's share of them times the number of processes (whose gradients are
    averaged), so accumulation and data parallelism give the one-process gradient. None: this
    micro-batch is the whole step and the model's own ``loss`` is used."""
    examples: Sequence[int] | None = None  # indices named in error messages
    route_targets: Tensor | None = None
    """(B,) each example's target expert for the routing-target loss (-1: none); None: no such loss."""
    route_target_weight: float = 0.0


@dataclass
class StepResult:
    """Per micro-batch (in order): the loss backpropagated, its LM part and its (weighted) aux part."""

    losses: list[float] = field(default_factory=list)
    lm_losses: list[float] = field(default_factory=list)
    aux_losses: list[float] = field(default_factory=list)
    grad_norm: float = float("nan")


def adamw(groups: list[dict], *, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """The optimizer of every training here: AdamW with the fused kernel (one pass over all parameters; on a
    2-core CPU ~7x faster than the per-tensor loop for the experts' ~10^8 parameters)."""
    return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)


def forward(model: torch.nn.Module, mb: MicroBatch, device: torch.device | None = None) -> ModelOutput:
    """The model's output on ``mb`` (its tensors moved to ``device`` when given)."""
    lower = mb.lower() if callable(mb.lower) else mb.lower

    def to(t: Tensor | None) -> Tensor | None:
        return t if t is None or device is None else t.to(device)

    b = mb.batch
    return model(input_ids=to(b.input_ids) if lower is None else None, attention_mask=to(b.attention_mask),
                 labels=to(b.labels), task_emb=to(mb.task_emb), task_keys=b.task_keys, lower=to(lower),
                 num_items=mb.num_items, **({} if mb.route_targets is None else {
                     "route_targets": mb.route_targets, "route_target_weight": mb.route_target_weight}))


class OptimizerStep:
    """Calls to this take one optimizer step of ``opt`` on ``model`` (see the module docstring).

    ``where`` names the run in error messages (``meta-training``, ``few-shot fine-tuning on task X``)
    and ``hint`` says what is kept and what to try. With an ``accelerator`` (its model and optimizer
    prepared) the forward runs under its autocast, all micro-batches but the last skip the gradient
    sync, and backward and clipping go through it. ``params`` are the clipped parameters (default:
    the optimizer's); ``max_grad_norm`` 0 leaves the gradients as they are, but their norm is still
    checked.
    """

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, *, where: str, hint: str,
                 max_grad_norm: float = 1.0, sched=None, accelerator: Accelerator | None = None,
                 params: Sequence[torch.nn.Parameter] | None = None) -> None:
        self.model, self.opt, self.sched, self.acc = model, opt, sched, accelerator
        self.where, self.hint = where, hint
        self.max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
        self.params = list(params) if params is not None else [p for g in opt.param_groups
                                                               for p in g["params"]]

    def error(self, step: int, what: str, value: float, mbs: Sequence[MicroBatch]) -> TrainingError:
        """The error of a non-finite ``what`` (``loss``, ``gradient norm``) on ``mbs``."""
        tasks = sorted({k for mb in mbs for k in mb.batch.task_keys})
        examples = [i for mb in mbs for i in (mb.examples or ())]
        detail = f"value {value}" + (f", examples {examples}" if examples else "")
        if self.acc is not None and self.acc.num_processes > 1:  # each process names its own share
            detail += f", process {self.acc.process_index} of {self.acc.num_processes}"
        return TrainingError(f"{self.where}, step {step}: non-finite {what} on tasks {tasks} ({detail}); "
                             f"the step was not applied; {self.hint}")

    @torch.enable_grad()
    def __call__(self, step: int, micro_batches: Sequence[MicroBatch]) -> StepResult:
        acc, res = self.acc, StepResult()
        device = acc.device if acc is not None else None
        world = acc.num_processes if acc is not None else 1
        self.model.train()
        for j, mb in enumerate(micro_batches):
            sync = acc is None or j == len(micro_batches) - 1
            with (contextlib.nullcontext() if sync else acc.no_sync(self.model),
                  acc.autocast() if acc is not None else contextlib.nullcontext()):
                out = forward(self.model, mb, device)
                if mb.global_batch is None:
                    loss, aux = out.loss, out.aux_loss
                else:
                    aux = out.aux_loss * len(mb.batch.task_keys) / mb.global_batch * world
                    loss = out.lm_loss + aux
            if not torch.isfinite(loss):
                raise self.error(step, "loss", loss.item(), [mb])
            if acc is not None:
                acc.backward(loss)
            else:
                loss.backward()
            res.losses.append(loss.item())
            res.lm_losses.append(out.lm_loss.item())
            res.aux_losses.append(aux.item())
        if acc is not None:
            norm = acc.clip_grad_norm_(self.params, self.max_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        res.grad_norm = float(torch.as_tensor(norm))
        if not torch.isfinite(torch.as_tensor(norm)):
            raise self.error(step, "gradient norm", res.grad_norm, micro_batches)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return res

