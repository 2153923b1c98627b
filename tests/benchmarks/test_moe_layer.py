"""promoe.benchmarks.moe_layer: the layer comparison does the same work in each implementation and
reports both ratios (tiny shapes: the numbers themselves are for ``promoe bench``)."""

from __future__ import annotations

import pytest

from promoe.benchmarks import moe_layer


def test_layer_comparison_does_the_same_work_and_reports_both_ratios() -> None:
    row = moe_layer.compare(tokens=64, n_experts=4, repeats=1)
    s = row["seconds"]
    assert set(s) >= {"moe", "dense", "hf_mixtral"} and all(v > 0 for v in s.values())
    assert row["moe_vs_dense"] == pytest.approx(s["moe"] / s["dense"])
    assert row["moe_vs_hf_mixtral"] == pytest.approx(s["hf_mixtral"] / s["moe"])
