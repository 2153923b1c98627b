"""promoe.stages.train_models: with ``experts.specialise`` the experts are specialised first, and ``moe`` and
``promoe`` learn only their routers over them (``dense`` stays the generalist)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from promoe.cli import main


def test_moe_and_promoe_learn_routers_over_the_specialised_experts(tiny_data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(out),
                 "experts.specialise=true", "model.n_experts=2", "experts.steps=2", "compare.icl_models=[]",
                 "compare.fewshot_models=[]", "compare.ablations=[]", "compare.routers=[uniform]"]) == 0
    run = out / "smoke"
    matrix = json.loads((run / "experts/matrix.json").read_text())
    assert matrix["experts"] == 2 and len(matrix["loss"]) == 2
    assert (run / "experts/clusters.json").exists() and (run / "train/experts/best.safetensors").exists()
    for kind in ("moe", "promoe"):  # experts frozen: the checkpoint holds the routers (and hypernetwork) only
        names = load_file(str(run / f"train/{kind}/best.safetensors"))
        assert names and all("router" in n or n.startswith("hyper") for n in names), kind
    assert any("experts" in n for n in load_file(str(run / "train/dense/best.safetensors")))
    times = json.loads((run / "times.json").read_text())
    assert {"specialise", "expert_matrix"} <= set(times)
    summary = json.loads((run / "summary.json").read_text())
    assert {"moe", "promoe", "dense", "uniform"} <= set(summary)
