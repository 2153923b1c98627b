"""promoe.rows.conditions: the router-only condition trains the models again on prompts that hold the instance
input alone, from the same specialised experts, and scores them — and the headroom rows over them — with such
prompts, routing as the run's other rows are scored (``model.eval_top_k``)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from promoe.cli import main
from promoe.config import load_config
from promoe.data.paraphrases import PACKAGE as PARAPHRASES
from promoe.errors import ConfigError
from promoe.model.router import UniformRouter
from promoe.rows import conditions, oracle
from promoe.stages.evaluation import Evaluation

train_models = importlib.import_module("promoe.stages.train_models")  # the package re-exports its function


def test_router_only_rows_train_and_score_without_the_definition(tiny_data_root: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:
    built, scored, demos, seen, top_ks = [], [], set(), {}, {}
    build, run, demo_prompt = train_models.build_examples, Evaluation.run, oracle.config_prompt

    def spy_build(tasks, tok, **kw):
        built.append(kw["prompt"].condition)
        return build(tasks, tok, **kw)

    def spy_run(self, variants, *, prompt=None, label="eval"):
        scored.append((label, (prompt or self.cfg.prompt).condition, [v.name for v in variants]))
        seen.update({v.name: v for v in variants})
        out = run(self, variants, prompt=prompt, label=label)
        top_ks.update({v.name: {m.router.top_k for m in v.model.moe_layers if not isinstance(m.router, UniformRouter)}
                       for v in variants})
        return out

    def spy_demo(task, inst, prompt):
        demos.add(prompt.condition)
        return demo_prompt(task, inst, prompt)

    monkeypatch.setattr(oracle, "config_prompt", spy_demo)
    monkeypatch.setattr(train_models, "build_examples", spy_build)
    monkeypatch.setattr(Evaluation, "run", spy_run)
    out = tmp_path / "results"
    (tiny_data_root / PARAPHRASES).unlink()  # a selected ablation without texts: skipped in both conditions
    args = ["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(out),
            "experts.specialise=true", "model.n_experts=2", "experts.steps=2", "compare.icl_models=[]",
            "compare.fewshot_models=[]", "compare.ablations=[shuffled,paraphrase]", "compare.routers=[uniform,oracle]",
            "eval.backbone=false", "train.models=[moe,promoe]", "compare.router_only_models=[moe,promoe]",
            "model.eval_top_k=1"]  # trained over both experts, scored with one
    assert main(args) == 0
    run_dir = out / "smoke"
    # standard examples (train + validation) for the experts and models, then router-only ones for the condition
    assert built == ["standard", "standard", "router_only", "router_only"]
    assert scored == [("eval", "standard", ["moe", "promoe", "uniform", "oracle", "promoe-shuffled"]),
                      ("router_only", "router_only", ["moe-router_only", "promoe-router_only", "uniform-router_only",
                                                      "oracle-router_only", "promoe-shuffled-router_only"])]
    # every row scored with one expert, the router-only condition's models straight from training included
    assert {n: k for n, k in top_ks.items() if k} == {n: {1} for n in seen if not n.startswith("uniform")}
    # the ablation again over promoe-router_only: its router given the same other descriptions
    ro, std = seen["promoe-shuffled-router_only"], seen["promoe-shuffled"]
    assert ro.model is seen["promoe-router_only"].model and std.model is seen["promoe"].model
    assert ro.tasks == std.tasks and all(torch.equal(ro.task_emb[t], std.task_emb[t]) for t in ro.tasks)
    # the headroom rows again over moe-router_only's experts, the oracle choosing on router-only demonstrations
    assert (run_dir / "oracle.json").exists() and (run_dir / "oracle-router_only.json").exists()
    assert demos == {"standard", "router_only"}
    for kind in ("moe", "promoe"):  # over the same frozen specialised experts: the checkpoint holds routers only
        names = load_file(str(run_dir / f"train/{kind}-router_only/best.safetensors"))
        assert names and all("router" in n or n.startswith("hyper") for n in names), kind
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"moe-router_only", "promoe-router_only"} <= set(summary)
    assert all("ref_nll" in summary[m] for m in ("moe-router_only", "promoe-router_only"))
    sig = json.loads((run_dir / "significance.json").read_text())
    assert set(sig["within_condition"]["router_only"]) == {"moe", "uniform", "oracle", "promoe-shuffled"}
    assert "promoe-router_only" in sig["condition_headroom"]["router_only"]["rougeL"]["recovered"]
    report = (run_dir / "REPORT.md").read_text()
    assert "mixing every expert? In the `router_only` condition" in report
    assert "Does it use the description? (the same router given another task's description, none, random text, " \
           "the category name, a paraphrase) In the `router_only` condition" in report
    times = json.loads((run_dir / "times.json").read_text())
    assert {"train_moe-router_only", "train_promoe-router_only", "router_only", "oracle choice",
            "oracle-router_only choice"} <= set(times)

    # resumed with every row scored (the report removed): the condition is not set up again
    (run_dir / "summary.json").unlink()
    (run_dir / "REPORT.md").unlink()
    monkeypatch.setattr(conditions, "train_model", lambda *a, **k: pytest.fail("the condition was set up again"))
    assert main(args) == 0 and (run_dir / "REPORT.md").exists()


def test_router_only_rows_need_a_run_with_standard_prompts() -> None:
    with pytest.raises(ConfigError, match="router_only_models"):
        load_config("smoke", ["prompt.condition=router_only", "compare.icl_models=[]",
                              "compare.router_only_models=[promoe]"])
    assert load_config("smoke", []).compare.router_only_models == ["moe", "promoe"]
    with pytest.raises(ConfigError, match="router_only_models"):
        load_config("smoke", ["compare.router_only_models=[backbone]"])  # trained models only
