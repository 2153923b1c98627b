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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from promoe.model.moe_model import MoEModel


class KVStore:
    """The smallest key/value cache the Hugging Face attention layers accept: ``update`` appends a
    step's keys and values and returns the layer's keys and values so far.

    Each layer's tensors live in a buffer with room for ``room`` more positions, so a decoding step
    writes in place instead of concatenating (copying) the whole cache, which dominated decoding.
    One prefill serves every variant without a copy: :meth:`view` is a store over the same buffers that
    sees this store's positions and writes after them, into the room; the next view overwrites what the
    last one wrote there, and this store's own positions never change. Views are used one at a time.
    """

    def __init__(self, room: int = 0) -> None:
        self.room = room
        self.buf: dict[int, tuple[Tensor, Tensor]] = {}
        self.len: dict[int, int] = {}

    def _alloc(self, layer: int, k: Tensor, v: Tensor) -> None:
        n = k.shape[-2]
        bk, bv = k.new_empty(*k.shape[:-2], n + self.room, k.shape[-1]), v.new_empty(*v.shape[:-2], n + self.room,
                                                                                       v.shape[-1])
        bk[..., :n, :], bv[..., :n, :] = k, v
        self.buf[layer], self.len[layer] = (bk, bv), n

    def view(self, layers: range | None = None, *, room: int | None = None) -> KVStore:
        """A store over this one's buffers (of ``layers`` only, default all), for one pass: see the class. ``room``:
        that of the buffers the pass allocates itself (default this store's)."""
        out = KVStore(self.room if room is None else room)
        for i in self.buf:
            if layers is None or i in layers:
                out.buf[i], out.len[i] = self.buf[i], self.len[i]
        return out

    def items(self):
        """``(layer, (keys, values))`` of every layer, without the unused room."""
        return ((i, (k[..., :self.len[i], :], v[..., :self.len[i], :])) for i, (k, v) in self.buf.items())

    def update(self, keys: Tensor, values: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if layer_idx not in self.buf:
            self._alloc(layer_idx, keys, values)
            return keys, values  # contiguous, unlike the buffer's first positions when it has room
        n, q = self.len[layer_idx], keys.shape[-2]
        bk, bv = self.buf[layer_idx]
        if n + q > bk.shape[-2]:  # out of room: grow into buffers of this store's own
            self.room = max(self.room, q)
            self._alloc(layer_idx, torch.cat([bk[..., :n, :], keys], -2), torch.cat([bv[..., :n, :], values], -2))
        else:
            bk[..., n:n + q, :], bv[..., n:n + q, :] = keys, values
            self.len[layer_idx] = n + q
        n = self.len[layer_idx]
        bk, bv = self.buf[layer_idx]
        return bk[..., :n, :], bv[..., :n, :]

    def select(self, rows: Tensor, layers: range | None = None) -> KVStore:
        """The store of some rows (of ``layers`` only, default all): a copy, with the same room."""
        out = KVStore(self.room)
        for i, (k, v) in self.items():
            if layers is None or i in layers:
                out._alloc(i, k.index_select(0, rows), v.index_select(0, rows))
        return out


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
    """A batch of prompts after the shared lower layers."""

    input_ids: Tensor  # (B, T) left padded
    mask: Tensor  # (B, T)
    hidden: Tensor  # (B, T, D) entering layer `split`
    kv: KVStore  # keys/values of the lower layers
    split: int

    def select(self, rows: Tensor) -> Prefix:
        return Prefix(self.input_ids[rows], self.mask[rows], self.hidden[rows], self.kv.select(rows), self.split)


@torch.no_grad()
def prefill(model: MoEModel, input_ids: Tensor, mask: Tensor, *, room: int = 0) -> Prefix:
    """Run the prompts through the frozen lower layers of ``model`` (shared by all its variants), keeping room
    for ``room`` more positions (the most a variant decodes or a reference holds)."""
    kv = KVStore(room)
    hidden = _run_layers(model, model.backbone.model.embed_tokens(input_ids), 0, model.split, mask, kv)
    return Prefix(input_ids, mask, hidden, kv, model.split)


def eos_ids(model: MoEModel) -> list[int]:
    eos = getattr(model.backbone.generation_config, "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


@dataclass
class Prompted:
    """A batch of prompts through every layer of one variant: the last layer's hidden states and the keys
    and values of every layer (lower ones shared with the prefix)."""

    hidden: Tensor  # (B, T, D)
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
    return Prompted(_run_layers(model, prefix.hidden, prefix.split, None, prefix.mask, kv), kv, prefix.mask)


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
