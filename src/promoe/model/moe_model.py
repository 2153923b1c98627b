"""The model of the experiment around one backbone: ``dense``, ``moe`` or ``promoe`` (built by
:func:`promoe.model.build.build_model`), and :class:`TaskRouting`, the routing it generates per task.
 :class:`MoEModel` returns its own losses:
``ModelOutput(loss, lm_loss, aux_loss, logits, routing)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from promoe.config import ModelConfig
from promoe.model.hypernet import HyperNetwork
from promoe.model.losses import router_losses
from promoe.model.moe import MoELayer, RoutingContext, RoutingInfo
from promoe.model.router import UniformRouter
from promoe.model.upcycle import ADAPTERS

ModelKind = Literal["dense", "moe", "promoe"]
MODEL_KINDS: tuple[ModelKind, ...] = ("dense", "moe", "promoe")


@dataclass
class ModelOutput:
    loss: Tensor | None  # lm_loss + weighted aux losses (None without labels)
    lm_loss: Tensor | None
    aux_loss: Tensor  # weighted load-balancing + z-loss
    logits: Tensor | None  # None for encoder-only backbones (see `backbone_output`)
    routing: list[RoutingInfo]
    backbone_output: object = None  # the backbone's own output (hidden states, caches, ...)


def generate(hyper: nn.Module, task_emb: Tensor, tasks: list[str] | None) -> Tensor:
    """``hyper``'s routing (B, n_layers, n_out) for ``task_emb`` (B, d); a generator that routes a known task by its
    name (``routes_by_name``, e.g. the oracle's table) is also given the tasks' names (None: unknown)."""
    return hyper(task_emb, tasks=tasks) if getattr(hyper, "routes_by_name", False) else hyper(task_emb)


class MoEModel(nn.Module):
    """A backbone whose FFNs at ``slots`` are MoE layers, plus the hypernetwork for ``promoe``."""

    def __init__(self, *, backbone: nn.Module, family: str, kind: ModelKind, slots: list[int], layer_stack: list[str],
                 context: RoutingContext, hyper: HyperNetwork | None, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone, self.kind, self.slots, self.hyper, self.cfg = backbone, kind, slots, hyper, cfg
        self.family, self.adapter = family, ADAPTERS[family]
        self.layer_stack = layer_stack  # "encoder" / "decoder" stream of each MoE layer
        self.is_seq2seq = "decoder" in layer_stack or bool(getattr(backbone.config, "is_encoder_decoder", False))
        self.context = context
        self._routing_cache: dict[str, Tensor] = {}
        self.n_routing_computes = 0  # how many task embeddings went through the hypernetwork

    @property
    def moe_layers(self) -> list[MoELayer]:
        return sorted((m for m in self.modules() if isinstance(m, MoELayer)), key=lambda m: m.layer)

    # -- proactive routing ------------------------------------------------------------------------
    def task_routing(self, task_emb: Tensor | None, task_keys: list[str] | None = None) -> Tensor | None:
        """Generated routing parameters (B, n_layers, n_out), computed once per distinct task.

        Outside training, results are cached by ``task_keys`` so a task's routing is generated once
        (from its own embedding alone, so the same bits in whichever batch it first appears) and reused
        for all its instances; in training each distinct task of the batch runs once.
        """
        if self.hyper is None or task_emb is None:
            return None
        use_cache = task_keys is not None and not (self.training and torch.is_grad_enabled())
        names = task_keys  # the tasks' names, for generators that route a known task by name
        if task_keys is None:  # without keys rows cannot be matched to tasks: no dedup, no cache
            task_keys = [f"row{i}" for i in range(task_emb.shape[0])]
        first: dict[str, int] = {}
        for i, key in enumerate(task_keys):
            first.setdefault(key, i)
        missing = [k for k in first if not (use_cache and k in self._routing_cache)]
        generated: dict[str, Tensor] = {}
        if missing:
            rows = [first[k] for k in missing]
            if use_cache:  # one task at a time: a cached routing does not depend on the tasks it came with
                out = torch.cat([generate(self.hyper, task_emb[r:r + 1], [k]) for r, k in zip(rows, missing, strict=True)])
            else:
                out = generate(self.hyper, task_emb[rows], None if names is None else missing)  # (n_missing, L, n_out)
            self.n_routing_computes += len(missing)
            generated = dict(zip(missing, out, strict=True))
            if use_cache:
                self._routing_cache.update({k: v.detach() for k, v in generated.items()})
        table = {**(self._routing_cache if use_cache else {}), **generated}
        return torch.stack([table[k] for k in task_keys])

    def rng_states(self) -> dict[int, Tensor]:
        """The states of routers that draw random numbers (the ``random`` floor), by layer: with
        :meth:`set_rng_states`, a resumed evaluation continues their sequences where they were."""
        return {layer: s for layer, s in self.draws().items() if s is not None}

    def draws(self) -> dict[int, Tensor | None]:
        """Where every random router's sequence is (None: at its start), for :meth:`set_rng_states` to rewind
        to: work done between the two (scoring references) then leaves the sequence as it was."""
        return {m.layer: m.router.rng_state() for m in self.moe_layers if hasattr(m.router, "rng_state")}

    def set_rng_states(self, states: dict[int, Tensor | None]) -> None:
        for m in self.moe_layers:
            if m.layer in states:
                m.router.set_rng_state(states[m.layer])

    def set_top_k(self, k: int) -> None:
        """Route every token to ``k`` experts from now on (at most a layer's experts; routers that always
        use every expert, ``uniform`` and ``dense``'s, are left as they are)."""
        for layer in self.moe_layers:
            if not isinstance(layer.router, UniformRouter):
                layer.router.top_k = min(k, layer.router.n_experts)

    @property
    def top_ks(self) -> list[int]:
        """The experts each MoE layer routes a token to now, by layer."""
        return [layer.router.top_k for layer in self.moe_layers]

    @contextlib.contextmanager
    def routing_top_k(self, k: int | None):
        """Inside the block, route every token to ``k`` experts (:meth:`set_top_k`; None: as now); every
        router's own ``top_k`` is restored after, whatever happened inside."""
        saved = [(layer.router, layer.router.top_k) for layer in self.moe_layers]
        if k is not None:
            self.set_top_k(k)
        try:
            yield self
        finally:
            for router, top_k in saved:
                router.top_k = top_k

    def scoring_regime(self):
        """Inside the block, route as the model is scored: ``cfg.eval_top_k`` experts when set (validation
        chooses the checkpoint in the regime that will be scored, not in the training regime)."""
        return self.routing_top_k(self.cfg.eval_top_k)

    def for_scoring(self) -> MoEModel:
        """From now on route as scored (eval mode, ``cfg.eval_top_k`` experts when set): every scored model
        passes through this (:meth:`promoe.stages.evaluation.Evaluation.prepare`); it is idempotent."""
        self.eval()
        if self.cfg.eval_top_k is not None:
            self.set_top_k(self.cfg.eval_top_k)
        return self

    def clear_routing_cache(self) -> None:
        self._routing_cache.clear()

    def train(self, mode: bool = True) -> MoEModel:
        self._routing_cache.clear()  # parameters may change: generated routing is stale
        return super().train(mode)

    # -- frozen lower part, computed once --------------------------------------------------------
    @property
    def split(self) -> int | None:
        """Layer index where the trained part starts, when the part below is frozen and can be cached."""
        return self.slots[0] if self.cfg.freeze_lower and self.layer_stack[0] == "encoder" and self.decoder_only \
            else None

    @property
    def decoder_only(self) -> bool:
        """A causal LM whose layer stack runs in parts (the family adapter knows): the frozen lower
        part can be cached, the output head run on target positions only, the prompt prefix shared."""
        return self.adapter.decoder_only(self.backbone)

    def _only_layers(self, start: int, stop: int | None, *, final_norm: bool):
        return self.adapter.only_layers(self.backbone, start, stop, final_norm=final_norm)

    @torch.no_grad()
    def lower_hidden(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Hidden states (B, T, D) entering layer :attr:`split`: the frozen part, the same for
        ``dense``, ``moe`` and ``promoe`` built with the same MoE positions, so it is computed once per
        example and shared (pass it back as ``forward(lower=...)``)."""
        if self.split is None:
            raise ValueError("lower_hidden needs a decoder-only backbone with freeze_lower=True")
        with self._only_layers(0, self.split, final_norm=False):
            return self.backbone.model(input_ids=input_ids, attention_mask=attention_mask,
                                       use_cache=False).last_hidden_state

    # -- forward / generate -----------------------------------------------------------------------
    def with_routing(self, fn, task_emb: Tensor | None, task_keys: list[str] | None, record: bool,
                     routing: Tensor | None = None):
        """``fn()`` with the tasks' routing in place; returns its result and the recorded routing.
        ``routing`` (B, n_layers, n_out), e.g. from :class:`TaskRouting`, is used as given; otherwise it is
        generated from ``task_emb`` (see :meth:`task_routing`)."""
        self.context.task, self.context.record, self.context.records = (
            routing if routing is not None else self.task_routing(task_emb, task_keys), record, [])
        try:
            return fn(), self.context.records
        finally:
            self.context.task, self.context.records = None, []

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, task_emb: Tensor | None = None, task_keys: list[str] | None = None,
                lower: Tensor | None = None, full_logits: bool = False, num_items: float | None = None,
                routing_only: bool = False, routing: Tensor | None = None, per_example: bool = False,
                route_targets: Tensor | None = None, route_target_weight: float = 0.0, **kwargs) -> ModelOutput:
        """Loss and routing for a batch; ``lower`` = :meth:`lower_hidden` output skips the frozen part.

        With ``labels`` on a decoder-only backbone the output head runs only where a target token is
        predicted (most positions are prompt), and ``logits`` is None unless ``full_logits``; the loss
        is the same token-mean cross-entropy as the backbone's own, or the token sum divided by
        ``num_items`` (the target tokens of the whole global batch, for exact gradient accumulation and
        data parallelism). ``per_example``: ``lm_loss`` is instead each example's summed NLL of its target
        tokens, shape (B,) (reference likelihoods). ``routing_only`` (decoder-only backbones, no labels)
        skips the output head: only ``routing`` is wanted. ``route_targets`` (B,): each example's target expert (-1:
        none) for the routing-target loss (every MoE layer), added to the aux loss with ``route_target_weight``.
        """
        targets_only = labels is not None and not full_logits and self.decoder_only
        routing_only = routing_only and labels is None and self.decoder_only

        def run():
            if lower is not None and self.split is None:
                raise ValueError("`lower` needs a decoder-only backbone with freeze_lower=True")
            inputs = {"input_ids": input_ids} if lower is None else {"inputs_embeds": lower, "use_cache": False}
            if targets_only:
                with self._only_layers(self.split or 0, None, final_norm=True) if lower is not None \
                        else contextlib.nullcontext():
                    hidden = self.backbone.model(attention_mask=attention_mask, **inputs, **kwargs).last_hidden_state
                return self._target_loss(hidden, labels, num_items, per_example)
            if routing_only:
                with self._only_layers(self.split or 0, None, final_norm=False) if lower is not None \
                        else contextlib.nullcontext():
                    self.backbone.model(attention_mask=attention_mask, **inputs, **kwargs)
                return SimpleNamespace(loss=None, logits=None)
            if labels is not None:
                kwargs["labels"] = labels  # encoder-only backbones take no labels
            with self._only_layers(self.split, None, final_norm=True) if lower is not None \
                    else contextlib.nullcontext():
                out = self.backbone(attention_mask=attention_mask, **inputs, **kwargs)
            if per_example and labels is not None:  # seq2seq: logits[t] predicts labels[t]; causal: labels[t + 1]
                y = labels if self.is_seq2seq else F.pad(labels, (0, 1), value=-100)[:, 1:]
                out.loss = F.cross_entropy(out.logits.float().transpose(1, 2), y, reduction="none").sum(1)
            return out

        out, routing = self.with_routing(run, task_emb, task_keys, record=True, routing=routing)
        masks = {"encoder": attention_mask, "decoder": kwargs.get("decoder_attention_mask")}
        if masks["decoder"] is None and labels is not None and self.is_seq2seq:
            masks["decoder"] = labels.ne(-100)  # decoder position t predicts labels[t]
        for info in routing:
            mask = masks[self.layer_stack[info.layer]]
            info.mask = mask if mask is not None and mask.shape == info.router.probs.shape[:2] else None
        aux = self.aux_loss(routing, route_targets, route_target_weight)
        lm_loss = getattr(out, "loss", None)
        loss = None if lm_loss is None else lm_loss + aux
        return ModelOutput(loss=loss, lm_loss=lm_loss, aux_loss=aux, logits=getattr(out, "logits", None),
                           routing=routing, backbone_output=out)

    def _target_loss(self, hidden: Tensor, labels: Tensor, num_items: float | None,
                     per_example: bool = False) -> SimpleNamespace:
        """Next-token cross-entropy on target positions only (position t predicts labels[t + 1])."""
        y = F.pad(labels, (0, 1), value=-100)[:, 1:]
        keep = y.ne(-100)
        logits = self.backbone.lm_head(hidden[keep])  # (N_targets, V)
        if per_example:
            nll = F.cross_entropy(logits.float(), y[keep], reduction="none")
            return SimpleNamespace(loss=nll.new_zeros(len(y)).index_add_(0, keep.nonzero()[:, 0], nll), logits=None)
        if num_items is None:
            return SimpleNamespace(loss=F.cross_entropy(logits.float(), y[keep]), logits=None)
        return SimpleNamespace(loss=F.cross_entropy(logits.float(), y[keep], reduction="sum") / num_items,
                               logits=None)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, task_emb: Tensor | None = None,
                 task_keys: list[str] | None = None, return_routing: bool = False, routing: Tensor | None = None,
                 **gen_kwargs):
        """``backbone.generate`` with the tasks' routing (``routing`` as given, else generated from
        ``task_emb``); with ``return_routing`` also the routing of the prompt pass (masked by
        ``attention_mask``) and of every generated token."""
        out, routing = self.with_routing(
            lambda: self.backbone.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs),
            task_emb, task_keys, record=return_routing, routing=routing)
        if not return_routing:
            return out
        for info in routing:
            if attention_mask is not None and info.router.probs.shape[:2] == attention_mask.shape:
                info.mask = attention_mask
        return out, routing

    def aux_loss(self, routing: list[RoutingInfo], targets: Tensor | None = None, target_weight: float = 0.0) -> Tensor:
        """Weighted load-balancing + z-loss over layers (per token, or per example for task-level routing), and the
        routing-target loss where ``targets`` (B,) are given with a positive ``target_weight``."""
        if self.kind == "dense" or not routing:
            return torch.zeros(())
        return router_losses([(info.router, info.mask) for info in routing], balance=self.cfg.aux_loss_weight,
                             z=self.cfg.z_loss_weight, targets=targets if target_weight > 0 else None,
                             target_weight=target_weight)


class TaskRouting:
    """The routing ``model`` generates for the task descriptions ``task_emb`` (``{task: embedding}``),
    each task's computed once, from its own embedding alone, on first use.

    An evaluation row owns one and passes ``rows(tasks)`` as ``generate(routing=...)``, so rows that
    give one model different descriptions (the ablations) never share a routing; it is stale once the
    model's weights change (few-shot fine-tuning makes a new one). Models without generated routing
    (``dense``, ``moe``) or rows without descriptions give None.
    """

    def __init__(self, model: MoEModel, task_emb: dict[str, Tensor] | None) -> None:
        self.model, self.task_emb = model, task_emb
        self.table: dict[str, Tensor] = {}

    @torch.no_grad()
    def rows(self, tasks: list[str], device: torch.device | str = "cpu") -> Tensor | None:
        """(len(tasks), n_layers, n_out): each listed task's routing, in order."""
        if self.model.hyper is None or not self.task_emb:
            return None
        for t in dict.fromkeys(tasks):
            if t not in self.table:
                self.table[t] = generate(self.model.hyper, self.task_emb[t][None].to(device), [t])[0]
                self.model.n_routing_computes += 1
        return torch.stack([self.table[t] for t in tasks])
