"""promoe.analysis.significance: significance.json and seeds.json over every row of a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promoe.analysis.rundata import load_run
from promoe.analysis.significance import seed_summary
from promoe.analysis.stats import routing_similarity
from tests.analysis.helpers import ABLATIONS, ALL_ROWS, PARAPHRASED, AnalysedRun, common_diff


def _sig(every_row: AnalysedRun) -> dict:
    return json.loads((every_row.run / "significance.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"{c} in significance.json"))


def test_models_and_paired_tests_cover_every_row(every_row: AnalysedRun) -> None:
    sig = _sig(every_row)
    assert list(sig["models"]) == list(ALL_ROWS)
    assert set(sig["paired"]) == set(ALL_ROWS) - {"promoe"}
    assert sig["paired"]["promoe-paraphrase"]["rougeL"]["n_tasks"] == len(PARAPHRASED)
    for tests in sig["paired"].values():
        for t in tests.values():
            assert t["p_wilcoxon"] <= t["p_wilcoxon_holm"] <= 1
    data = load_run(every_row.run)  # routing_similarity's own properties: tests/analysis/test_stats.py
    assert sig["n_perm"] == 300 and sig["routing_similarity"] == routing_similarity(
        data.routing, data.embeddings, data.task_categories(), keep=data.test_tasks, n_perm=300)


def test_ablations_are_row_minus_promoe_over_common_tasks(every_row: AnalysedRun) -> None:
    sig, per_task = _sig(every_row), every_row.per_task
    assert list(sig["ablations"]) == ["moe", *ABLATIONS]
    for m, tests in sig["ablations"].items():
        for metric in ("rougeL", "exact_match"):
            diff, n = common_diff(per_task[m], per_task["promoe"], metric)
            t = tests[metric]
            assert t["diff"] == pytest.approx(diff) and t["n_tasks"] == n
            assert t["mean"] - t["reference_mean"] == pytest.approx(diff)
            assert t["low"] <= t["diff"] <= t["high"]
    assert sig["ablations"]["promoe-paraphrase"]["rougeL"]["n_tasks"] == len(PARAPHRASED)
    assert sig["ablations"]["promoe-paraphrase"]["rougeL"]["reference_mean"] == pytest.approx(
        np.mean([per_task["promoe"][t]["rougeL"] for t in PARAPHRASED]))


def test_zero_vs_in_context_vs_few_shot(every_row: AnalysedRun) -> None:
    sig, per_task = _sig(every_row), every_row.per_task
    zf = sig["zero_vs_few_shot"]
    assert list(zf) == ["backbone", "dense", "moe", "promoe"]
    assert zf["backbone"]["fewshot"] is None and zf["backbone"]["promoe_minus_fewshot"] is None
    assert zf["dense"]["icl"] == sig["models"]["dense-icl"]["rougeL_instance"]
    for base in ("dense", "moe", "promoe"):
        for k in ("icl", "fewshot"):
            diff, _ = common_diff(per_task["promoe"], per_task[f"{base}-{k}"], "rougeL")
            assert zf[base][f"promoe_minus_{k}"]["rougeL"]["diff"] == pytest.approx(diff)


def test_seed_summary_orders_rows_and_counts_seeds() -> None:
    seeds = {"0": {"promoe": {"rougeL": 30.0, "exact_match": 10.0}, "moe": {"rougeL": 20.0, "exact_match": 5.0}},
             "1": {"promoe": {"rougeL": 34.0, "exact_match": 14.0}}}
    out = seed_summary(seeds)
    assert list(out) == ["moe", "promoe"]  # report order, not file order
    assert out["promoe"]["seeds"] == ["0", "1"] and out["moe"]["seeds"] == ["0"]
    assert out["promoe"]["rougeL"]["mean"] == pytest.approx(32.0) and out["moe"]["exact_match"]["n"] == 1
