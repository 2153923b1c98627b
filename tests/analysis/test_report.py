"""promoe.analysis.report: REPORT.md's sections, in order, with every row where it belongs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.analysis.helpers import ABLATIONS, ALL_ROWS, AnalysedRun, links


def test_report_of_every_row(every_row: AnalysedRun) -> None:
    run, out = every_row.run, every_row.out
    sig = json.loads((run / "significance.json").read_text())
    rs = sig["routing_similarity"]
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
    figs = {Path(p).name for p in out["figures"]}
    assert sorted(Path(p).name for p in links(report)) == sorted(figs)


def test_ablation_rows_say_what_the_router_sees(every_row: AnalysedRun) -> None:
    """The "router sees" column is each ablation's registry title; `moe` is the context row."""
    report = (every_row.run / "REPORT.md").read_text()
    ablation = report[report.index("## Ablations:"):report.index("## Zero-shot vs")]
    assert "| moe | nothing (static token router) |" in ablation
    assert "| promoe-shuffled | another task's description |" in ablation
    assert "| promoe-paraphrase | a paraphrase (tasks that have one) |" in ablation
