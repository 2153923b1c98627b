"""promoe.stages.score_rows: the zero-shot rows are the registry's, in the config's order, built from
what was trained."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from accelerate import Accelerator

from promoe import registry
from promoe.config import load_config
from promoe.data.splits import load_splits
from promoe.stages import start
from promoe.stages.score_rows import zero_shot_rows

pytestmark = pytest.mark.usefixtures("tiny_tensors")

OVERRIDES = ["train.models=[promoe, moe]", "compare.routers=[random, uniform]", "compare.ablations=[empty, shuffled]"]


def _context(tiny_data_root: Path, tmp_path: Path, trained: tuple[str, ...]):
    cfg = load_config("smoke", [f"data.root={tiny_data_root}", *OVERRIDES])
    ctx = start(cfg, load_splits(cfg.data), tmp_path, {}, Accelerator())
    ctx.trained = {k: ctx.setup.model(k).eval() for k in trained}
    return ctx


def test_rows_follow_the_config_and_share_the_trained_weights(tiny_data_root: Path, tmp_path: Path) -> None:
    ctx = _context(tiny_data_root, tmp_path, ("promoe", "moe"))
    rows = {v.name: v for v in zero_shot_rows(ctx)}
    assert list(rows) == ["backbone", "promoe", "moe", "random", "uniform", "promoe-empty", "promoe-shuffled"]
    assert rows["promoe"].task_emb is ctx.task_emb and rows["moe"].task_emb is None
    moe_experts = ctx.trained["moe"].moe_layers[0].experts.w_in
    assert rows["uniform"].model.moe_layers[0].experts.w_in is moe_experts  # a router over the same experts
    assert rows["uniform"].model is not ctx.trained["moe"]
    ablated = rows["promoe-shuffled"]
    assert ablated.model is ctx.trained["promoe"] and ablated.tasks == {t.name for t in ctx.splits.test}
    own = ctx.task_emb[ctx.splits.test[0].name]
    assert not (ablated.task_emb[ctx.splits.test[0].name] == own).all()  # another task's description


def test_rows_of_an_untrained_model_are_skipped_with_a_word(tiny_data_root: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    ctx = _context(tiny_data_root, tmp_path, ("promoe",))
    with caplog.at_level(logging.WARNING):
        names = [v.name for v in zero_shot_rows(ctx)]
    assert names == ["backbone", "promoe", "promoe-empty", "promoe-shuffled"]
    assert "random skipped: it needs the trained moe" in caplog.text


def test_a_router_row_an_earlier_run_scored_is_not_built_again(tiny_data_root: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(tiny_data_root, tmp_path, ("promoe", "moe"))
    monkeypatch.setattr(ctx.evaluation, "done", lambda name: name == "random")  # scored before, files kept
    built = []
    random_row = registry.ROWS["random"]
    monkeypatch.setitem(registry.ROWS, "random", replace(random_row, build=lambda c, r: built.append(r.name)))
    names = [v.name for v in zero_shot_rows(ctx)]
    assert "random" not in names and "uniform" in names and not built
