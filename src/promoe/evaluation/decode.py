"""Greedy decoding of several model variants over one shared prompt prefill.

Every model of the experiment (and every router or description variant of one) shares the frozen
lower layers of the backbone. For decoder-only (Llama-family) backbones the prompt's pass through
those layers — most of an evaluation's cost — is therefore computed once per batch: its hidden
states and key/value cache are kept, and each variant runs only its own upper layers over the prompt,
then decodes greedily token by token through all layers, the lower ones reading the shared cache.
Results equal ``model.generate`` (greedy) of each variant on its own (tests compare both).

The same pass scores references (:func:`target_nll`): after a variant's upper layers have run over the
prompt (:func:`upper`), each reference is fed through the cached prompt, so a row's reference likelihood
costs the reference's tokens only, not a second pass over its prompt.

The instances of one task share a long start of their prompts (the chat wrapper and the Definition): with
``groups`` (each row's task), :func:`prefill` and then every variant's :func:`upper` run it once per batch rather
than once per instance (:mod:`promoe.evaluation.prompt_cache`); decoding and references read the rows' combined layout.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from promoe.evaluation.kvstore import KVStore
from promoe.evaluation.prompt_cache import Shared, join_routing, plan
from promoe.model.moe_model import MoEModel


def supports_shared_prefix(model: MoEModel) -> bool:
    """Decoder-only backbone with a cached frozen lower part and Llama-style layers."""
    base = getattr(model.backbone, "model", None)
    return model.split is not None and model.decoder_only and all(
        hasattr(base, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb"))


def _mask(key_mask: Tensor, q_len: int, dtype: torch.dtype) -> Tensor:
    """Additive (B, 1, q_len, K) mask: query i (the last ``q_len`` positions) sees key j <= its position
    where ``key_mask`` is 1. Fully masked rows (left padding) get a finite minimum, as in eager attention."""
    k_len = key_mask.shape[1]
    q_pos = torch.arange(k_len - q_len, k_len, device=key_mask.device)[:, None]
    allowed = (torch.arange(k_len, device=key_mask.device)[None, :] <= q_pos)[None] & key_mask.bool()[:, None, :]
    return torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]


def _positions(key_mask: Tensor, q_len: int) -> Tensor:
    """Position ids of the last ``q_len`` positions, counting real tokens only (as ``generate`` does)."""
    pos = key_mask.long().cumsum(-1) - 1
    return pos.masked_fill(key_mask == 0, 1)[:, -q_len:]


def _upper_layers(model: MoEModel) -> range:
    """The layers a variant runs above the shared prefix."""
    return range(model.split, len(model.backbone.model.layers))


def _run_layers(model: MoEModel, hidden: Tensor, start: int, stop: int | None, key_mask: Tensor,
                kv: KVStore) -> Tensor:
    base = model.backbone.model
    q_len = hidden.shape[1]
    pos = _positions(key_mask, q_len)
    mask = _mask(key_mask, q_len, hidden.dtype)
    pe = base.rotary_emb(hidden, position_ids=pos)
    for layer in base.layers[start:stop]:
        hidden = layer(hidden, attention_mask=mask, position_ids=pos, past_key_values=kv, use_cache=True,
                       position_embeddings=pe)
    return hidden


@dataclass
class Prefix:
    """A batch of prompts after the shared lower layers. With ``shared`` (:mod:`promoe.evaluation.prompt_cache`), a row's
    prompt is laid out ``[prefix block | suffix block]``, padding before each; ``hidden`` then holds the suffix
    block's states, and the variants' upper layers run over ``shared``'s prefixes once, then over the suffixes."""

    input_ids: Tensor  # (B, T) left padded (each block, with `shared`)
    mask: Tensor  # (B, T)
    hidden: Tensor  # (B, S, D) entering layer `split`, of the last S positions (S = T without `shared`)
    kv: KVStore  # keys/values of the lower layers, all T positions of every row
    split: int
    shared: Shared | None = None

    def select(self, rows: Tensor) -> Prefix:
        return Prefix(self.input_ids[rows], self.mask[rows], self.hidden[rows], self.kv.select(rows), self.split,
                      None if self.shared is None else self.shared.select(rows))


