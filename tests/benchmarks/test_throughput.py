"""promoe.benchmarks.throughput: FLOPs are counted, and the fraction of peak is counted FLOP/s over the
measured peak (tiny shapes: the numbers themselves are for ``promoe bench``)."""

from __future__ import annotations

import pytest
import torch

from promoe.benchmarks import throughput


def test_the_flop_counter_counts_a_matmul_exactly() -> None:
    a, b = torch.randn(16, 32), torch.randn(32, 8)
    assert throughput._flops(lambda: a @ b) == 2 * 16 * 32 * 8


def test_matmul_peak_is_a_positive_rate() -> None:
    assert throughput.matmul_peak(torch.float32, n=128, repeats=2) > 0


def test_fractions_of_peak_are_counted_rates_over_the_peak(monkeypatch) -> None:
    monkeypatch.setattr(throughput, "peaks", lambda quick: {"fp32": 1e12})
    res = throughput.run(quick=True, preset="smoke", overrides=["train.batch_size=2", "eval.batch_size=2",
                                                              "eval.max_new_tokens=3"])
    tr, ev = res["train"], res["eval"]
    assert res["dtype"] == "fp32"
    assert tr["flops_per_step"] > 0 and ev["flops_per_batch"] > 0
    # a training step (forward + backward) costs more than a forward pass of the same batch
    assert tr["flops_per_step"] > 2 * tr["tokens_per_step"] * 1000
    assert res["train_fraction_of_peak"] == pytest.approx(tr["flops_per_step"] / tr["seconds_per_step"] / 1e12)
    assert res["eval_fraction_of_peak"] == pytest.approx(ev["flops_per_batch"] / ev["seconds_per_batch"] / 1e12)
    assert ev["instances_per_s"] == pytest.approx(2 / ev["seconds_per_batch"])
