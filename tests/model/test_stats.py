"""promoe.model.stats: routing statistics counted by hand, masked, per task, saved and read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from promoe.model.moe import RoutingInfo
from promoe.model.router import RouterOutput
from promoe.model.stats import RoutingStats
from tests.model.helpers import E

pytestmark = pytest.mark.usefixtures("tiny_tensors")


def routing_info(layer: int, indices: Tensor) -> RoutingInfo:
    b, t, _ = indices.shape
    logits = torch.randn(b, t, E)
    probs = torch.softmax(logits, -1)
    weights = torch.full(indices.shape, 1 / indices.shape[-1])
    return RoutingInfo(layer=layer, router=RouterOutput(weights=weights, indices=indices, probs=probs,
                                                        logits=logits))


def test_routing_stats(tmp_path: Path) -> None:
    idx0 = torch.tensor([[[0, 1], [0, 1], [2, 3]], [[0, 2], [3, 1], [3, 1]]])
    idx1 = torch.tensor([[[1, 0], [1, 2], [1, 3]], [[2, 0], [0, 3], [0, 1]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # last token of example 1 is padding
    stats = RoutingStats(n_layers=2, n_experts=E)
    masked = [routing_info(0, idx0), routing_info(1, idx1)]
    for info in masked:
        info.mask = mask
    stats.update(masked, ["x", "y"])
    stats.update([routing_info(0, idx0), routing_info(1, idx1)], ["x", "x"])

    for layer, idx in enumerate((idx0, idx1)):
        hand = np.zeros(E)
        for bi in range(2):
            for ti in range(3):
                for e in idx[bi, ti].tolist():
                    hand[e] += mask[bi, ti].item() + 1  # masked batch + unmasked batch
        np.testing.assert_array_equal(stats.load[layer], hand)
    np.testing.assert_array_equal(stats.tokens, [5 + 6, 5 + 6])

    keys, hist = stats.task_histograms()
    assert keys == ["x", "y"] and hist.shape == (2, 2, E)
    np.testing.assert_allclose(hist.sum(-1), np.ones((2, 2)))
    np.testing.assert_array_equal(stats.task_load["y"][0], [1, 1, 1, 1])  # (0,2), (3,1); padding dropped

    summary = stats.summary()
    np.testing.assert_allclose(np.sum(summary["load"], axis=1), [1, 1])
    assert all(0 <= h <= summary["max_entropy"] + 1e-9 for h in summary["token_entropy"])

    path = tmp_path / "routing.npz"
    stats.save(path)
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["load"], stats.load)
        np.testing.assert_array_equal(z["prob_sum"], stats.prob_sum)
        np.testing.assert_array_equal(z["entropy_sum"], stats.entropy_sum)
        np.testing.assert_array_equal(z["tokens"], stats.tokens)
        np.testing.assert_array_equal(z["task_histograms"], hist)
        np.testing.assert_array_equal(z["load_cv"], summary["load_cv"])
        np.testing.assert_array_equal(z["token_entropy"], summary["token_entropy"])
        assert z["task_names"].tolist() == keys


def test_picks_without_weight_are_not_counted() -> None:
    # one-hot task routing (the oracle's) with top-2: the second pick carries weight ~1e-8 and is no use of expert 3
    indices = torch.tensor([[[1, 3], [1, 3]]])
    info = routing_info(0, indices)
    info.router.weights = torch.tensor([[[1.0, 1e-8], [1.0, 1e-8]]])
    stats = RoutingStats(n_layers=1, n_experts=E)
    stats.update([info], ["t"])
    np.testing.assert_array_equal(stats.load[0], [0, 2, 0, 0])
    np.testing.assert_array_equal(stats.task_histograms()[1][0, 0], [0, 1, 0, 0])
