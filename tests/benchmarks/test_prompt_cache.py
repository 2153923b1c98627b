"""promoe.benchmarks.prompt_cache: the same rows and instances scored with the per-task prompt cache off and on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promoe.benchmarks.prompt_cache import PHASES, main
from promoe.config import load_config
from promoe.experiment import run


@pytest.fixture(scope="module")
def tiny_run(tiny_data_root_module: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config("smoke", [f"data.root={tiny_data_root_module}", f"output_dir={out}", "train.models=[moe]",
                                "compare.routers=[uniform,oracle]", "compare.ablations=[]", "compare.icl_models=[]",
                                "compare.fewshot_models=[]", "compare.router_only_models=[]", "eval.backbone=false",
                                "data.test_max_instances_per_task=3"])  # several instances of a task: a shared start
    return run(cfg)


def test_cache_off_and_on_score_every_row_alike_and_time_each_phase(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    assert main(["--run", str(tiny_run), "--tasks", "3", "--per-task", "3", "--batch-size", "8",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["cpu"]["cores"] >= 1 and len(res["settings"]) == 1
    s = res["settings"][0]
    assert set(s["rows"]) == {"moe", "uniform", "oracle"} and s["instances"] > 0
    assert s["identical_answers"] == {r: s["instances"] for r in s["rows"]}
    assert all(d < 1e-4 for d in s["max_nll_diff"].values())
    assert set(s["passes"]) == {"off", "on", "off_again"}
    assert all(set(p["phases"]) == set(PHASES) and p["phases"]["prefill"] > 0 for p in s["passes"].values())
    positions = s["passes"]["on"]["positions"]
    assert positions["batches_split"] >= 1 and positions["computed"] < positions["plain"]  # it did share
    assert s["positions_share"] == positions["computed"] / s["passes"]["off"]["positions"]["plain"]


def test_bad_counts_are_refused(tiny_run: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--run", str(tiny_run), "--per-task", "0"])
