"""promoe.analysis.answer and .family: REPORT.md opens with the answer, every line promoe − other with CI, MDE and
the family's Holm-adjusted p, and a verdict no stronger than that adjusted test allows."""

from __future__ import annotations

from promoe.analysis.answer import (
    QUESTIONS,
    Comparison,
    answer_section,
    by_condition,
    comparisons,
    fig_answer,
)
from promoe.analysis.family import family


def _t(diff: float, low: float, high: float, mde: float = 1.5, n: int = 119, p: float = 0.001) -> dict:
    return {"diff": diff, "low": low, "high": high, "mde": mde, "n_tasks": n, "p_bootstrap": p}


SIG = {
    "n_boot": 10000,
    "models": {"promoe": {}, "moe": {}, "dense": {}, "uniform": {}, "oracle": {}, "promoe-shuffled": {}},
    "paired": {"moe": {"rougeL": _t(2.0, 0.5, 3.5, p=0.002)}, "dense": {"rougeL": _t(-0.4, -2.0, 1.2, p=0.6)},
               "uniform": {"rougeL": _t(-3.0, -4.0, -2.0, p=0.0)}},
    # ablation rows are row − promoe: promoe − shuffled = +1.0 [+0.2, +1.8]
    "ablations": {"promoe-shuffled": {"rougeL": _t(-1.0, -1.8, -0.2, mde=1.1, p=0.004)}},
    "headroom": {"rougeL": {"headroom": _t(5.0, 3.0, 7.0, p=0.0), "recovered": {
        "promoe": {"share": 0.25, "low": -0.1, "high": 0.6, "n_tasks": 119}}}},
}


def test_verdicts_follow_the_adjusted_test_not_the_point() -> None:
    assert Comparison("x", 2.0, 0.5, 3.5, 1.5, 10, p_holm=0.01).verdict == "better"
    assert Comparison("x", -3.0, -4.0, -2.0, 1.5, 10, p_holm=0.01).verdict == "worse"
    # a positive point estimate is not "better", nor an unadjusted interval that excludes 0
    assert Comparison("x", 1.0, 0.2, 2.2, 1.7, 10, p_holm=0.06).verdict == "no difference detected"


def test_verdicts_are_holm_adjusted_over_the_family_the_answer_asks() -> None:
    """Five tests (four comparisons and the headroom). With its own p at 0.03, promoe − shuffled's unadjusted
    interval excludes 0, but Holm (x2 at its rank) puts it at 0.06: no longer "better"."""
    fam = family(SIG)
    assert fam["n_tests"] == 5 and [t["comparison"] for t in fam["tests"]] == [
        "promoe − moe", "promoe − dense", "promoe − uniform", "promoe − promoe-shuffled", "oracle − uniform"]
    p = {t["comparison"]: t["p_holm"] for t in fam["tests"]}
    # p 0 enters as 1 / n_boot: the smallest p 10000 resamples resolve
    assert p["promoe − uniform"] == p["oracle − uniform"] == 5e-4
    assert p["promoe − moe"] == 3 * 0.002 and p["promoe − dense"] == 0.6
    unadjusted = {**SIG, "ablations": {"promoe-shuffled": {"rougeL": _t(-1.0, -1.8, -0.2, mde=1.1, p=0.03)}}}
    text = "\n".join(answer_section(unadjusted, None))
    assert "vs `promoe-shuffled`: +1.00 [+0.20, +1.80], MDE 1.10, p (Holm) 0.06, 119 tasks — no difference " \
           "detected." in text
    assert "Holm over the family's two-sided bootstrap p values" in text and "(5 tests on ROUGE-L" in text
    assert [t["verdict"] for t in family(unadjusted)["tests"]] == [
        "better", "no difference detected", "worse", "no difference detected", "detected"]


def test_ablations_are_flipped_to_promoe_minus_row() -> None:
    (_, first), (_, second) = comparisons(SIG)
    assert [c.other for c in first] == ["moe", "dense", "uniform"]  # rows the run did not score are left out
    shuffled = second[0]
    assert (shuffled.other, shuffled.diff, shuffled.low, shuffled.high, shuffled.mde) == \
           ("promoe-shuffled", 1.0, 0.2, 1.8, 1.1)


def test_the_section_states_the_condition_each_comparison_and_the_headroom() -> None:
    text = "\n".join(answer_section(SIG, "router_only"))
    assert text.startswith("## The answer")
    assert "router-only prompts" in text
    assert "vs `moe`: +2.00 [+0.50, +3.50], MDE 1.50, p (Holm) 0.006, 119 tasks — better" in text
    assert "vs `uniform`: -3.00 [-4.00, -2.00]" in text and "— worse" in text
    assert "vs `promoe-shuffled`: +1.00 [+0.20, +1.80], MDE 1.10" in text
    assert "`oracle` − `uniform` = +5.00 [+3.00, +7.00]" in text and "recovers +0.25 [-0.10, +0.60]" in text
    assert answer_section({"models": {"moe": {}}}, None) == []  # no promoe, no answer


def test_the_figure_has_one_interval_per_comparison() -> None:
    fig = fig_answer(SIG)
    assert len(fig.axes[0].get_yticks()) == 4
    assert fig_answer({"models": {"promoe": {}}}) is None


