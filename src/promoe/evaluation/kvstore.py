"""The key/value cache of the hand-run decoding passes (:mod:`promoe.evaluation.decode`)."""

from __future__ import annotations

import torch
from torch import Tensor


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

    def select(self, rows: Tensor, layers: range | None = None, *, room: int | None = None) -> KVStore:
        """The store of some rows (of ``layers`` only, default all; a row may be taken several times): a copy,
        with ``room`` (default this store's)."""
        out = KVStore(self.room if room is None else room)
        for i, (k, v) in self.items():
            if layers is None or i in layers:
                out._alloc(i, k.index_select(0, rows), v.index_select(0, rows))
        return out
