"""The row registry: names, groups and order derived from it, and a row added by one registration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from promoe import registry
from promoe.config import load_config
from promoe.evaluation.predict import Variant
from promoe.registry import Row, register, unregister


def test_every_builtin_row_builder_resolves() -> None:
    for row in registry.ROWS.values():
        assert callable(row.builder()), row.name


def test_names_groups_and_order_come_from_the_registry() -> None:
    assert registry.choices("compare.routers") == ["knn", "skill", "uniform", "random", "oracle", "oracle_insample"]
    assert registry.defaults("compare.routers") == ["knn", "skill", "uniform", "random", "oracle"]
    assert registry.choices("train.models") == ["dense", "moe", "promoe", "upcycled"]
    assert registry.defaults("train.models") == ["dense", "moe", "promoe"]  # upcycled: with specialised experts
    assert [registry.arch(m) for m in ("dense", "moe", "promoe", "upcycled")] == ["dense", "moe", "promoe", "moe"]
    assert registry.choices("compare.icl_models") == ["backbone", "dense", "moe", "promoe", "upcycled"]
    assert registry.choices("compare.fewshot_models") == ["dense", "moe", "promoe", "upcycled"]
    assert [registry.row_group(m) for m in ("copy_demo", "knn", "promoe-shuffled", "promoe-new", "moe-icl",
                                            "zzz")] == ["zero-shot", "routing", "ablation", "ablation",
                                                        "adaptation", "other"]
    # a condition over a router or an ablation: the condition is the variant, the row its base
    assert [registry.split_row(m) for m in ("promoe-icl", "promoe-shuffled", "uniform-router_only",
                                            "promoe-shuffled-router_only", "knn")] == [
        ("promoe", "icl"), ("promoe", "shuffled"), ("uniform", "router_only"), ("promoe-shuffled", "router_only"),
        ("knn", "")]
    assert registry.row_group("promoe-shuffled-router_only") == "router_only"
    assert {"uniform-router_only", "oracle-router_only", "promoe-shuffled-router_only"} <= set(registry.row_order())
    cfg = load_config("smoke", ["eval.headline_rows=[promoe-router_only,oracle-router_only]"])  # names they may use
    assert cfg.eval.headline_rows == ["promoe-router_only", "oracle-router_only"]
    order = registry.row_order()
    assert order.index("promoe") < order.index("knn") < order.index("promoe-empty") < order.index("dense-fewshot")
    assert sorted(["dense-icl", "knn", "copy_input", "zzz"], key=registry.model_key) == [
        "copy_input", "knn", "dense-icl", "zzz"]


def test_registration_is_checked() -> None:
    with pytest.raises(ValueError, match="only a condition carries"):
        register(Row("knn2", "router", "a router", "promoe.rows.routers:knn", carries=True))
    with pytest.raises(ValueError, match="already registered"):
        register(Row("knn", "router", "again", "promoe.rows.routers:knn"))
    with pytest.raises(ValueError, match="row name"):
        register(Row("my-router", "router", "dash", "promoe.rows.routers:knn"))
    with pytest.raises(ValueError, match="kind"):
        register(Row("mine", "sorcery", "?", "promoe.rows.routers:knn"))  # type: ignore[arg-type]


def test_selected_rows_follow_the_config_order() -> None:
    cfg = load_config("smoke", ["compare.routers=[random, knn]", "eval.backbone=false",
                                "train.models=[promoe, moe]"])
    assert [r.name for r in registry.selected(cfg, "router")] == ["random", "knn"]
    assert [r.name for r in registry.selected(cfg, "model")] == ["promoe", "moe"]
    assert {r.name for r in registry.selected(cfg, "condition")} == {"icl", "fewshot", "router_only"}


class FirstExpert(nn.Module):
    """Task-level routing that always prefers expert 0 (log-probabilities per layer)."""

    def __init__(self, n_layers: int, n_experts: int) -> None:
        super().__init__()
        self.n_layers, self.n_experts = n_layers, n_experts
        p = torch.full((n_layers, n_experts), 0.01)
        p[:, 0] = 1.0
        self.register_buffer("logp", (p / p.sum(-1, keepdim=True)).log())

    def forward(self, task_emb: torch.Tensor) -> torch.Tensor:
        return self.logp.expand(task_emb.shape[0], -1, -1)


def first_expert(ctx, row: Row) -> Variant:
    """A router row written as a user would: one builder over the trained ``moe``'s experts."""
    from promoe.model.build import variant_copy
    from promoe.model.task_routing import task_routed

    model = variant_copy(ctx.trained["moe"])
    gen = FirstExpert(len(model.moe_layers), model.moe_layers[0].experts.n_experts)
    return Variant(row.name, task_routed(model, gen), ctx.task_emb)


@pytest.fixture
def new_router() -> Iterator[Row]:
    row = register(Row("first_expert", "router", "always the first expert", first_expert,
                       select="compare.routers", needs=("moe",)), replace=True)
    yield row
    unregister(row.name)


def test_a_registered_router_is_scored_tested_and_reported(new_router: Row, tiny_data_root: Path,
                                                          tmp_path: Path) -> None:
    """Adding a router row is its builder plus one registration: no other edit."""
    from promoe.cli import main

    overrides = ["compare.routers=[uniform, first_expert]", "compare.ablations=[]", "compare.icl_models=[]",
                 "compare.fewshot_models=[]", "compare.router_only_models=[]", "eval.backbone=false", "train.models=[moe, promoe]"]
    out = tmp_path / "results"
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(out),
                 *overrides]) == 0
    run = out / "smoke"
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary) == ["copy_input", "copy_demo", "moe", "promoe", "uniform", "first_expert"]
    with np.load(run / "routing/first_expert.npz", allow_pickle=False) as z:
        load = z["load"]  # (layers, experts): every token chose expert 0 among its top-k
    assert (load[:, 0] == load.max(axis=1)).all() and (load[:, 0] * 2 >= load.sum(axis=1)).all()
    sig = json.loads((run / "significance.json").read_text())
    assert "first_expert" in sig["paired"] and sig["paired"]["first_expert"]["rougeL"]["n_tasks"] == 3
    report = (run / "REPORT.md").read_text()
    routing_section = report.split("### Routing baselines")[1].split("###")[0]
    assert "| first_expert |" in routing_section


def test_an_unknown_row_name_in_the_config_is_refused() -> None:
    from promoe.errors import ConfigError

    with pytest.raises(ConfigError, match="first_expert"):
        load_config("smoke", ["compare.routers=[first_expert]"])
