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
from promoe.cli import main as cli_main
from promoe.figures import _colors, model_key, row_group
from promoe.io import write_json
from promoe.metrics import Reference, category_key, score
from promoe.model.moe import RoutingInfo
from promoe.model.router import RouterOutput
from promoe.model.stats import RoutingStats
from promoe.routing_figures import mantel_spearman
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
                    "expert_utilisation_promoe.png", "routing_entropy.png", "routing_map.png", "training_curves.png"}
    assert "task_embeddings.npz" in out["skipped"]["routing_vs_description"]
    assert "per_category_rougeL_variants" in out["skipped"]
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


# ------------------------------------------------------------------------------------------ every row

ZERO_SHOT = ("copy_input", "copy_demo", "backbone", "dense", "moe", "promoe")
ROUTERS = ("knn", "skill", "uniform", "random")
ABLATIONS = ("promoe-shuffled", "promoe-empty", "promoe-random_text", "promoe-category", "promoe-paraphrase")
ADAPTED = ("backbone-icl", "dense-icl", "moe-icl", "promoe-icl", "dense-fewshot", "moe-fewshot", "promoe-fewshot")
ALL_ROWS = ZERO_SHOT + ROUTERS + ABLATIONS + ADAPTED
CATS = ("Title Generation", "Textual Entailment", "Keyword Tagging", "Data to Text")
SYN_TASKS = [f"task{i:03d}_syn" for i in range(24)]  # task i is in category CATS[i % len(CATS)]
PARAPHRASED = SYN_TASKS[:10]
N_LAYERS, N_EXPERTS = 2, 6


def _embeddings(rng: np.random.Generator) -> np.ndarray:
    """Unit vectors clustered by category."""
    centres = rng.normal(size=(len(CATS), 16))
    e = np.stack([centres[i % len(CATS)] + 0.8 * rng.normal(size=16) for i in range(len(SYN_TASKS))])
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def _save_routing(path: Path, hist: np.ndarray) -> None:
    """A routing npz as RoutingStats.save writes it, from given task histograms (n_tasks, L, E)."""
    load = hist.sum(0) * 100
    share = load / load.sum(1, keepdims=True)
    probs = np.clip(hist.mean(0), 1e-12, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, load=load, tokens=np.full(N_LAYERS, 500.0), load_cv=share.std(1) / share.mean(1),
             token_entropy=-(probs * np.log(probs)).sum(1), task_names=np.array(SYN_TASKS, dtype=str),
             task_histograms=hist)


def _synthetic_run(run: Path, rows: tuple[str, ...] = ALL_ROWS, embeddings: bool = True) -> dict[str, dict]:
    """Per-task scores of every row (promoe-paraphrase on PARAPHRASED only), routing npz for the MoE rows:
    promoe, knn, skill and moe route by the description embedding, random and promoe-shuffled do not."""
    rng = np.random.default_rng(0)
    per_task = {}
    for k, m in enumerate(rows):
        tasks = PARAPHRASED if m == "promoe-paraphrase" else SYN_TASKS
        per_task[m] = {t: {"category": category_key(CATS[SYN_TASKS.index(t) % len(CATS)]), "n": int(rng.integers(2, 6)),
                           "rougeL": float(rng.uniform(0, 60) + k), "exact_match": float(rng.choice([0.0, 50.0, 100.0]))}
                       for t in tasks}
        write_json(run / "scores" / f"{m}.json", {"rougeL": 0.0, "exact_match": 0.0, "per_task": per_task[m]})
    write_json(run / "splits.json", {"train": [], "val": [], "test": SYN_TASKS})
    emb, n = _embeddings(rng), len(SYN_TASKS)
    if embeddings:
        cats = [CATS[i % len(CATS)] for i in range(n)] + [CATS[0]]
        np.savez(run / "task_embeddings.npz", task_names=np.array(SYN_TASKS + ["task999_train"], dtype=str),
                 embeddings=np.concatenate([emb, emb[:1]]), categories=np.array(cats, dtype=str),
                 split=np.array(["test"] * n + ["train"], dtype=str))
    follow = {}
    for m in ("moe", "promoe", "knn", "skill", "promoe-icl"):
        w = rng.normal(size=(N_LAYERS, N_EXPERTS, emb.shape[1]))
        logits = 4.0 * np.einsum("led,td->tle", w, emb)
        follow[m] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    hists = follow | {"uniform": np.full((n, N_LAYERS, N_EXPERTS), 1 / N_EXPERTS),
                      "random": rng.dirichlet(np.ones(N_EXPERTS), size=(n, N_LAYERS)),
                      "promoe-shuffled": follow["promoe"][rng.permutation(n)]}
    for m, h in hists.items():
        if m in rows:
            _save_routing(run / "routing" / f"{m}.npz", h)
    return per_task


