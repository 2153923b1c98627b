"""Task-level routing of the trained ``moe`` on the training tasks: what the ``knn`` and ``skill``
routers recombine for an unseen task (``routing_profiles/moe.npz``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from promoe.data.examples import TrainExample
from promoe.io import write_npz
from promoe.model.moe_model import MoEModel
from promoe.readback import DamagedFile, arrays, redo
from promoe.stages.lower_cache import LowerCache
from promoe.training.trainer import batch_of

Profiles = tuple[list[str], np.ndarray]
"""Training task names and their routing (N, n_layers, n_experts)."""


def routing_profiles(model: MoEModel, examples: Sequence[TrainExample], per_task: int, lower: LowerCache | None,
                     pad_id: int, batch_size: int = 8, seen: Collection[int] = ()) -> Profiles:
    """Task-level routing of a trained token-level MoE on training tasks: mean router probability per
    layer and expert over the tokens of ``per_task`` examples of each task -> (names, (N, L, E)).
    Examples ``seen`` in training batches are taken first (their lower hidden states are cached); the
    choice depends on the training plan only, not on what a resumed run has cached."""
    picked: dict[str, list[int]] = {}
    seen = set(seen)
    for i in sorted(range(len(examples)), key=lambda i: i not in seen):  # examples training used first
        if len(picked.setdefault(examples[i].task, [])) < per_task:
            picked[examples[i].task].append(i)
    order = sorted((i for idx in picked.values() for i in idx), key=lambda i: len(examples[i].input_ids))
    sums: dict[str, np.ndarray] = {}
    model.eval()
    with torch.no_grad():
        for s in tqdm(range(0, len(order), batch_size), desc="routing profiles", dynamic_ncols=True):
            idx = order[s:s + batch_size]
            b = batch_of(examples, idx, pad_id, model.is_seq2seq)
            hidden = lower(model, idx, b.input_ids, b.attention_mask) if lower is not None else None
            out = model(input_ids=None if hidden is not None else b.input_ids, attention_mask=b.attention_mask,
                        lower=hidden, routing_only=True)
            m = b.attention_mask.float()[..., None]  # (B, T, 1)
            probs = torch.stack([(r.router.probs.float() * m).sum(1) / m.sum(1) for r in out.routing], 1)  # (B, L, E)
            for key, p in zip(b.task_keys, probs.numpy(), strict=True):
                sums[key] = sums.get(key, 0) + p
    names = sorted(sums)
    return names, np.stack([sums[n] / len(picked[n]) for n in names])


def load_or_make_profiles(path: Path, acc: Accelerator, make: Callable[[], Profiles]) -> Profiles:
    """The profiles saved at ``path``, or ``make()``'s, saved there by the main process."""
    if path.exists():
        try:
            z = arrays(path, ["task_names", "routing"])
            if z["routing"].ndim != 3 or len(z["task_names"]) != len(z["routing"]):
                raise DamagedFile(path, f"is damaged: {len(z['task_names'])} tasks, routing of shape "
                                        f"{list(z['routing'].shape)}")
            return [str(n) for n in z["task_names"]], z["routing"]
        except DamagedFile as e:
            redo(e, "the profiles are made again")
    names, routing = make()
    if acc.is_main_process:
        write_npz(path, task_names=np.array(names, dtype=str), routing=routing)
    return names, routing
