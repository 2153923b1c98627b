"""The frozen lower layers' output per training example, computed once and shared by every model."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from promoe.model.moe_model import MoEModel


class LowerCache:
    """Lower hidden states per training example, computed on first use and shared by all models.

    Each example is computed alone (no padding): its hidden states do not depend on which batch first
    needed it, so a run resumed after a kill caches the same values as an uninterrupted one (a padded
    batch of other examples changes the last bits), and without padding it is also ~2x faster on CPU.
    """

    def __init__(self) -> None:
        self.store: dict[int, Tensor] = {}
        self.seconds = 0.0

    def keep(self, train_keys: set[int]) -> None:
        """Drop the training examples' states other than ``train_keys`` (the validation examples' stay): before
        a model trains, the examples of its sampling plan. The specialisation draws ~2,300 examples of which
        the models' shared plan uses ~500; without this their states stayed through every model's training."""
        for key in [k for k in self.store if k >= 0 and k not in train_keys]:
            del self.store[key]

    def __call__(self, model: MoEModel, idx: Sequence[int], input_ids: Tensor, mask: Tensor) -> Tensor:
        """The lower states (len(idx), T, D) of the examples keyed ``idx`` (``input_ids``/``mask``: their right-padded
        batch, on any device), zero-padded, on the model's device; the missing ones are computed first."""
        missing = [j for j, i in enumerate(idx) if i not in self.store]
        if missing:
            t0 = time.perf_counter()
            dev = next(model.parameters()).device
            for j in missing:  # right padded: the example's tokens come first
                n = int(mask[j].sum())
                self.store[idx[j]] = model.lower_hidden(input_ids[j:j + 1, :n].to(dev), mask[j:j + 1, :n].to(dev))[0]
            self.seconds += time.perf_counter() - t0
        first = next(iter(self.store.values()))
        out = torch.zeros(len(idx), input_ids.shape[1], first.shape[-1], device=first.device)
        for j, i in enumerate(idx):
            h = self.store[i]
            out[j, : h.shape[0]] = h
        return out
