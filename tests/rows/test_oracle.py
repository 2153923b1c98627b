"""promoe.rows.oracle: the best expert per test task, chosen on its positive examples only (``oracle``) or on
the scored instances themselves (``oracle_insample``, the ceiling)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from promoe.config import load_config
from promoe.data.schema import Example, Instance, Task
from promoe.data.splits import load_splits
from promoe.model.moe_model import TaskRouting
from promoe.registry import CEILING, ROWS
from promoe.rows.oracle import choose, oracle, oracle_insample
from promoe.stages import start

pytestmark = pytest.mark.usefixtures("tiny_tensors")


def _task(name: str, n_pos: int) -> Task:
    return Task(name=name, definition=f"Do {name}.",
                instances=tuple(Instance(f"{name}-{i}", f"scored {i}", ("gold",)) for i in range(3)),
                positive_examples=tuple(Example(f"demo {i}", "demo out") for i in range(n_pos)))


def test_the_choice_sees_the_positive_examples_and_never_the_scored_instances() -> None:
    seen: list[Instance] = []

    def nll(expert: int, demos: list[Instance], task: Task) -> float:
        seen.extend(demos)
        return {0: 2.0, 1: 1.0, 2: 3.0}[expert]  # expert 1 fits the demonstrations best

    tasks = [_task("a", 2), _task("b", 0)]
    out = choose(tasks, 3, nll)
    assert out == {"a": {"expert": 1, "nll": [2.0, 1.0, 3.0], "examples": 2}}  # "b" has none: no choice
    assert seen and all(d.origin == "positive_example" and d.input.startswith("demo") for d in seen)
    scored = {i.id for t in tasks for i in t.instances} | {i.input for t in tasks for i in t.instances}
    assert not scored & ({d.id for d in seen} | {d.input for d in seen})


def test_the_oracle_is_refused_when_positive_examples_are_scored(caplog: pytest.LogCaptureFixture) -> None:
    ctx = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(test_positive_examples=True)))
    with caplog.at_level(logging.WARNING):
        assert oracle(ctx, ROWS["oracle"]) is None
    assert "data.test_positive_examples=false" in caplog.text


def test_the_oracle_routes_each_task_to_its_chosen_expert(tiny_data_root: Path, tmp_path: Path) -> None:
    cfg = load_config("smoke", [f"data.root={tiny_data_root}", "model.n_experts=3"])
    ctx = start(cfg, load_splits(cfg.data), tmp_path, {}, Accelerator())
    ctx.trained = {"moe": ctx.setup.model("moe").eval()}
    with torch.no_grad():  # make the experts differ, so that one fits each task best
        for layer in ctx.trained["moe"].moe_layers:
            layer.experts.w_out.mul_(torch.tensor([0.0, 1.0, 3.0])[:, None, None])
    row = oracle(ctx, ROWS["oracle"])
    chosen = json.loads((tmp_path / "oracle.json").read_text())["choices"]
    assert set(chosen) == {t.name for t in ctx.splits.test}
    for name, c in chosen.items():
        assert c["expert"] == min(range(3), key=c["nll"].__getitem__)
        routing = row.model.hyper(ctx.task_emb[name][None], tasks=[name])  # (1, L, E) log-probabilities
        assert (routing[0].argmax(-1) == c["expert"]).all()
    assert row.model is not ctx.trained["moe"]  # a copy over the same experts
    assert row.model.moe_layers[0].experts.w_in is ctx.trained["moe"].moe_layers[0].experts.w_in


def test_two_tasks_with_one_definition_are_each_scored_with_their_own_choice(
        tiny_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config("smoke", [f"data.root={tiny_data_root}", "model.n_experts=3"])
    ctx = start(cfg, load_splits(cfg.data), tmp_path, {}, Accelerator())
    ctx.trained = {"moe": ctx.setup.model("moe").eval()}
    first, twin = [t.name for t in ctx.splits.test][:2]
    ctx.task_emb[twin] = ctx.task_emb[first].clone()  # as task1385_anli_r1 and task1387_anli_r3: one Definition
    monkeypatch.setattr("promoe.rows.oracle.choose", lambda tasks, n, nll, *_: {
        t.name: {"expert": 2 if t.name == twin else 1, "nll": [0.0] * n, "examples": 1} for t in tasks})
    row = oracle(ctx, ROWS["oracle"])
    routing = TaskRouting(row.model, row.task_emb).rows([first, twin])  # what the evaluation generates with
    assert routing.argmax(-1)[:, 0].tolist() == [1, 2]


def test_the_ceiling_chooses_on_exactly_the_instances_its_row_scores(tiny_data_root: Path, tmp_path: Path) -> None:
    cfg = load_config("smoke", [f"data.root={tiny_data_root}", "model.n_experts=3", "data.test_max_per_task=1",
                                "data.headline_max_per_task=2", "eval.headline_rows=[moe]",
                                f"compare.routers=[uniform,oracle,{CEILING}]"])
    ctx = start(cfg, load_splits(cfg.data), tmp_path, {}, Accelerator())
    ctx.trained = {"moe": ctx.setup.model("moe").eval()}
    with torch.no_grad():
        for layer in ctx.trained["moe"].moe_layers:
            layer.experts.w_out.mul_(torch.tensor([0.0, 1.0, 3.0])[:, None, None])
    row = oracle_insample(ctx, ROWS[CEILING])
    chosen = json.loads((tmp_path / f"{CEILING}.json").read_text())["choices"]
    ctx.evaluation.scope([row])  # the instances the evaluation will score for this row
    for t in ctx.splits.test:
        scored = [i for i in t.instances if row.covers(t.name, i.id)]
        assert scored and chosen[t.name]["examples"] == len(scored) == 1  # not a headline row: the first only
        assert chosen[t.name]["expert"] == min(range(3), key=chosen[t.name]["nll"].__getitem__)
    assert ROWS[CEILING].group == "ceiling"  # reported apart from the results
