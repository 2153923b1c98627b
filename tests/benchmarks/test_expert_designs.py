"""promoe.benchmarks.expert_designs: the designs table, read from finished runs only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promoe.benchmarks.expert_designs import design, main, margins


def test_margins_say_how_far_the_own_expert_is_ahead_of_the_best_other() -> None:
    loss = [[1.0, 2.0, 3.0], [1.5, 1.0, 2.5], [0.5, 1.2, 3.5]]
    assert margins(loss) == pytest.approx([-0.5, 0.2, -1.0])  # cluster 0: expert 2 is better than its own
    assert margins([[1.0, 5.0], [2.0, None]]) == [pytest.approx(1.0), None]  # no own NLL: no margin


def _run(tmp: Path, demo: list[int], top: list[int], room: float) -> Path:
    run = tmp / f"run{room}"
    (run / "experts").mkdir(parents=True)
    ci = {"diff": room, "low": room - 1, "high": room + 1, "mde": 2.0, "detected": room > 1, "n_tasks": 3}
    (run / "experts" / "matrix.json").write_text(json.dumps(
        {"loss": [[1.0, 2.0], [1.5, 1.2]], "best_on_own": 2, "clusters_with_data": 2,
         "weight_distance": [[0.0, 0.2], [0.4, 0.0]], "output_distance": [[0.0, 0.1], [0.1, 0.0]]}))
    (run / "experts" / "clusters.json").write_text(json.dumps({"method": "output", "sizes": [3, 4]}))
    (run / "significance.json").write_text(json.dumps(
        {"headroom": {m: {"headroom": ci, "ceiling": {**ci, "diff": 2 * room}, "recovered": {}}
                      for m in ("rougeL", "exact_match", "ref_nll")}}))
    for name, experts in (("oracle", demo), ("oracle_insample", top)):
        (run / f"{name}.json").write_text(json.dumps(
            {"choices": {f"t{i}": {"expert": e} for i, e in enumerate(experts)}}))
    (run / "times.json").write_text(json.dumps({"specialise": 120.0, "eval": 60.0, "lower_cache": 50.0,
                                                "peak_rss_gib": 3.0, "cpu": "test cpu"}))
    return run


def test_each_design_reads_its_matrix_both_headrooms_and_the_oracles_agreement(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path, [0, 1, 1], [0, 1, 0], 3.0)
    d = design("output", run)
    assert d["best_on_own"] == 2 and d["margins"] == pytest.approx([0.5, 0.8])
    assert d["weight_distance"] == pytest.approx(0.3) and d["agreement"] == {"same": 2, "tasks": 3}
    assert d["headroom"]["rougeL"]["ceiling"]["diff"] == 6.0 and d["specialise_s"] == 120.0
    assert d["total_s"] == 180.0  # the lower-layer cache's time is inside the other stages
    main([f"output={run}", f"other={_run(tmp_path, [0], [1], 0.5)}", "--out", str(tmp_path / "t")])
    text = (tmp_path / "t.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "| output | output (3, 4) | 2 of 2 |" in text and "**+3.00 [+2.00, +4.00]** (MDE 2.00)" in text
    assert "+0.50 [-0.50, +1.50] (MDE 2.00)" in text  # not detected: not bold
    assert json.loads((tmp_path / "t.json").read_text())["designs"][1]["agreement"] == {"same": 0, "tasks": 1}
    with pytest.raises(SystemExit, match="NAME=RUN_DIR"):
        main([str(run)])
