"""Greedy decoding of several model variants over one shared prompt prefill.

Every model of the experiment (and every router or description variant of one) shares the frozen
lower layers of the backbone. For decoder-only (Llama-family) backbones the prompt's pass through
those layers — most of an evaluation's cost — is therefore computed once per batch: its hidden
states and key/value cache are kept, and each variant runs only its own upper layers over the prompt,
then decodes greedily token by token through all layers, the lower ones reading the shared cache.
Results equal ``model.generate`` (greedy) of each variant on its own (tests compare both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from promoe.model.moe_model import MoEModel


class KVStore:
    """The smallest key/value cache the Hugging Face attention layers accept: ``update`` appends and
    returns the layer's full keys and values. Built from a prefix store, it never changes that store
    (appending makes new tensors), so one prefill serves every variant."""

    def __init__(self, prefix: dict[int, tuple[Tensor, Tensor]] | None = None) -> None:
        self.kv: dict[int, tuple[Tensor, Tensor]] = dict(prefix or {})

    def update(self, keys: Tensor, values: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if layer_idx in self.kv:
            k0, v0 = self.kv[layer_idx]
            keys, values = torch.cat([k0, keys], dim=-2), torch.cat([v0, values], dim=-2)
        self.kv[layer_idx] = (keys, values)
        return keys, values

    def select(self, rows: Tensor) -> KVStore:
        return KVStore({i: (k.index_select(0, rows), v.index_select(0, rows)) for i, (k, v) in self.kv.items()})


def supports_shared_prefix(model: MoEModel) -> bool:
    """Decoder-only backbone with a cached frozen lower part and Llama-style layers."""
    base = getattr(model.backbone, "model", None)
    return model.split is not None and model._decoder_only and all(
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
def prefill(model: MoEModel, input_ids: Tensor, mask: Tensor) -> Prefix:
    """Run the prompts through the frozen lower layers of ``model`` (shared by all its variants)."""
    kv = KVStore()
    hidden = _run_layers(model, model.backbone.model.embed_tokens(input_ids), 0, model.split, mask, kv)
    return Prefix(input_ids, mask, hidden, kv, model.split)


def eos_ids(model: MoEModel) -> list[int]:
    eos = getattr(model.backbone.generation_config, "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


@torch.no_grad()
def greedy(model: MoEModel, prefix: Prefix, *, max_new_tokens: int, stopper, pad_id: int,
           eos: Sequence[int] = ()) -> Tensor:
    """Greedy continuation (B, <= max_new_tokens) of ``prefix`` by ``model`` (its lower layers must be
    those that made the prefix). Rows that finished (``stopper`` or an EOS token) continue with
    ``pad_id``, as in ``generate``. Call inside :meth:`MoEModel.routing_scope` for per-task routing."""
    if model.split != prefix.split:
        raise ValueError(f"prefix was computed below layer {prefix.split}, the model's split is {model.split}")
    kv = KVStore(prefix.kv.kv)
    base, head = model.backbone.model, model.backbone.lm_head
    key_mask = prefix.mask
    hidden = _run_layers(model, prefix.hidden, prefix.split, None, key_mask, kv)
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
