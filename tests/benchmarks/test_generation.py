"""promoe.benchmarks.generation: the exported sub-network generates what the task-routed model does, with
fewer parameters (tiny shapes: the numbers themselves are for ``promoe bench``)."""

from __future__ import annotations

import pytest

from promoe.benchmarks import generation


def test_generation_benchmark_exported_model_matches_and_is_smaller() -> None:
    res = generation.run(quick=True, preset="smoke", batch_size=2, new_tokens=3, repeats=1)
    assert res["exported_equals_promoe"]  # the exported sub-network generates the same tokens
    assert set(res["tokens_per_s"]) == {"dense", "moe", "promoe", "exported"}
    assert res["export_vs_token_moe"] == pytest.approx(res["tokens_per_s"]["exported"] / res["tokens_per_s"]["moe"])
    p = res["params"]
    assert p["exported"] < p["moe_total"] and p["exported"] <= p["moe_activated"]
