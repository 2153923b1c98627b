"""promoe.stages.evaluation: every row is scored routing as the model is scored (``model.eval_top_k``), however
its model came — the run's trained models, a copy with other routers, an ablation, a few-shot fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate import Accelerator

from promoe import registry
from promoe.config import load_config
from promoe.data.splits import load_splits
from promoe.model.router import UniformRouter
from promoe.rows import conditions
from promoe.stages import evaluation, start
from promoe.stages.score_rows import zero_shot_rows

pytestmark = pytest.mark.usefixtures("tiny_tensors")


class Scored(Exception):
    """Stops the pass once the rows it scores are seen."""


def _context(tiny_data_root: Path, tmp_path: Path):
    """Models as they come out of training: routing over all 4 experts, scored with 1."""
    cfg = load_config("smoke", [f"data.root={tiny_data_root}", "model.top_k=4", "model.eval_top_k=1",
                                "train.models=[promoe, moe]", "compare.routers=[uniform, random]",
                                "compare.ablations=[shuffled]"])
    ctx = start(cfg, load_splits(cfg.data), tmp_path, {}, Accelerator())
    ctx.trained = {k: ctx.setup.model(k).eval() for k in ("promoe", "moe")}
    assert all(m.top_ks == [4, 4] for m in ctx.trained.values())
    return ctx


def _top_ks(variants) -> dict[str, set[int]]:
    """Per row, the experts its learned routers route to (uniform mixing and dense always use every expert)."""
    return {v.name: {layer.router.top_k for layer in v.model.moe_layers if not isinstance(layer.router, UniformRouter)}
            for v in variants}


def _spy(seen: dict):
    def scored(variants, *a, **k):
        seen.update(_top_ks(variants.values() if isinstance(variants, dict) else variants))
        raise Scored
    return scored


def test_zero_shot_rows_are_scored_with_eval_top_k(tiny_data_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(tiny_data_root, tmp_path)
    seen: dict[str, set[int]] = {}
    monkeypatch.setattr(evaluation, "predict_variants", _spy(seen))
    with pytest.raises(Scored):
        ctx.evaluation.run(zero_shot_rows(ctx))
    assert set(seen) == {"backbone", "promoe", "moe", "uniform", "random", "promoe-shuffled"}
    assert {n: k for n, k in seen.items() if k} == {"promoe": {1}, "moe": {1}, "random": {1}, "promoe-shuffled": {1}}


def test_fewshot_rows_are_scored_with_eval_top_k(tiny_data_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(tiny_data_root, tmp_path)
    seen: dict[str, set[int]] = {}
    monkeypatch.setattr(conditions, "run_fewshot", lambda models, variants, *a, **k: _spy(seen)(variants))
    with pytest.raises(Scored):
        conditions.fewshot(ctx, registry.ROWS["fewshot"], ["moe", "promoe"])
    assert seen == {"moe-fewshot": {1}, "promoe-fewshot": {1}}
