"""promoe.analysis (the package): analyze() and `promoe analyze` on whole run folders, and a router row
added by one registration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from promoe.analysis import analyze
from promoe.analysis import expert_figures as erf
from promoe.analysis import routing_figures as rf
from promoe.cli import main as cli_main
from promoe.registry import Row, register, unregister
from tests.analysis.helpers import (
    N_EXPERTS,
    N_LAYERS,
    PNG,
    SYN_TASKS,
    TASKS,
    AnalysedRun,
    links,
    save_routing,
    synthetic_run,
    write_metrics,
    write_routing,
    write_scores,
)


def test_analyze_full_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    scores = write_scores(run, {"copy_input": 0.2, "moe": 0.5, "promoe": 0.9})
    (run / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": list(TASKS)}))
    for m in ("moe", "promoe"):
        write_routing(run / "routing" / f"{m}.npz")
        write_metrics(run / "train" / m / "metrics.jsonl")
    (run / "REPORT_extra.md").write_text("## Stage times\n\ndata 1.0 s\n")
    for seed, skill in (("0", 0.9), ("1", 0.7), ("2", 0.8)):
        write_scores(run / "seeds" / seed, {"moe": 0.5, "promoe": skill})

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
    assert figs == {"answer.png", "overall.png", "per_category_rougeL.png", "expert_utilisation_moe.png",
                    "expert_utilisation_promoe.png", "routing_entropy.png", "routing_map.png", "training_curves.png"}
    assert "task_embeddings.npz" in out["skipped"]["routing_vs_description"]
    assert "per_category_rougeL_variants" in out["skipped"]
    for name in figs:
        assert (run / "figures" / name).read_bytes()[:8] == PNG

    report = (run / "REPORT.md").read_text()
    for heading in ("## Headline", "## Paired tests", "## ROUGE-L per category", "## Routing", "## Seeds"):
        assert heading in report
    # the answer first: before every table, with its figure
    assert report.index("## The answer") < report.index("figures/answer.png") < report.index("## Headline")
    assert "| promoe |" in report and "title generation" in report
    found = links(report)
    assert sorted(Path(p).name for p in found) == sorted(figs)
    assert all((run / p).is_file() for p in found)
    assert report.rstrip().endswith("data 1.0 s")
    assert not list(run.rglob("*.tmp"))


def test_analyze_scores_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_scores(run, {"copy_demo": 0.3, "backbone": 0.6})
    out = analyze(run, n_boot=500)
    sig = json.loads((run / "significance.json").read_text())
    assert sig["reference"] == "copy_demo"  # no promoe: the first model in the standard order
    assert set(sig["paired"]) == {"backbone"}
    assert out["seeds"] is None and not (run / "seeds.json").exists()
    assert sorted(Path(p).name for p in out["figures"]) == ["overall.png", "per_category_rougeL.png"]
    report = (run / "REPORT.md").read_text()
    assert "## Routing" not in report and "## Seeds" not in report
    assert all((run / p).is_file() for p in links(report))
    assert "routing" in report.split("Not drawn:")[1]


def test_analyze_without_task_embeddings_skips_those_figures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    synthetic_run(run, rows=("copy_demo", "moe", "promoe", "uniform"), embeddings=False)
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


def test_analyze_without_scores_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scores"):
        analyze(tmp_path)


def test_cli_analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    synthetic_run(run, rows=("copy_demo", "promoe", "promoe-empty"), embeddings=False)
    assert cli_main(["analyze", "--run", str(run), "--n-boot", "100", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'REPORT.md'}"
    sig = json.loads((run / "significance.json").read_text())
    assert (sig["n_boot"], sig["seed"]) == (100, 3) and list(sig["ablations"]) == ["promoe-empty"]
    assert cli_main(["analyze", "--run", str(tmp_path / "missing")]) == 2
    assert "scores" in capsys.readouterr().err


@pytest.mark.parametrize("needs", [("moe",), ("moe", "moe_profiles")], ids=["static", "from_profiles"])
def test_a_registered_router_row_is_analysed_with_no_other_edit(
        needs: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One registration puts a router row in the routing group, the paired tests and the routing
    figures; built from the training tasks' routing profiles, it also gets a heatmap, a similarity
    panel and a place on the map (the rule of :mod:`promoe.analysis.rows`)."""
    drawn: dict[str, list[str]] = {}

    def spy(name: str, rows_of):  # record which rows a figure function was given
        original = getattr(rf, name)

        def wrapped(*args, **kwargs) -> Figure | None:
            drawn.setdefault(name, []).extend(rows_of(*args))
            return original(*args, **kwargs)
        monkeypatch.setattr(rf, name, wrapped)

    spy("fig_routing_entropy", lambda routing, colors: list(routing))
    spy("fig_expert_utilisation", lambda model, routing, task_cat: [model])
    spy("fig_routing_vs_description", lambda sims, numbers: list(sims))
    spy("fig_routing_map", lambda routing, task_cat, keep=None: list(routing))
    register(Row(name="always0", kind="router", title="always expert 0", build=lambda ctx: None,
                 select="compare.routers", needs=needs), replace=True)
    try:
        run = tmp_path / "run"
        synthetic_run(run, rows=("copy_demo", "moe", "promoe", "knn", "uniform", "always0", "promoe-empty"))
        hist = np.zeros((len(SYN_TASKS), N_LAYERS, N_EXPERTS))
        hist[..., 0] = 1.0
        save_routing(run / "routing" / "always0.npz", hist)
        out = analyze(run, n_boot=200)
    finally:
        unregister("always0")

    sig = json.loads((run / "significance.json").read_text())
    assert list(sig["models"]) == ["copy_demo", "moe", "promoe", "knn", "uniform", "always0", "promoe-empty"]
    assert "always0" in sig["paired"] and sig["paired"]["always0"]["rougeL"]["n_tasks"] == len(SYN_TASKS)
    assert "always0" not in sig["ablations"]
    assert sig["routing_similarity"]["always0"]["spearman_rho"] is None  # every task routed the same way
    report = (run / "REPORT.md").read_text()
    zero_shot = report.split("### Zero-shot models")[1].split("###")[0]
    routing_group = report.split("### Routing baselines")[1].split("###")[0]
    assert "| always0 |" in routing_group and "| always0 |" not in zero_shot
    paired = report[report.index("## Paired tests"):report.index("## Ablations:")]
    assert "| always0 | ROUGE-L |" in paired and "| always0 | Exact match |" in paired
    routing = report[report.index("## Routing\n"):]
    assert "| always0 | 2 | 6 |" in routing and "| always0 | 24 | n/a |" in routing
    figs = {Path(p).name for p in out["figures"]}
    assert "always0" in drawn["fig_routing_entropy"]
    from_profiles = "moe_profiles" in needs
    assert ("always0" in drawn["fig_expert_utilisation"]) == from_profiles
    assert ("expert_utilisation_always0.png" in figs) == from_profiles
    assert ("always0" in drawn["fig_routing_vs_description"]) == from_profiles
    assert ("always0" in drawn["fig_routing_map"]) == from_profiles
    assert drawn["fig_routing_map"][:2] == ["promoe", "knn"]


