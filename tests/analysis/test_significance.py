"""promoe.analysis.significance: significance.json and seeds.json over every row of a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promoe.analysis.rundata import RunData, load_run
from promoe.analysis.significance import Rows, headroom, seed_summary, shared_rows, significance
from promoe.analysis.stats import routing_similarity, share_recovered
from promoe.metrics import Reference, add_likelihood, score
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
        return {"per_task": {t: {"rougeL": v, "exact_match": v, "n": 1, "category": "c",
                                 **({"ref_nll": nll[i]} if nll else {})}
                             for i, (t, v) in enumerate(zip(tasks, values, strict=True))}}

    uniform, oracle = [10, 20, 30, 10, 20, 30], [30, 40, 50, 30, 40, 50]
    rows_of = {"uniform": rows(uniform, [2.0] * 6), "oracle": rows(oracle, [1.0] * 6),
               "promoe": rows([20, 30, 40, 20, 30, 40], [1.5] * 6),  # half of the headroom
               "moe": rows(uniform, [2.0] * 6),  # none of it
               "copy_input": rows([0] * 6)}  # a heuristic: no model, no share
    out = headroom(Rows(rows_of), n_boot=500, seed=0)
    assert set(out) == {"rougeL", "exact_match", "ref_nll"}
    assert out["rougeL"]["headroom"]["diff"] == pytest.approx(20) and out["rougeL"]["headroom"]["n_tasks"] == 6
    rec = out["rougeL"]["recovered"]
    assert set(rec) == {"promoe", "moe"}
    assert rec["promoe"]["share"] == pytest.approx(0.5) and rec["promoe"]["low"] <= 0.5 <= rec["promoe"]["high"]
    assert rec["moe"]["share"] == pytest.approx(0.0)
    assert out["ref_nll"]["headroom"]["diff"] == pytest.approx(-1.0)  # lower is better: the oracle's NLL is lower
    assert out["ref_nll"]["recovered"]["promoe"]["share"] == pytest.approx(0.5)
    assert headroom(Rows({"uniform": rows_of["uniform"], "promoe": rows_of["promoe"]}), n_boot=10, seed=0) == {}
    same = share_recovered({"a": 1.0}, {"a": 1.0}, {"a": 1.0}, n_boot=10)
    assert same == {"share": None, "low": None, "high": None, "n_tasks": 1, "headroom_detected": False,
                    "unit": "task", "n_units": 1}
    assert out["rougeL"]["headroom"]["detected"] and rec["promoe"]["headroom_detected"]


def test_no_share_of_a_headroom_whose_interval_spans_zero() -> None:
    """oracle − uniform is +2 on average but −10 / +14 from task to task: its CI spans 0, so a share of it (whose
    bootstrap denominator crosses 0) is not given, neither in share_recovered nor in the headroom table."""
    tasks = [f"t{i}" for i in range(8)]
    uniform = dict.fromkeys(tasks, 50.0)
    oracle = {t: 50.0 + (14.0 if i % 2 else -10.0) for i, t in enumerate(tasks)}
    promoe = {t: 51.0 for t in tasks}
    out = share_recovered(promoe, uniform, oracle, n_boot=500)
    assert (out["share"], out["low"], out["high"], out["headroom_detected"]) == (None, None, None, False)

    def rows(values: dict[str, float]) -> dict:
        return {"per_task": {t: {"rougeL": v, "exact_match": v, "n": 1, "category": "c"} for t, v in values.items()}}

    room = headroom(Rows({"uniform": rows(uniform), "oracle": rows(oracle), "promoe": rows(promoe)}), n_boot=500, seed=0)
    assert room["rougeL"]["headroom"]["low"] < 0 < room["rougeL"]["headroom"]["high"]
    assert not room["rougeL"]["headroom"]["detected"] and room["rougeL"]["recovered"]["promoe"]["share"] is None


def _scored(ids_per_task: int, right: set[str], tasks: int = 6) -> dict:
    """A score dict over ``tasks`` tasks × ``ids_per_task`` instances; the ids in ``right`` are answered right."""
    refs = [Reference(f"t{t}-{i}", ("yes",), f"t{t}", "cat") for t in range(tasks) for i in range(ids_per_task)]
    preds = {r.id: "yes" if r.id in right else "no" for r in refs}
    return add_likelihood(score(preds, refs), {r.id: 0.5 if r.id in right else 2.0 for r in refs}, refs)


def test_rows_scored_on_more_instances_are_paired_on_the_shared_ones() -> None:
    # the headline row scores 8 instances per task and gets the first 2 right; the other scores the first 2
    # and gets the first one right: over the shared 2, headline − other is +50 EM on every task, whereas its
    # own-instance mean (25) would wrongly show −25
    head = _scored(8, {f"t{t}-{i}" for t in range(6) for i in range(2)})
    other = _scored(2, {f"t{t}-0" for t in range(6)})
    assert head["exact_match"] == 25.0 and other["exact_match"] == 50.0
    (h, o), n = shared_rows([head, other], None)
    assert n == 12 and all(r["n"] == 2 for r in h.values())
    assert all(h[t]["exact_match"] == 100.0 and o[t]["exact_match"] == 50.0 for t in h)
    assert h["t0"]["ref_nll"] == pytest.approx(0.5) and o["t0"]["ref_nll"] == pytest.approx(1.25)
    sig = significance(RunData(scores={"promoe": head, "moe": other}), n_boot=200)
    t = sig["paired"]["moe"]
    assert t["exact_match"]["diff"] == pytest.approx(50.0) and t["exact_match"]["n_instances"] == 12
    assert t["ref_nll"]["diff"] == pytest.approx(-0.75) and t["exact_match"]["n_tasks"] == 6
    assert sig["models"]["promoe"]["n"] == 48 and sig["models"]["moe"]["n"] == 12  # each row's own CI: all of its own


def test_shared_rows_keeps_the_written_task_means_when_the_instances_are_the_same() -> None:
    a, b = _scored(3, {"t0-0", "t1-1"}), _scored(3, {"t0-0"})
    (ra, rb), n = shared_rows([a, b], None)
    assert ra == a["per_task"] and rb == b["per_task"] and n == 18
    old = {k: v for k, v in a.items() if k != "per_instance"}  # a run from before per_instance
    (ra, _), n = shared_rows([old, b], {"t0", "t1"})
    assert set(ra) == {"t0", "t1"} and n == 6


def test_the_question_is_paired_again_inside_each_condition() -> None:
    # promoe-router_only right on every instance, moe-router_only on the first of each task's 2: +50 EM inside
    # the condition; the standard rows are not part of it, and a condition without promoe gives nothing
    every = {f"t{t}-{i}" for t in range(6) for i in range(2)}
    scores = {"promoe": _scored(2, set()), "moe": _scored(2, every), "promoe-router_only": _scored(2, every),
              "moe-router_only": _scored(2, {f"t{t}-0" for t in range(6)}), "dense-fewshot": _scored(2, set())}
    sig = significance(RunData(scores=scores), n_boot=200)
    assert set(sig["within_condition"]) == {"router_only"}
    t = sig["within_condition"]["router_only"]
    assert set(t) == {"moe"} and t["moe"]["exact_match"]["diff"] == pytest.approx(50.0)
    assert t["moe"]["exact_match"]["n_instances"] == 12 and "mde" in t["moe"]["rougeL"]


def test_the_headroom_inside_a_condition_uses_its_own_floor_and_ceiling() -> None:
    every = {f"t{t}-{i}" for t in range(6) for i in range(2)}
    first = {f"t{t}-0" for t in range(6)}
    scores = {"promoe": _scored(2, set()), "uniform": _scored(2, set()), "oracle": _scored(2, set()),
              "promoe-router_only": _scored(2, first), "uniform-router_only": _scored(2, set()),
              "oracle-router_only": _scored(2, every)}
    sig = significance(RunData(scores=scores), n_boot=200)
    room = sig["condition_headroom"]["router_only"]["exact_match"]
    assert room["headroom"]["diff"] == pytest.approx(100.0)
    assert set(room["recovered"]) == {"promoe-router_only"}  # the condition's rows only
    assert room["recovered"]["promoe-router_only"]["share"] == pytest.approx(0.5)
    assert sig["headroom"]["exact_match"]["headroom"]["diff"] == 0.0 and "promoe-router_only" not in \
        sig["headroom"]["exact_match"]["recovered"]
    assert set(sig["within_condition"]["router_only"]) == {"uniform", "oracle"}


def test_the_in_sample_ceiling_is_reported_beside_the_headroom_and_never_compared_as_a_result() -> None:
    every = {f"t{t}-{i}" for t in range(6) for i in range(2)}
    first = {f"t{t}-0" for t in range(6)}
    scores = {"promoe": _scored(2, first), "uniform": _scored(2, set()), "oracle": _scored(2, first),
              "oracle_insample": _scored(2, every)}
    sig = significance(RunData(scores=scores), n_boot=200)
    assert "oracle_insample" not in sig["paired"] and "oracle_insample" in sig["models"]
    room = sig["headroom"]["exact_match"]
    assert room["headroom"]["diff"] == pytest.approx(50.0) and room["ceiling"]["diff"] == pytest.approx(100.0)
    assert room["ceiling"]["detected"] and "oracle_insample" not in room["recovered"]
    assert "oracle_insample" not in json.dumps(sig["family"])  # not among the answer's tests
