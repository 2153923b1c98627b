"""promoe.analysis.figures and routing_figures: which figures a run gets, row colours."""

from __future__ import annotations

from pathlib import Path

from promoe.analysis.figures import _colors
from promoe.registry import model_key, row_group
from tests.analysis.helpers import ABLATIONS, ADAPTED, ALL_ROWS, PNG, ROUTERS, ZERO_SHOT, AnalysedRun


def test_row_order_groups_and_colours() -> None:
    shuffled = list(reversed(ALL_ROWS)) + ["zzz", "promoe-new", "dense-icl2"]
    assert sorted(shuffled, key=model_key) == [*ZERO_SHOT, *ROUTERS, *ABLATIONS, "promoe-new", *ADAPTED,
                                               "dense-icl2", "zzz"]
    assert [row_group(m) for m in ("promoe-new", "skill-icl", "zzz")] == ["ablation", "adaptation", "other"]
    colours = _colors(shuffled)
    assert len({tuple(c) for c in colours.values()}) == len(shuffled)
    assert _colors(["promoe", "promoe-icl"])["promoe-icl"] == colours["promoe-icl"]  # stable across runs


def test_every_row_gets_every_figure_but_training_curves(every_row: AnalysedRun) -> None:
    run, out = every_row.run, every_row.out
    figs = {Path(p).name for p in out["figures"]}
    assert figs == {"answer.png", "overall.png", "per_category_rougeL.png", "per_category_rougeL_variants.png",
                    *(f"expert_utilisation_{m}.png" for m in ("moe", "promoe", "knn", "skill")),
                    "routing_entropy.png", "routing_vs_description.png", "routing_map.png"}
    for name in figs:
        assert (run / "figures" / name).read_bytes()[:8] == PNG
    assert set(out["skipped"]) == {"training_curves"}