@torch.no_grad()
def prefill(model: MoEModel, input_ids: Tensor, mask: Tensor, *, room: int = 0,
            groups: Sequence[Hashable] | None = None, pad_id: int = 0) -> Prefix:
    """Run the prompts through the frozen lower layers of ``model`` (shared by all its variants), keeping room
    for ``room`` more positions (the most a variant decodes or a reference holds). With ``groups`` (each row's
    task; rows of a group must be routed alike), the rows of a group share their common prefix
    (:func:`promoe.evaluation.prompt_cache.plan`; ``pad_id`` pads its layout) when that saves work."""
    embed = model.backbone.model.embed_tokens
    layout = None if groups is None else plan(input_ids, mask, groups, pad_id=pad_id)
    if layout is None:
        kv = KVStore(room)
        hidden = _run_layers(model, embed(input_ids), 0, model.split, mask, kv)
        return Prefix(input_ids, mask, hidden, kv, model.split)
    shared_kv = KVStore()
    shared = _run_layers(model, embed(layout.prefix_ids), 0, model.split, layout.prefix_mask, shared_kv)
    ids, key_mask = layout.combined()
    # each row's copy of its prefix's keys and values, with room for its suffix and what follows
    kv = shared_kv.select(layout.group.clamp_min(0), room=layout.suffix_ids.shape[1] + room)
    hidden = _run_layers(model, embed(layout.suffix_ids), 0, model.split, key_mask, kv)
    kv.room = room
    return Prefix(ids, key_mask, hidden, kv, model.split, Shared(shared, layout.prefix_mask, layout.group))