def _common_diff(a: dict[str, dict], b: dict[str, dict], metric: str) -> tuple[float, int]:
    common = sorted(set(a) & set(b))
    return float(np.mean([a[t][metric] - b[t][metric] for t in common])), len(common)


def test_row_order_groups_and_colours() -> None:
    shuffled = list(reversed(ALL_ROWS)) + ["zzz", "promoe-new", "dense-icl2"]
    assert sorted(shuffled, key=model_key) == [*ZERO_SHOT, *ROUTERS, *ABLATIONS, "promoe-new", *ADAPTED,
                                               "dense-icl2", "zzz"]
    assert [row_group(m) for m in ("promoe-new", "skill-icl", "zzz")] == ["ablation", "adaptation", "other"]
    colours = _colors(shuffled)
    assert len({tuple(c) for c in colours.values()}) == len(shuffled)
    assert _colors(["promoe", "promoe-icl"])["promoe-icl"] == colours["promoe-icl"]  # stable across runs


def test_mantel_spearman_matches_scipy_and_detects_structure() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 5))
    a = x @ x.T
    b = a + 0.5 * rng.normal(size=a.shape)
    b = (b + b.T) / 2
    i, j = np.triu_indices(20, 1)
    rho, p = mantel_spearman(a, b, n_perm=300)
    assert rho == pytest.approx(stats.spearmanr(a[i, j], b[i, j]).statistic)
    assert rho > 0.5 and p == pytest.approx(1 / 301)
    noise = rng.normal(size=a.shape)
    rho0, p0 = mantel_spearman(a, (noise + noise.T) / 2, n_perm=300)
    assert abs(rho0) < 0.2 and p0 > 0.05
    assert mantel_spearman(np.ones((5, 5)), a[:5, :5], n_perm=10) == (None, None)


