"""promoe.stages.train_models: with ``experts.specialise`` the experts are specialised first, and ``moe`` and
``promoe`` learn only their routers over them (``dense`` stays the generalist, ``upcycled`` the MoE trained end
to end); every trained router's logit spread is measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from promoe.cli import main
from promoe.config import load_config
from promoe.errors import ConfigError
from promoe.training.trainer import Trainer


def test_moe_and_promoe_learn_routers_over_the_specialised_experts(tiny_data_root: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    out = tmp_path / "results"
    cached = []  # per model trained after the specialisation: its plan's examples, the training states cached
    real_fit = Trainer.fit

    def fit(self, desc: str = "train"):
        if desc.startswith("train "):
            cached.append(({i for idx in self.plan for i in idx}, {k for k in self.lower.store if k >= 0}))
        return real_fit(self, desc)

    monkeypatch.setattr(Trainer, "fit", fit)
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(out),
                 "experts.specialise=true", "model.n_experts=2", "experts.steps=2", "compare.icl_models=[]",
                 "compare.fewshot_models=[]", "compare.router_only_models=[]", "compare.ablations=[]", "compare.routers=[uniform]",
                 "train.models=[dense,moe,promoe,upcycled]"]) == 0
    run = out / "smoke"
    matrix = json.loads((run / "experts/matrix.json").read_text())
    assert matrix["experts"] == 2 and len(matrix["loss"]) == 2
    assert (run / "experts/clusters.json").exists() and (run / "train/experts/best.safetensors").exists()
    for kind in ("moe", "promoe"):  # experts frozen: the checkpoint holds the routers (and hypernetwork) only
        names = load_file(str(run / f"train/{kind}/best.safetensors"))
        assert names and all("router" in n or n.startswith("hyper") for n in names), kind
    for kind in ("dense", "upcycled"):  # trained end to end from the upcycled copies
        assert any("experts" in n for n in load_file(str(run / f"train/{kind}/best.safetensors"))), kind
    upcycled = load_file(str(run / "train/upcycled/best.safetensors"))
    assert any("router" in n for n in upcycled) and not any(n.startswith("hyper") for n in upcycled)
    assert len(cached) == 4 and all(held <= plan for plan, held in cached)  # nothing a model does not draw
    assert cached[1][1] == cached[1][0]  # the next model draws the same examples: all of them kept
    times = json.loads((run / "times.json").read_text())
    assert {"specialise", "expert_matrix"} <= set(times)
    summary = json.loads((run / "summary.json").read_text())
    assert {"moe", "promoe", "dense", "upcycled", "uniform"} <= set(summary)
    assert all("ref_nll" in summary[m] for m in ("moe", "promoe", "dense", "upcycled", "uniform"))
    scale = json.loads((run / "routing/logit_scale.json").read_text())
    assert set(scale) == {"moe", "promoe", "upcycled"} and scale["moe"]["generated"] == 0
    assert "How far the description moves the routing logits" in (run / "REPORT.md").read_text()
    # equal compute: dense and upcycled train the specialisation's 2 steps as well as the routers' 4
    steps = {k: [json.loads(x)["step"] for x in (run / f"train/{k}/metrics.jsonl").read_text().splitlines()][-1]
             for k in ("dense", "moe", "promoe", "upcycled")}
    assert steps == {"dense": 6, "moe": 4, "promoe": 4, "upcycled": 6}
    compute = {k: json.loads((run / f"train/{k}/compute.json").read_text()) for k in steps}
    assert {c["examples_total"] for c in compute.values()} == {6 * 4}
    assert compute["moe"]["specialisation"]["examples"] == 2 * 4 and compute["dense"]["specialisation"] is None
    assert "| upcycled |" in (run / "REPORT.md").read_text().split("## Compute per row")[1]


def test_upcycled_needs_specialised_experts() -> None:
    with pytest.raises(ConfigError, match="upcycled"):
        load_config("smoke", ["train.models=[moe,upcycled]"])
    assert load_config("smoke", ["train.models=[moe,upcycled]", "experts.specialise=true"]).train.models[-1] == "upcycled"
