"""The per-task prompt cache: the instances of a task share a long prompt prefix (the chat wrapper and the
task's Definition), computed once per batch instead of once per instance.

:func:`plan` splits a batch of left-padded prompts by task: the rows of one task share the longest common prefix
of their real tokens (token ids, so no tokenizer boundary can differ), capped so that each row keeps at least one
token of its own. A task with one row in the batch, or a common prefix under :data:`MIN_SHARED` tokens, shares
nothing: the start of such a row, beyond the width of the others' suffixes, is still run with the prefixes (a
prefix read by one row) so that it does not widen every row's suffix. The passes (:func:`promoe.evaluation.decode.prefill`, :func:`promoe.evaluation.decode.upper`) run the ``U`` distinct prefixes
once (a left-padded batch), then every row's own suffix (left padded) against its prefix's keys and values,
gathered per row. A row's prompt then has the combined layout ``[prefix block | suffix block]``, with padding
before each block marked 0 in the mask: positions (counting real tokens) and attention are the whole prompt's.
:func:`join_routing` gives the routing of the two passes in that layout, so routing statistics count the tokens
and decisions of the unshared pass. :func:`task_keys` orders an evaluation's prompts so that a task's instances fill
batches together, and :func:`positions` counts what a batch costs, to choose between that order and the plain one.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from promoe.model.moe import RoutingInfo
from promoe.model.router import RouterOutput

MIN_SHARED = 16
"""The shortest common prefix (tokens) worth a pass of its own."""


def _left_pad(rows: Sequence[Tensor], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token rows (1-D) left padded to the longest: ids and mask (N, width)."""
    width = max(len(r) for r in rows)
    ids = rows[0].new_full((len(rows), width), pad_id)
    mask = rows[0].new_zeros((len(rows), width))
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
    return ids, mask


@dataclass
class Layout:
    """A batch of prompts as shared prefixes and each row's own suffix."""

    prefix_ids: Tensor  # (U, P) left padded
    prefix_mask: Tensor  # (U, P)
    group: Tensor  # (B,) each row's prefix, a row of prefix_ids (-1: none, its prefix block is padding)
    suffix_ids: Tensor  # (B, S) left padded
    suffix_mask: Tensor  # (B, S)

    def combined(self) -> tuple[Tensor, Tensor]:
        """Ids and mask (B, P + S) of each row's whole prompt, ``[prefix block | suffix block]``."""
        rows, has = self.group.clamp_min(0), (self.group >= 0)[:, None]
        ids = torch.cat([self.prefix_ids.index_select(0, rows), self.suffix_ids], dim=1)
        mask = torch.cat([self.prefix_mask.index_select(0, rows) * has, self.suffix_mask], dim=1)
        return ids, mask

    @property
    def positions(self) -> int:
        """Positions the two passes compute: the prefixes once, then every row's suffix."""
        return self.prefix_ids.numel() + self.suffix_ids.numel()


def plan(input_ids: Tensor, mask: Tensor, groups: Sequence[Hashable], *, pad_id: int,
         min_len: int = MIN_SHARED) -> Layout | None:
    """The rows of ``input_ids`` (B, T; real tokens where ``mask`` is 1) split by ``groups`` (each row's task; a
    group's rows must be routed alike): the module docstring. None when no group shares a prefix, or when the split
    would compute no fewer positions than the plain batch (B x T), as when one task's rows share a long start
    and another's a short one before long suffixes: every row is padded to the longest prefix and suffix."""
    if len(groups) != input_ids.shape[0]:
        raise ValueError(f"{len(groups)} groups for a batch of {input_ids.shape[0]} prompts")
    real = [ids[m.bool()] for ids, m in zip(input_ids, mask, strict=True)]
    members: dict[Hashable, list[int]] = {}
    for r, g in enumerate(groups):
        members.setdefault(g, []).append(r)
    group, cut, prefixes = [-1] * len(real), [0] * len(real), []
    for rows in members.values():
        n = min(len(real[r]) for r in rows) - 1  # each row keeps a token of its own
        if len(rows) < 2 or n < min_len:
            continue
        t = torch.stack([real[r][:n] for r in rows])  # (k, n)
        common = int((t == t[0]).all(0).long().cumprod(0).sum())
        if common < min_len:
            continue
        for r in rows:
            group[r], cut[r] = len(prefixes), common
        prefixes.append(real[rows[0]][:common])
    if not prefixes:
        return None
    width = max(len(x) - c for x, g, c in zip(real, group, cut, strict=True) if g >= 0)  # the shared leave this
    for r, x in enumerate(real):
        if group[r] < 0 and len(x) > width:  # its start runs with the prefixes (alone), not widening every suffix
            group[r], cut[r] = len(prefixes), len(x) - width
            prefixes.append(x[:cut[r]])
    layout = Layout(*_left_pad(prefixes, pad_id), torch.tensor(group, device=input_ids.device),
                    *_left_pad([x[c:] for x, c in zip(real, cut, strict=True)], pad_id))
    return layout if layout.positions < input_ids.numel() else None