def test_analyze_every_row(tmp_path: Path) -> None:
    run = tmp_path / "run"
    per_task = _synthetic_run(run)
    out = analyze(run, n_boot=300)
    sig = json.loads((run / "significance.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"{c} in significance.json"))

    assert list(sig["models"]) == list(ALL_ROWS)
    assert set(sig["paired"]) == set(ALL_ROWS) - {"promoe"}
    assert sig["paired"]["promoe-paraphrase"]["rougeL"]["n_tasks"] == len(PARAPHRASED)
    for tests in sig["paired"].values():
        for t in tests.values():
            assert t["p_wilcoxon"] <= t["p_wilcoxon_holm"] <= 1

    # ablations: row − promoe over common tasks, hand-computed
    assert list(sig["ablations"]) == ["moe", *ABLATIONS]
    for m, tests in sig["ablations"].items():
        for metric in ("rougeL", "exact_match"):
            diff, n = _common_diff(per_task[m], per_task["promoe"], metric)
            t = tests[metric]
            assert t["diff"] == pytest.approx(diff) and t["n_tasks"] == n
            assert t["mean"] - t["reference_mean"] == pytest.approx(diff)
            assert t["low"] <= t["diff"] <= t["high"]
    assert sig["ablations"]["promoe-paraphrase"]["rougeL"]["n_tasks"] == len(PARAPHRASED)
    assert sig["ablations"]["promoe-paraphrase"]["rougeL"]["reference_mean"] == pytest.approx(
        np.mean([per_task["promoe"][t]["rougeL"] for t in PARAPHRASED]))

    # zero-shot vs in-context vs few-shot
    zf = sig["zero_vs_few_shot"]
    assert list(zf) == ["backbone", "dense", "moe", "promoe"]
    assert zf["backbone"]["fewshot"] is None and zf["backbone"]["promoe_minus_fewshot"] is None
    assert zf["dense"]["icl"] == sig["models"]["dense-icl"]["rougeL_instance"]
    for base in ("dense", "moe", "promoe"):
        for k in ("icl", "fewshot"):
            diff, _ = _common_diff(per_task["promoe"], per_task[f"{base}-{k}"], "rougeL")
            assert zf[base][f"promoe_minus_{k}"]["rougeL"]["diff"] == pytest.approx(diff)

    # routing follows the description embedding for promoe, knn, skill, moe; not for random or shuffled
    rs = sig["routing_similarity"]
    assert set(rs) == {"moe", "promoe", "knn", "skill", "uniform", "random", "promoe-shuffled", "promoe-icl"}
    for m in ("moe", "promoe", "knn", "skill"):
        assert rs[m]["spearman_rho"] > 0.3 and rs[m]["p"] < 0.01, m
        assert rs[m]["same_category_mean"] > rs[m]["diff_category_mean"]
        assert rs[m]["n_tasks"] == 24 and rs[m]["n_pairs"] == 24 * 23 // 2  # the train task is left out
    for m in ("random", "promoe-shuffled"):
        assert rs[m]["spearman_rho"] < 0.15, m
    assert rs["uniform"]["spearman_rho"] is None and rs["uniform"]["same_category_mean"] == pytest.approx(1.0)

    figs = {Path(p).name for p in out["figures"]}
    assert figs == {"overall.png", "per_category_rougeL.png", "per_category_rougeL_variants.png",
                    *(f"expert_utilisation_{m}.png" for m in ("moe", "promoe", "knn", "skill")),
                    "routing_entropy.png", "routing_vs_description.png", "routing_map.png"}
    for name in figs:
        assert (run / "figures" / name).read_bytes()[:8] == PNG
    assert set(out["skipped"]) == {"training_curves"}

    report = (run / "REPORT.md").read_text()
    headings = ["## Headline", "### Zero-shot models", "### Routing baselines", "### Ablations of",
                "### In-context", "## Paired tests", "## Ablations:", "## Zero-shot vs in-context vs few-shot",
                "## ROUGE-L per category", "## Routing\n", "### Routing similarity vs description similarity"]
    positions = [report.index("\n" + h) for h in headings]
    assert positions == sorted(positions)
    headline = report[report.index("## Headline"):report.index("## Paired tests")]
    for m in ALL_ROWS:
        assert f"| {m} |" in headline, m
    assert "fewer tasks than the others (24): promoe-paraphrase" in report
    ablation = report[report.index("## Ablations:"):report.index("## Zero-shot vs")]
    assert all(f"| {m} |" in ablation for m in ("moe", *ABLATIONS))
    assert f"{sig['ablations']['promoe-shuffled']['rougeL']['diff']:+.2f}" in ablation
    similarity = report[report.index("### Routing similarity"):]
    assert f"| promoe | 24 | {rs['promoe']['spearman_rho']:+.3f} |" in similarity
    assert "| uniform | 24 | n/a |" in similarity
    assert sorted(Path(p).name for p in _links(report)) == sorted(figs)


def test_analyze_without_task_embeddings_skips_those_figures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _synthetic_run(run, rows=("copy_demo", "moe", "promoe", "uniform"), embeddings=False)
    out = analyze(run, n_boot=200)
    sig = json.loads((run / "significance.json").read_text())
    assert sig["routing_similarity"] == {} and sig["zero_vs_few_shot"] == {}
    assert sig["ablations"] == {}  # moe is context for ablation rows, not a table of its own
    assert "task_embeddings.npz" in out["skipped"]["routing_vs_description"]
    assert "per_category_rougeL_variants" in out["skipped"]
    figs = {Path(p).name for p in out["figures"]}
    assert "routing_map.png" in figs and "routing_vs_description.png" not in figs
    report = (run / "REPORT.md").read_text()
    assert "no `task_embeddings.npz`" in report and "routing_vs_description (no task_embeddings.npz" in report
    assert "## Zero-shot vs" not in report and "Ablations" not in report


def test_analyze_bad_task_embeddings_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _synthetic_run(run, rows=("promoe",), embeddings=False)
    np.savez(run / "task_embeddings.npz", task_names=np.array(["a", "b"]), embeddings=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="task_embeddings.npz.*do not match"):
        analyze(run, n_boot=100)


def test_cli_analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _synthetic_run(run, rows=("copy_demo", "promoe", "promoe-empty"), embeddings=False)
    assert cli_main(["analyze", "--run", str(run), "--n-boot", "100", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'REPORT.md'}"
    sig = json.loads((run / "significance.json").read_text())
    assert (sig["n_boot"], sig["seed"]) == (100, 3) and list(sig["ablations"]) == ["promoe-empty"]
    assert cli_main(["analyze", "--run", str(tmp_path / "missing")]) == 2
    assert "scores" in capsys.readouterr().err
