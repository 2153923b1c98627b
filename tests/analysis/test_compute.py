"""promoe.analysis.compute: each row's compute next to its score in REPORT.md, rows over a trained model
inheriting its compute; a bad compute.json is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoe.analysis import analyze
from promoe.analysis.compute import trained_of
from promoe.errors import DataError
from promoe.io import write_json
from tests.analysis.helpers import synthetic_run

ROWS = ("copy_demo", "dense", "moe", "promoe", "uniform", "promoe-shuffled", "moe-fewshot")


def record(steps: int, spec: int | None, lr: float | None, router_lr: float | None, choice: dict | None = None) -> dict:
    """A compute.json as promoe.stages.compute.compute_record writes it (batch size 8)."""
    specialisation = None if spec is None else {"steps": spec, "examples": spec * 8, "lr": 1e-3}
    return {"model": "", "kind": "", "budget": "matched", "batch_size": 8, "specialisation": specialisation,
            "steps": steps, "examples": steps * 8, "examples_total": (steps + (spec or 0)) * 8, "lr": lr,
            "router_lr": router_lr, "lr_choice": choice, "best_step": steps, "best_val_loss": 2.0}


def test_rows_inherit_the_compute_of_the_model_they_stand_on() -> None:
    compute = {"dense": {}, "moe": {}, "promoe": {}, "moe-router_only": {}, "promoe-router_only": {}}
    expected = {"dense": "dense", "oracle": "moe", "knn": "moe", "uniform": "moe", "promoe-shuffled": "promoe",
                "dense-icl": "dense", "moe-fewshot": "moe", "moe-router_only": "moe-router_only",
                "uniform-router_only": "moe-router_only", "oracle-router_only": "moe-router_only",
                "promoe-shuffled-router_only": "promoe-router_only", "backbone": None, "backbone-icl": None,
                "copy_input": None}
    assert {row: trained_of(row, compute) for row in expected} == expected
    assert trained_of("uniform", {"dense": {}}) is None  # its model's compute is not recorded


def test_report_gives_each_rows_compute_next_to_its_score(tmp_path: Path) -> None:
    run = tmp_path / "run"
    synthetic_run(run, rows=ROWS, embeddings=False)
    choice = {"key": "lr", "pilot_steps": 112, "val_loss": {"0.0001": 2.41, "0.0003": 2.38, "0.001": None},
              "chosen": 0.0003, "candidates": 3, "examples": 2688}
    write_json(run / "train/dense/compute.json", record(448, None, 3e-4, None, choice))
    routers = {"key": "router_lr", "pilot_steps": 16, "val_loss": {"0.001": 2.2, "0.01": 2.1}, "chosen": 0.01}
    write_json(run / "train/moe/compute.json", record(64, 384, None, 1e-2, routers))
    fitted = {**record(64, 384, None, 1e-3), "best_step": 0, "router_fit": {"steps": 300, "descriptions": 600}}
    write_json(run / "train/promoe/compute.json", fitted)
    report = (run / "REPORT.md").read_text() if analyze(run, n_boot=100) else ""
    assert report.index("## Headline") < report.index("## Compute per row") < report.index("## Paired tests")
    assert "What this run's budget buys: every trained row saw 3,584 training examples (dense: 3,584 end to end; " \
           "moe, promoe: 3,072 specialising their experts + 512 training routers)" in report
    section = report[report.index("## Compute per row"):report.index("## Paired tests")]
    lines = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert "copy_demo" not in lines  # no training behind it
    dense = lines["dense"].split(" | ")
    assert dense[2:6] == ["dense", "0 + 3,584 = 3,584", "0 + 448", "layers and experts 0.0003 (chosen; validation "
                          "loss 0.0001 → 2.4100, **0.0003 → 2.3800**, 0.001 → diverged)"]
    assert dense[6] == "3 × 112 steps (2,688 examples) |"
    moe = lines["moe"].split(" | ")
    assert moe[3:5] == ["3,072 + 512 = 3,584", "384 + 64"]  # the same examples seen as dense
    assert moe[5] == "experts 0.001 (specialisation); routers 0.01 (chosen; validation loss 0.001 → 2.2000, " \
                     "**0.01 → 2.1000**)"
    for row, model in (("uniform", "moe"), ("moe-fewshot", "moe"), ("promoe-shuffled", "promoe")):
        assert lines[row].split(" | ")[2:5] == lines[model].split(" | ")[2:5], row  # inherited
    assert lines["uniform"].split(" | ")[5:] == ["experts 0.001 (specialisation); routers 0.01 (chosen)", "`moe`'s |"]
    assert lines["promoe"].split(" | ")[5] == (  # given, not chosen; fitted to its targets first and kept
        "experts 0.001 (specialisation); routers 0.001; router first fitted to its routing targets (300 steps over 600 "
        "descriptions, no backbone; kept: no checkpoint beat it)")
    score = lines["dense"].split(" | ")[1]
    assert score and score in report[report.index("## Headline"):report.index("## Compute per row")]


def test_bad_compute_json_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    synthetic_run(run, rows=("dense",), embeddings=False)
    write_json(run / "train/dense/compute.json", {**record(448, None, 3e-4, None), "examples_total": 1})
    with pytest.raises(DataError, match=r"train/dense/compute.json.*examples_total"):
        analyze(run, n_boot=10)
    write_json(run / "train/dense/compute.json", {**record(448, None, 3e-4, None), "router_fit": {"steps": "many"}})
    with pytest.raises(DataError, match=r"train/dense/compute.json.*router_fit"):
        analyze(run, n_boot=10)