def eos_ids(model: MoEModel) -> list[int]:
    eos = getattr(model.backbone.generation_config, "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


@dataclass
class Prompted:
    """A batch of prompts through every layer of one variant: the last layer's hidden states and the keys
    and values of every layer (lower ones shared with the prefix)."""

    hidden: Tensor  # (B, S, D) of the last S positions (see Prefix.hidden)
    kv: KVStore
    mask: Tensor  # (B, T)

    def select(self, rows: Tensor, layers: range | None = None) -> Prompted:
        return Prompted(self.hidden[rows], self.kv.select(rows, layers), self.mask[rows])


@torch.no_grad()
def upper(model: MoEModel, prefix: Prefix, *, room: int = 0) -> Prompted:
    """Run ``model``'s own layers above the shared prefix over the prompts (``room``: positions to keep free in
    the cache for decoding or a reference). Its lower layers' cache is a :meth:`KVStore.view` of the prefix's: a
    variant's decoding writes into the prefix's room, so one variant is run at a time. Call inside
    :meth:`MoEModel.with_routing` for per-task routing."""
    if model.split != prefix.split:
        raise ValueError(f"prefix was computed below layer {prefix.split}, the model's split is {model.split}")
    kv = prefix.kv.view(room=room)  # the room of the upper layers' own buffers
    records = model.context.records
    n = len(records)
    if prefix.shared is not None:
        _upper_shared(model, prefix, kv, room)
    m = len(records)
    hidden = _run_layers(model, prefix.hidden, prefix.split, None, prefix.mask, kv)
    if prefix.shared is not None and len(records) > m:
        records[n:] = join_routing(records[n:m], records[m:], prefix.shared.group, prefix.mask)
    return Prompted(hidden, kv, prefix.mask)


def _upper_shared(model: MoEModel, prefix: Prefix, kv: KVStore, room: int) -> None:
    """``model``'s upper layers over ``prefix``'s shared prefixes, once each, routed as their rows (the routing
    :meth:`MoEModel.with_routing` put in place, one row per batch row): each row's copy of its prefix's keys and
    values goes into ``kv``, with room for its suffix (:func:`upper` joins the routing of both passes). A router
    drawing random numbers per token (``random``) draws for each prefix once, not for each row's whole prompt as
    the unshared pass does: other draws of the same distribution, so its answers may differ from that pass's."""
    ctx, sh = model.context, prefix.shared
    task, first = ctx.task, sh.first()
    if task is not None:
        if task.shape[0] != len(sh.group):
            raise ValueError(f"routing of {task.shape[0]} rows for a batch of {len(sh.group)} prompts")
        rows = (sh.group >= 0).nonzero()[:, 0]
        if not torch.equal(task[rows], task[first[sh.group[rows]]]):
            raise ValueError("rows sharing a prompt prefix are routed differently: group them by task")
    own = KVStore()
    ctx.task = None if task is None else task.index_select(0, first)
    try:
        _run_layers(model, sh.hidden, prefix.split, None, sh.mask, own)
    finally:
        ctx.task = task
    rows_kv = own.select(sh.group.clamp_min(0), room=prefix.hidden.shape[1] + room)
    kv.buf.update(rows_kv.buf)
    kv.len.update(rows_kv.len)


@dataclass
class Targets:
    """One reference for some rows of a batch of prompts, teacher-forced through the shared lower layers."""

    rows: Tensor  # (N,) rows of the batch
    ids: Tensor  # (N, R) right padded
    mask: Tensor  # (N, R) 1 on real tokens
    hidden: Tensor  # (N, R, D) entering layer `split`


@torch.no_grad()
def lower_targets(model: MoEModel, prefix: Prefix, targets: Sequence[Sequence[Sequence[int]]], *,
                  pad_id: int) -> list[Targets]:
    """Per reference index ``k``, the rows of ``prefix``'s batch with a ``k``-th reference (``targets[row]``: token
    lists) and those references through the frozen lower layers after their prompts: computed once and shared
    by every variant, as the prompts' prefix is."""
    out = []
    device = prefix.hidden.device
    for k in range(max((len(t) for t in targets), default=0)):
        sub = [r for r, t in enumerate(targets) if len(t) > k]
        ids = [list(targets[r][k]) for r in sub]
        width = max(len(x) for x in ids)
        tok = torch.tensor([x + [pad_id] * (width - len(x)) for x in ids], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
        rows = torch.tensor(sub, device=device)
        part = prefix if len(sub) == len(targets) else prefix.select(rows)
        key_mask = torch.cat([part.mask, mask.to(part.mask.dtype)], dim=1)
        hidden = _run_layers(model, model.backbone.model.embed_tokens(tok), 0, prefix.split, key_mask,
                             part.kv.view(range(prefix.split)))
        out.append(Targets(rows, tok, mask, hidden))
    return out


@torch.no_grad()
def target_nll(model: MoEModel, prompted: Prompted, targets: Targets) -> Tensor:
    """Mean per-token NLL (N,) of one reference per row after its prompt (``prompted`` holds those rows, in
    ``targets``' order): the references' lower-layer states run through ``model``'s upper layers against the
    prompts' cache (left unchanged). Call inside :meth:`MoEModel.with_routing`."""
    base, head = model.backbone.model, model.backbone.lm_head
    kv = prompted.kv.view(_upper_layers(model))  # writes into the room only
    key_mask = torch.cat([prompted.mask, targets.mask.to(prompted.mask.dtype)], dim=1)
    h = _run_layers(model, targets.hidden, model.split, None, key_mask, kv)
    states = torch.cat([prompted.hidden[:, -1:], h[:, :-1]], dim=1)  # position j predicts ids[:, j]
    logp = torch.log_softmax(head(base.norm(states)).float(), dim=-1)
    nll = -logp.gather(-1, targets.ids[..., None])[..., 0] * targets.mask
    return nll.sum(1) / targets.mask.sum(1).clamp_min(1)


@torch.no_grad()
def greedy(model: MoEModel, prefix: Prefix, *, max_new_tokens: int, stopper, pad_id: int,
           eos: Sequence[int] = (), prompted: Prompted | None = None) -> Tensor:
    """Greedy continuation (B, <= max_new_tokens) of ``prefix`` by ``model`` (its lower layers must be
    those that made the prefix), from ``prompted`` when :func:`upper` already ran (with room for
    ``max_new_tokens``). Rows that finished (``stopper`` or an EOS token) continue with ``pad_id``, as in
    ``generate``. Call inside :meth:`MoEModel.with_routing` for per-task routing."""
    prompted = prompted if prompted is not None else upper(model, prefix, room=max_new_tokens)
    kv, key_mask, hidden = prompted.kv, prompted.mask, prompted.hidden
    base, head = model.backbone.model, model.backbone.lm_head
    seq = prefix.input_ids
    done = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    eos_t = torch.tensor(list(eos), dtype=torch.long, device=seq.device)
    for step in range(max_new_tokens):
        nxt = head(base.norm(hidden[:, -1])).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        done = done | torch.isin(nxt, eos_t) | stopper(seq, None).to(done.device)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        key_mask = torch.cat([key_mask, key_mask.new_ones(key_mask.shape[0], 1)], dim=1)
        hidden = _run_layers(model, base.embed_tokens(nxt[:, None]), 0, None, key_mask, kv)
    return seq[:, prefix.input_ids.shape[1]:]


@torch.no_grad()
def best_target_nll(model: MoEModel, prompted: Prompted, rows: Sequence[int], targets: Sequence[Targets], *,
                    routing: Tensor | None) -> list[float]:
    """Per row of ``prompted`` (the batch rows ``rows``), the lowest :func:`target_nll` over its references
    (``targets`` from :func:`lower_targets`; inf for a row without any), routed by ``routing`` (those rows'
    task routing, or None)."""
    best = [float("inf")] * len(rows)
    device = prompted.hidden.device
    for t in targets:
        at = {row: i for i, row in enumerate(t.rows.tolist())}
        mine = [(r, at[row]) for r, row in enumerate(rows) if row in at]
        if not mine:
            continue
        sel = torch.tensor([r for r, _ in mine], device=device)
        tsel = torch.tensor([i for _, i in mine], device=device)
        part = Targets(t.rows[tsel], t.ids[tsel], t.mask[tsel], t.hidden[tsel])
        mp = prompted if len(mine) == len(rows) else prompted.select(sel, _upper_layers(model))
        nll, _ = model.with_routing(lambda p=mp, q=part: target_nll(model, p, q), None, None, record=False,
                                    routing=None if routing is None else routing.index_select(0, sel))
        for (r, _), x in zip(mine, nll.tolist(), strict=True):
            best[r] = min(best[r], x)
    return best
