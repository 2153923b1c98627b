"""Significance tests over tasks, and the analysis/report regenerated from a run folder's files."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from promoe.analysis import analyze
from promoe.io import write_json
from promoe.metrics import Reference, score
from promoe.model.moe import RoutingInfo
from promoe.model.router import RouterOutput
from promoe.model.stats import RoutingStats
from promoe.significance import aggregate_seeds, bootstrap_ci, paired_test

PNG = b"\x89PNG\r\n\x1a\n"


def _scores(n: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"task{i:03d}": float(rng.uniform(0, 100)) for i in range(n)}


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_contains_mean_and_is_deterministic() -> None:
    s = _scores(40)
    ci = bootstrap_ci(s, seed=3)
    assert ci["n_tasks"] == 40
    assert ci["mean"] == pytest.approx(np.mean(list(s.values())))
    assert ci["low"] < ci["mean"] < ci["high"]
    assert bootstrap_ci(s, seed=3) == ci
    assert bootstrap_ci(s, seed=4) != ci


def test_bootstrap_ci_shrinks_with_more_tasks() -> None:
    small, large = bootstrap_ci(_scores(10)), bootstrap_ci(_scores(200))
    assert large["high"] - large["low"] < 0.6 * (small["high"] - small["low"])


def test_bootstrap_ci_constant_scores_is_a_point() -> None:
    x = 100 / 3
    ci = bootstrap_ci({f"t{i}": x for i in range(17)})
    assert ci["mean"] == ci["low"] == ci["high"] == x


def test_bootstrap_ci_weighted_is_the_instance_mean() -> None:
    s = {"a": 10.0, "b": 50.0, "c": 90.0}
    ci = bootstrap_ci(s, weights={"a": 1, "b": 1, "c": 8})
    assert ci["mean"] == pytest.approx((10 + 50 + 8 * 90) / 10)
    assert ci["low"] <= ci["mean"] <= ci["high"]


def test_bootstrap_ci_is_fast() -> None:
    s = _scores(119)
    bootstrap_ci(s)
    t0 = time.perf_counter()
    bootstrap_ci(s)
    assert time.perf_counter() - t0 < 0.05


# ------------------------------------------------------------------------------------------ paired test


def test_paired_test_identical_models() -> None:
    s = _scores(25)
    t = paired_test(s, dict(s))
    assert t["diff"] == t["low"] == t["high"] == 0.0
    assert t["p_bootstrap"] == 1.0 and t["p_wilcoxon"] == 1.0
    assert (t["wins"], t["losses"], t["ties"], t["n_tasks"]) == (0, 0, 25, 25)


def test_paired_test_clearly_better_model() -> None:
    b = _scores(30)
    a = {k: v + 10 for k, v in b.items()}
    t = paired_test(a, b)
    assert t["diff"] == pytest.approx(10.0)
    assert t["low"] > 0
    assert t["p_bootstrap"] < 0.01 and t["p_wilcoxon"] < 0.01
    assert (t["wins"], t["losses"], t["ties"]) == (30, 0, 0)


def test_paired_test_uses_shared_tasks_only() -> None:
    a = {"t1": 50.0, "t2": 60.0, "only_a": 100.0}
    b = {"t1": 40.0, "t2": 60.0, "only_b": 0.0}
    t = paired_test(a, b)
    assert t["n_tasks"] == 2
    assert t["diff"] == pytest.approx(5.0)
    assert (t["wins"], t["losses"], t["ties"]) == (1, 0, 1)
    with pytest.raises(ValueError, match="share no task"):
        paired_test({"x": 1.0}, {"y": 1.0})


def test_aggregate_seeds_matches_hand_computation() -> None:
    vals = [30.0, 32.0, 34.0, 36.0]
    mean, std = 33.0, math.sqrt(sum((v - 33.0) ** 2 for v in vals) / 3)
    half = stats.t.ppf(0.975, df=3) * std / 2
    agg = aggregate_seeds(vals)
    assert agg["n"] == 4
    assert agg["mean"] == pytest.approx(mean) and agg["std"] == pytest.approx(std)
    assert agg["low"] == pytest.approx(mean - half) and agg["high"] == pytest.approx(mean + half)
    assert aggregate_seeds([12.5]) == {"mean": 12.5, "std": 0.0, "low": 12.5, "high": 12.5, "n": 1}


# ------------------------------------------------------------------------------------------ analyze()

TASKS = {f"task{i}_toy": ("Title Generation" if i < 3 else "Textual Entailment") for i in range(6)}


def _references() -> list[Reference]:
    return [Reference(id=f"{t}-{j}", references=(f"answer {t} {j}", "yes"), task_id=t, task_category=c)
            for t, c in TASKS.items() for j in range(3)]


def _write_scores(run_dir: Path, skill: dict[str, float]) -> dict[str, dict]:
    """Score made-up models: each instance is answered right with probability ``skill`` (fixed rng)."""
    refs, out = _references(), {}
    rng = np.random.default_rng(0)
    for model, p in skill.items():
        preds = {r.id: r.references[0] if rng.random() < p else "wrong words here" for r in refs}
        out[model] = score(preds, refs)
        write_json(run_dir / "scores" / f"{model}.json", out[model])
    return out


def _write_routing(path: Path, n_layers: int = 2, n_experts: int = 4) -> None:
    stats_ = RoutingStats(n_layers, n_experts)
    g = torch.Generator().manual_seed(0)
    names = list(TASKS)
    for batch in range(3):
        keys = names[2 * batch: 2 * batch + 2]
        routing = []
        for layer in range(n_layers):
            logits = torch.randn(2, 5, n_experts, generator=g)
            probs = logits.softmax(-1)
            weights, indices = probs.topk(2, dim=-1)
            mask = torch.ones(2, 5)
            mask[1, 3:] = 0
            routing.append(RoutingInfo(layer=layer, mask=mask, router=RouterOutput(
                weights=weights / weights.sum(-1, keepdim=True), indices=indices, probs=probs, logits=logits)))
        stats_.update(routing, keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    stats_.save(path)


def _write_metrics(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"step": s, "loss": 3.0 / s, "lm_loss": 2.9 / s, "aux_loss": 0.1, "lr": 1e-4} for s in range(1, 21)]
    lines += [{"step": 10, "val_loss": 0.5}, {"step": 20, "val_loss": 0.3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def _links(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def test_analyze_full_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    scores = _write_scores(run, {"copy_input": 0.2, "moe": 0.5, "promoe": 0.9})
    write_json(run / "splits.json", {"train": [], "val": [], "test": list(TASKS)})
    for m in ("moe", "promoe"):
        _write_routing(run / "routing" / f"{m}.npz")
        _write_metrics(run / "train" / m / "metrics.jsonl")
    (run / "REPORT_extra.md").write_text("## Stage times\n\ndata 1.0 s\n")
    for seed, skill in (("0", 0.9), ("1", 0.7), ("2", 0.8)):
        _write_scores(run / "seeds" / seed, {"moe": 0.5, "promoe": skill})

    out = analyze(run, n_boot=2000)

    sig = json.loads((run / "significance.json").read_text())
    assert sig["reference"] == "promoe"
    assert set(sig["models"]) == {"copy_input", "moe", "promoe"}
    assert set(sig["paired"]) == {"copy_input", "moe"}
    for key in ("rougeL", "exact_match", "rougeL_instance", "exact_match_instance"):
        ci = sig["models"]["promoe"][key]
        assert ci["low"] <= ci["mean"] <= ci["high"] and ci["n_tasks"] == 6
    assert sig["models"]["promoe"]["rougeL_instance"]["mean"] == pytest.approx(scores["promoe"]["rougeL"], abs=1e-3)
    assert sig["paired"]["copy_input"]["rougeL"]["diff"] > 0
    assert set(sig["per_category_rougeL"]["moe"]) == {"title_generation", "textual_entailment"}
    seeds = json.loads((run / "seeds.json").read_text())
    assert seeds["promoe"]["rougeL"]["n"] == 3 and seeds["moe"]["rougeL"]["std"] == 0.0

    figs = {Path(p).name for p in out["figures"]}
    assert figs == {"overall.png", "per_category_rougeL.png", "expert_utilisation_moe.png",
                    "expert_utilisation_promoe.png", "routing_entropy.png", "training_curves.png"}
    for name in figs:
        assert (run / "figures" / name).read_bytes()[:8] == PNG

    report = (run / "REPORT.md").read_text()
    for heading in ("## Headline", "## Paired tests", "## ROUGE-L per category", "## Routing", "## Seeds"):
        assert heading in report
    assert "| promoe |" in report and "title generation" in report
    links = _links(report)
    assert sorted(Path(p).name for p in links) == sorted(figs)
    assert all((run / p).is_file() for p in links)
    assert report.rstrip().endswith("data 1.0 s")
    assert not list(run.rglob("*.tmp"))


def test_analyze_scores_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write_scores(run, {"copy_demo": 0.3, "backbone": 0.6})
    out = analyze(run, n_boot=500)
    sig = json.loads((run / "significance.json").read_text())
    assert sig["reference"] == "copy_demo"  # no promoe: the first model in the standard order
    assert set(sig["paired"]) == {"backbone"}
    assert out["seeds"] is None and not (run / "seeds.json").exists()
    assert sorted(Path(p).name for p in out["figures"]) == ["overall.png", "per_category_rougeL.png"]
    report = (run / "REPORT.md").read_text()
    assert "## Routing" not in report and "## Seeds" not in report
    assert all((run / p).is_file() for p in _links(report))
    assert "routing" in report.split("Not drawn:")[1]


def test_analyze_without_scores_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scores"):
        analyze(tmp_path)
