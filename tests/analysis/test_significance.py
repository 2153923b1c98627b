"""promoe.analysis.significance: significance.json and seeds.json over every row of a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promoe.analysis.rundata import load_run
from promoe.analysis.significance import headroom, seed_summary
from promoe.analysis.stats import routing_similarity, share_recovered
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


def test_headroom_is_oracle_minus_uniform_and_the_share_each_row_recovers() -> None:
    tasks = [f"t{i}" for i in range(6)]

    def rows(values: list[float], nll: list[float] | None = None) -> dict[str, dict]:
        return {t: {"rougeL": v, "exact_match": v, **({"ref_nll": nll[i]} if nll else {})}
                for i, (t, v) in enumerate(zip(tasks, values, strict=True))}

    uniform, oracle = [10, 20, 30, 10, 20, 30], [30, 40, 50, 30, 40, 50]
    rows_of = {"uniform": rows(uniform, [2.0] * 6), "oracle": rows(oracle, [1.0] * 6),
               "promoe": rows([20, 30, 40, 20, 30, 40], [1.5] * 6),  # half of the headroom
               "moe": rows(uniform, [2.0] * 6),  # none of it
               "copy_input": rows([0] * 6)}  # a heuristic: no model, no share
    out = headroom(rows_of, n_boot=500, seed=0)
    assert set(out) == {"rougeL", "exact_match", "ref_nll"}
    assert out["rougeL"]["headroom"]["diff"] == pytest.approx(20) and out["rougeL"]["headroom"]["n_tasks"] == 6
    rec = out["rougeL"]["recovered"]
    assert set(rec) == {"promoe", "moe"}
    assert rec["promoe"]["share"] == pytest.approx(0.5) and rec["promoe"]["low"] <= 0.5 <= rec["promoe"]["high"]
    assert rec["moe"]["share"] == pytest.approx(0.0)
    assert out["ref_nll"]["headroom"]["diff"] == pytest.approx(-1.0)  # lower is better: the oracle's NLL is lower
    assert out["ref_nll"]["recovered"]["promoe"]["share"] == pytest.approx(0.5)
    assert headroom({"uniform": rows_of["uniform"], "promoe": rows_of["promoe"]}, n_boot=10, seed=0) == {}
    same = share_recovered({"a": 1.0}, {"a": 1.0}, {"a": 1.0}, n_boot=10)
    assert same == {"share": None, "low": None, "high": None, "n_tasks": 1}
