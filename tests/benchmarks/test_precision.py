"""promoe.benchmarks.precision: the same rows and instances scored with the frozen lower layers in fp32 and bf16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promoe.benchmarks.precision import main
from promoe.config import load_config
from promoe.experiment import run


@pytest.fixture(scope="module")
def tiny_run(tiny_data_root_module: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config("smoke", [f"data.root={tiny_data_root_module}", f"output_dir={out}", "train.models=[moe]",
                                "compare.routers=[uniform,oracle]", "compare.ablations=[]", "compare.icl_models=[]",
                                "compare.fewshot_models=[]", "compare.router_only_models=[]", "eval.backbone=false"])
    return run(cfg)


def test_both_dtypes_score_every_row_on_the_same_instances(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert main(["--run", str(tiny_run), "--tasks", "3", "--per-task", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["rows"]) == {"moe", "uniform", "oracle"}  # trained rows, and the headroom's over moe's experts
    for row in res["rows"].values():
        assert row["instances"] == res["instances"] > 0 and 0 <= row["identical_answers"] <= row["instances"]
        assert row["nll"]["fp32"] != row["nll"]["bf16"]  # bf16 really ran: the likelihoods move
        assert abs(row["nll"]["bf16_minus_fp32"]["diff"]) < 0.1  # and only by rounding
    assert set(res["comparisons"]["oracle - uniform"]) == {"fp32", "bf16"}
    assert set(res["seconds"]) == {"fp32", "bf16", "fp32_again"} and res["cpu"]["cores"] >= 1


def test_bad_counts_are_refused(tiny_run: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--run", str(tiny_run), "--tasks", "0"])
