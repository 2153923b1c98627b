"""promoe.analysis.report: REPORT.md's sections, in order, with every row where it belongs."""

from __future__ import annotations

import json
from pathlib import Path

from promoe.analysis import analyze
from tests.analysis.helpers import (
    ABLATIONS,
    ALL_ROWS,
    SYN_TASKS,
    AnalysedRun,
    links,
    synthetic_run,
    write_experts,
    write_scores,
)


def test_report_of_every_row(every_row: AnalysedRun) -> None:
    run, out = every_row.run, every_row.out
    sig = json.loads((run / "significance.json").read_text())
    rs = sig["routing_similarity"]
    report = (run / "REPORT.md").read_text()
    headings = ["## Headline", "### Zero-shot models", "### Routing baselines", "### Ablations of",
                "### In-context", "## Paired tests", "## Ablations:", "## Zero-shot vs the conditions",
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
    figs = {Path(p).name for p in out["figures"]}
    assert sorted(Path(p).name for p in links(report)) == sorted(figs)


def test_ablation_rows_say_what_the_router_sees(every_row: AnalysedRun) -> None:
    """The "router sees" column is each ablation's registry title; `moe` is the context row."""
    report = (every_row.run / "REPORT.md").read_text()
    ablation = report[report.index("## Ablations:"):report.index("## Zero-shot vs")]
    assert "| moe | nothing (static token router) |" in ablation
    assert "| promoe-shuffled | another task's description |" in ablation
    assert "| promoe-paraphrase | a paraphrase (tasks that have one) |" in ablation


def test_specialised_experts_section(specialised: tuple[AnalysedRun, AnalysedRun]) -> None:
    """Clusters from clusters.json, the matrix with each column's minimum in bold, before the figures."""
    report = (specialised[0].run / "REPORT.md").read_text()
    assert report.index("\n## Routing\n") < report.index("\n## Specialised experts\n") < report.index("\n## Figures\n")
    section = report[report.index("## Specialised experts"):report.index("## Figures")]
    assert "clusters by k-means of the training tasks' description embeddings" in section
    assert "| cluster | training tasks | validation tasks | test tasks |" in section
    assert "| 0 | 3 | 2 | 8 |" in section and "| 3 | 1 | 0 | 0 |" in section
    assert "| expert | cluster 0 | cluster 1 | cluster 2 | cluster 3 |" in section
    assert "| 0 | **1.100** | 2.500 | **1.900** | n/a |" in section
    assert "| 1 | 2.200 | **1.400** | 2.400 | n/a |" in section
    assert "| 2 | 2.000 | 2.100 | 2.050 | n/a |" in section
    assert "| validation examples | 6 | 3 | 3 | 0 |" in section
    assert "Own expert best on 2 of 3 clusters with validation data." in section
    assert "mean over pairs of experts and over MoE layers; 0 for identical copies): weights 0.100; outputs on " \
           "the validation examples' tokens 0.300." in section
    assert "![expert x cluster matrix](figures/expert_cluster_matrix.png)" in report


def test_specialised_experts_without_matrix(tmp_path: Path) -> None:
    """A run stopped during the specialisation: the clusters, a word on the matrix, no figure."""
    run = tmp_path / "run"
    write_scores(run, {"moe": 0.5, "promoe": 0.9})
    write_experts(run)
    (run / "experts" / "matrix.json").unlink()
    out = analyze(run, n_boot=100)
    report = (run / "REPORT.md").read_text()
    section = report[report.index("## Specialised experts"):report.index("## Figures")]
    assert "| 1 | 2 | 1 | 8 |" in section and "not measured (no `experts/matrix.json`" in section
    assert "Own expert best" not in section
    assert out["skipped"]["expert_cluster_matrix"] == "no experts/matrix.json"
    assert "expert_cluster_matrix (no experts/matrix.json)" in report


def test_grouped_tasks_are_resampled_together_and_the_report_says_so(tmp_path: Path) -> None:
    """A run whose splits.json groups its test tasks (pairs here): every interval resamples the groups, and
    REPORT.md names the unit; no share of a headroom it does not detect; the MDE is not what a CI rules out."""
    run = tmp_path / "run"
    synthetic_run(run, rows=("copy_demo", "moe", "promoe", "uniform", "oracle"), embeddings=False)
    groups = {t: f"source:d{i // 2}" for i, t in enumerate(SYN_TASKS)}
    (run / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": SYN_TASKS, "test_groups": groups}))
    analyze(run, n_boot=200)
    sig = json.loads((run / "significance.json").read_text())
    assert sig["resampling"] == {"unit": "group", "source": "splits.json test_groups", "n_groups": 12,
                                 "n_tasks": 24, "kinds": {"source": 12}}
    assert sig["paired"]["moe"]["rougeL"]["unit"] == "group" and sig["paired"]["moe"]["rougeL"]["n_units"] == 12
    assert sig["models"]["promoe"]["rougeL_instance"]["unit"] == "group"
    report = (run / "REPORT.md").read_text()
    assert "every bootstrap draws whole groups (12 groups over 24 test tasks, `splits.json`'s `test_groups`: 12 " \
           "by source dataset (SNI `Source`))" in report
    room = sig["headroom"]["rougeL"]
    assert room["headroom"]["low"] < 0 < room["headroom"]["high"] and not room["headroom"]["detected"]
    assert "| ROUGE-L | share recovered by promoe | not reported: headroom not detected (CI spans 0) |" in report
    assert "the headroom is not detected, so no share of it is reported" in report
    assert "rules out differences of about the MDE" not in report
    assert "The CI's ends say which differences the data rule out" in report


def test_a_run_without_groups_resamples_tasks_and_says_why(every_row: AnalysedRun) -> None:
    sig = json.loads((every_row.run / "significance.json").read_text())
    assert sig["resampling"]["unit"] == "task" and sig["paired"]["moe"]["rougeL"]["unit"] == "task"
    assert "names no groups of related tasks (a run from before they were written)" in \
           (every_row.run / "REPORT.md").read_text()


def test_the_ceiling_is_reported_apart_from_the_results(tmp_path: Path) -> None:
    run = tmp_path / "run"
    synthetic_run(run, rows=("moe", "promoe", "uniform", "oracle", "oracle_insample"), embeddings=False)
    analyze(run, n_boot=100)
    report = (run / "REPORT.md").read_text()
    headline = report[report.index("## Headline"):report.index("## Paired tests")]
    assert "oracle_insample" not in headline and "oracle_insample" not in report[report.index("## Paired tests"):
                                                                                  report.index("## Oracle headroom")]
    room = report[report.index("## Oracle headroom"):]
    assert "| ROUGE-L | ceiling: oracle_insample − uniform |" in room and "Ceiling, never a result" in room
