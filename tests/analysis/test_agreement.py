"""promoe.analysis.agreement: an ablation's routing against its model's — same top expert and mean distance."""

from __future__ import annotations

import numpy as np

from promoe.analysis.agreement import agreement, agreements, section


def _routing(tasks: list[str], experts: list[int], n_layers: int = 2, n_experts: int = 4) -> dict:
    hist = np.zeros((len(tasks), n_layers, n_experts))
    for i, e in enumerate(experts):
        hist[i, :, e] = 10.0
    return {"task_names": np.array(tasks), "task_histograms": hist}


def test_the_same_routing_agrees_fully_and_moved_routing_does_not() -> None:
    routing = {"promoe": _routing(["a", "b", "c", "d"], [0, 1, 2, 3]),
               "promoe-paraphrase": _routing(["a", "b", "c"], [0, 1, 2]),  # covers three tasks, routes them alike
               "promoe-shuffled": _routing(["a", "b", "c", "d"], [1, 1, 3, 0]),
               "moe": _routing(["a", "b", "c", "d"], [0, 0, 0, 0])}
    para, shuf = agreements(routing)  # by row name; moe is not an ablation of promoe
    assert (para.row, para.tasks, para.same_top, para.mean_distance) == ("promoe-paraphrase", 3, 1.0, 0.0)
    assert (shuf.tasks, shuf.same_top, shuf.mean_distance) == (4, 0.25, 0.75)
    lines = section(routing)
    assert any(line.startswith("| promoe-paraphrase | promoe | 3 | 1.00 | 0.000 |") for line in lines)


def test_a_tie_at_the_top_is_no_choice_and_half_a_histogram_is_half_the_distance() -> None:
    tie = {"task_names": np.array(["a"]), "task_histograms": np.array([[[5.0, 5.0, 0, 0]]])}
    one = {"task_names": np.array(["a"]), "task_histograms": np.array([[[10.0, 0, 0, 0]]])}
    a = agreement({"promoe": one, "promoe-x": tie}, "promoe", "promoe-x")
    assert a.same_top == 0.0 and a.mean_distance == 0.5
    assert agreement({"promoe": one}, "promoe", "promoe-x") is None and section({"promoe": one}) == []