def test_specialised_experts_add_a_section_and_a_figure_and_nothing_else(
        specialised: tuple[AnalysedRun, AnalysedRun]) -> None:
    """The same run with and without experts/: significance.json and every other figure byte-identical,
    REPORT.md differs only by the section and the figure's entry; without experts/ no trace of them."""
    with_experts, plain = specialised
    a, b = with_experts.run, plain.run
    assert (a / "significance.json").read_bytes() == (b / "significance.json").read_bytes()
    figs = sorted(p.name for p in (b / "figures").iterdir())
    assert sorted(p.name for p in (a / "figures").iterdir()) == sorted([*figs, "expert_cluster_matrix.png"])
    for name in figs:
        assert (a / "figures" / name).read_bytes() == (b / "figures" / name).read_bytes(), name
    assert with_experts.out["skipped"] == plain.out["skipped"]
    plain_report, report = (b / "REPORT.md").read_text(), (a / "REPORT.md").read_text()
    assert "Specialised experts" not in plain_report and "expert_cluster" not in plain_report
    section = report[report.index("## Specialised experts"):report.index("## Figures")]
    entry = ("![expert x cluster matrix](figures/expert_cluster_matrix.png)\n\n"
             f"{erf.FIGURE_TEXT['expert_cluster_matrix']}\n\n")
    assert entry in report
    assert report.replace(section, "").replace(entry, "") == plain_report


def test_a_missing_score_file_is_named_and_the_reference_is_never_swapped(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    write_scores(run, {"copy_demo": 0.3, "promoe": 0.6, "moe": 0.5})
    (run / "predictions").mkdir()
    for row in ("promoe", "moe"):
        (run / "predictions" / f"{row}.jsonl").write_text('{"id": "x", "prediction": "y"}\n')
    (run / "scores" / "moe.json").unlink()
    with caplog.at_level("WARNING"):
        analyze(run, n_boot=100)
    assert "row moe is left out" in caplog.text and "scores/moe.json is not" in caplog.text
    before = (run / "significance.json").read_bytes()
    (run / "scores" / "promoe.json").unlink()  # the reference row: the paired tests would silently change
    assert cli_main(["analyze", "--run", str(run), "--n-boot", "100"]) == 2
    assert (run / "significance.json").read_bytes() == before


def test_a_nan_in_a_score_file_never_reaches_a_statistic(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_scores(run, {"copy_demo": 0.3, "promoe": 0.6})
    path = run / "scores" / "promoe.json"
    s = json.loads(path.read_text())
    next(iter(s["per_task"].values()))["rougeL"] = float("nan")
    path.write_text(json.dumps(s))
    with pytest.raises(ValueError, match="non-finite"):
        analyze(run, n_boot=100)