def task_keys(tasks: Sequence[Hashable], ids: Sequence[Sequence[int]]) -> dict[Hashable, tuple]:
    """Per task, where its prompts (``ids``, one per entry of ``tasks``) go in an order that keeps each task's prompts
    together: by the longest part of a prompt beyond the start the task's prompts share, then by that start, then
    by name. Batches cut from that order hold few tasks, alike in both lengths, so little padding is computed in
    either block; sorted by length alone, a task's prompts scatter over other tasks' batches."""
    members: dict[Hashable, list[list[int]]] = {}
    for t, x in zip(tasks, ids, strict=True):
        members.setdefault(t, []).append(list(x))
    out = {}
    for t, xs in members.items():
        start = len(os.path.commonprefix(xs))
        out[t] = (max(len(x) for x in xs) - start, start, str(t))
    return out


def positions(ids: Sequence[Sequence[int]], groups: Sequence[Hashable], *, min_len: int = MIN_SHARED) -> int:
    """The prompt positions the lower layers (and each variant's upper layers) compute for one batch of prompts
    (``ids``, token lists; ``groups`` as for :func:`plan`): padded to the longest, less what a split saves."""
    padded, mask = _left_pad([torch.tensor(list(x), dtype=torch.long) for x in ids], 0)
    layout = plan(padded, mask, groups, pad_id=0, min_len=min_len)
    return padded.numel() if layout is None else layout.positions


@dataclass
class Shared:
    """The prefixes of a batch's prompts where a pass has left them (``hidden``: states entering the layers still to
    run), and which rows read each."""

    hidden: Tensor  # (U, P, D)
    mask: Tensor  # (U, P)
    group: Tensor  # (B,) each row's prefix (-1: none)

    def first(self) -> Tensor:
        """(U,) a row reading each prefix (0 for a prefix no row reads): its routing is the prefix's."""
        out = [0] * self.hidden.shape[0]
        for r, g in reversed(list(enumerate(self.group.tolist()))):
            if g >= 0:
                out[g] = r
        return torch.tensor(out, device=self.group.device)

    def select(self, rows: Tensor) -> Shared:
        """The prefixes of some rows (at least one: a row without a prefix reads the padding of the first's)."""
        group = self.group[rows]
        used = torch.unique(group[group >= 0])
        used = used if len(used) else group.new_zeros(1)
        new = self.group.new_full((self.hidden.shape[0],), -1)
        new[used] = torch.arange(len(used), device=used.device)
        return Shared(self.hidden[used], self.mask[used], torch.where(group >= 0, new[group.clamp_min(0)], -1))


def join_routing(prefix: Sequence[RoutingInfo], suffix: Sequence[RoutingInfo], group: Tensor,
                 mask: Tensor) -> list[RoutingInfo]:
    """Per MoE layer, the routing of the prefixes' pass (U, P) taken for each row (``group``) before that of the
    suffixes' pass (B, S): the routing (B, P + S) of the rows' combined prompts, counted where ``mask`` is 1."""
    rows = group.clamp_min(0)

    def cat(x: Tensor, y: Tensor) -> Tensor:
        return torch.cat([x.index_select(0, rows), y], dim=1)

    out = []
    for p, s in zip(prefix, suffix, strict=True):
        if p.layer != s.layer:
            raise ValueError(f"prefix pass routed MoE layer {p.layer} where the suffix pass routed {s.layer}")
        a, b = p.router, s.router
        router = RouterOutput(weights=cat(a.weights, b.weights), indices=cat(a.indices, b.indices),
                              probs=cat(a.probs, b.probs), logits=cat(a.logits, b.logits), task_level=b.task_level)
        out.append(RoutingInfo(layer=s.layer, router=router, mask=mask))
    return out