def test_the_question_is_asked_again_inside_each_condition_after_the_headroom() -> None:
    sig = {**SIG, "within_condition": {"router_only": {"moe": {"rougeL": _t(4.0, 1.0, 7.0, mde=2.5)}}}}
    text = "\n".join(answer_section(sig, "standard"))
    line = "`promoe-router_only` vs `moe-router_only`: +4.00 [+1.00, +7.00], MDE 2.50, p (Holm) 0.004, 119 tasks " \
           "— better"
    assert line in text
    assert "mixing every expert? In the `router_only` condition" in text
    assert text.index("`oracle` − `uniform`") < text.index(line)  # the headroom is the run's own condition's
    assert len(fig_answer(sig).axes[0].get_yticks()) == 5
    assert [c.reference for _, found in comparisons(sig) for c in found][-1] == "promoe-router_only"


def test_the_headroom_inside_a_condition_follows_its_question() -> None:
    room = {"rougeL": {"headroom": _t(3.0, 1.0, 5.0), "recovered": {
        "promoe-router_only": {"share": 0.5, "low": 0.1, "high": 0.9, "n_tasks": 119}}}}
    sig = {**SIG, "within_condition": {"router_only": {"moe": {"rougeL": _t(4.0, 1.0, 7.0, mde=2.5)}}},
           "condition_headroom": {"router_only": room}}
    text = "\n".join(answer_section(sig, "standard"))
    line = "`oracle-router_only` − `uniform-router_only` = +3.00 [+1.00, +5.00]"
    assert line in text and "`promoe-router_only` recovers +0.50 [+0.10, +0.90]" in text
    assert text.index("`promoe-router_only` vs `moe-router_only`") < text.index(line)
    assert text.count("How much of the oracle's headroom") == 2


def test_each_question_is_asked_inside_a_condition_with_its_rows() -> None:
    """The router-only ablations answer "does it use the description?" inside the condition, the routers the
    first question; the condition's headroom once, after both."""
    room = {"rougeL": {"headroom": _t(3.0, 1.0, 5.0), "recovered": {
        "promoe-router_only": {"share": 0.5, "low": 0.1, "high": 0.9, "n_tasks": 119}}}}
    sig = {**SIG, "within_condition": {"router_only": {"moe": {"rougeL": _t(4.0, 1.0, 7.0, mde=2.5)},
                                                       "promoe-shuffled": {"rougeL": _t(2.0, 0.5, 3.5, mde=1.5)},
                                                       "knn": {"rougeL": _t(1.0, -1.0, 3.0, mde=2.0)}}},
           "condition_headroom": {"router_only": room}}
    inside = by_condition(sig)
    assert [q.split("?")[0] for _, q, _ in inside] == [QUESTIONS[0][0][:-1], QUESTIONS[1][0].split("?")[0]]
    assert [[c.other for c in found] for _, _, found in inside] == [
        ["moe-router_only", "knn-router_only"],  # rows no question names go with the first
        ["promoe-shuffled-router_only"]]
    text = "\n".join(answer_section(sig, "standard"))
    shuffled = "`promoe-router_only` vs `promoe-shuffled-router_only`: +2.00 [+0.50, +3.50], MDE 1.50"
    assert shuffled in text and text.count("`oracle-router_only` − `uniform-router_only`") == 1
    assert text.index("`promoe-router_only` vs `moe-router_only`") < text.index(shuffled) < text.index(
        "`oracle-router_only` − `uniform-router_only`")


def test_no_share_of_a_headroom_that_is_not_detected() -> None:
    """A share of a headroom whose interval spans 0 has no meaningful interval: the line says the headroom was not
    detected and gives no share, even where significance.json's share is a number."""
    sig = {**SIG, "headroom": {"rougeL": {"headroom": _t(2.45, -1.0, 5.93, p=0.17), "recovered": {
        "promoe": {"share": 0.12, "low": -1.7, "high": 1.9, "n_tasks": 119}}}}}
    text = "\n".join(answer_section(sig, None))
    assert "`oracle` − `uniform` = +2.45 [-1.00, +5.93] ROUGE-L over 119 tasks, p (Holm) 0.34; the headroom is " \
           "not detected, so no share of it is reported." in text
    assert "recovers" not in text and family(sig)["tests"][-1]["verdict"] == "not detected"
    room = sig["headroom"]["rougeL"]
    detected = {**sig, "headroom": {"rougeL": {**room, "headroom": _t(2.45, 0.5, 5.0, p=0.001), "recovered": {
        "promoe": {"share": None, "low": None, "high": None, "n_tasks": 100}}}}}  # spans 0 on the three's tasks
    assert "over the 100 tasks the three rows share its 95% CI spans 0" in "\n".join(answer_section(detected, None))


def test_a_run_with_less_power_than_the_reference_run_says_where_the_powered_answer_is() -> None:
    powered = "\n".join(answer_section(SIG, None))  # promoe − moe MDE 1.50: powered, its power stated
    assert "detects a difference of 1.50 ROUGE-L (MDE)." in powered and "results/reference" not in powered
    weak = {**SIG, "paired": {**SIG["paired"], "moe": {"rougeL": _t(0.5, -4.0, 5.0, mde=4.8, p=0.8)}}}
    text = "\n".join(answer_section(weak, None))
    assert "Power: `promoe` − `moe` over " in text
    assert "detects a difference of 4.80 ROUGE-L (MDE), not smaller ones" in text
    assert "`results/reference/`" in text and "--preset reference" in text
    assert "MDE)" not in "\n".join(answer_section(weak, None, metric="exact_match"))


def test_the_answer_says_what_the_budget_bought() -> None:
    text = "\n".join(answer_section(SIG, None, budget="every trained row saw 384 training examples (...)"))
    assert "What this run's budget buys: every trained row saw 384 training examples (...); `promoe` − `moe` over " \
           in text
