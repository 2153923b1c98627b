"""promoe.analysis.cluster_routing: description separability and own-expert routing, counted by hand."""

from __future__ import annotations

import numpy as np

from promoe.analysis.cluster_routing import cluster_routing, section
from promoe.analysis.rundata import Experts, RunData


def _data(method: str = "meta") -> RunData:
    # two clusters along the x and y axes; v1 (cluster 0) sits near cluster 1's centroid, the others near their own
    emb = {"v0": [1.0, 0.1], "v1": [0.1, 1.0], "t0": [0.9, 0.2], "t1": [0.2, 0.9], "t2": [0.3, 1.0]}
    clusters = {"method": method, "n": 2, "sizes": [1, 1], "assignment": {"a": 0, "b": 1},
                "centroids": [[1.0, 0.0], [0.0, 1.0]], "val": {"v0": 0, "v1": 0}, "test": {"t0": 0, "t1": 1, "t2": 0}}
    hist = np.array([[[0.9, 0.1], [0.8, 0.2]],  # t0 -> expert 0 (own)
                     [[0.5, 0.5], [0.5, 0.5]],  # t1: a tie chooses nothing
                     [[0.1, 0.9], [0.2, 0.8]]])  # t2 -> expert 1, not its own 0
    routing = {"promoe": {"task_names": np.array(["t0", "t1", "t2"]), "task_histograms": hist},
               "moe": {"task_names": np.array(["t0"]), "task_histograms": np.ones((1, 2, 3))}}  # 3 experts: not these
    return RunData(scores={}, routing=routing, experts=Experts(clusters, None),
                   embeddings={"task_names": np.array(list(emb)), "embeddings": np.array(list(emb.values()))})


def test_separability_and_own_expert_routing_counted_by_hand() -> None:
    cr = cluster_routing(_data())
    assert cr.separable == {"val": (1, 2), "test": (2, 3)}  # v1 and t2 lie nearer the other centroid
    assert cr.rows == {"promoe": (1, 3)}
    text = "\n".join(section(_data()))
    assert "1 of 2 validation tasks, 2 of 3 test tasks" in text and "`promoe` 1/3" in text


def test_clusters_read_off_descriptions_have_no_separability_to_report() -> None:
    cr = cluster_routing(_data("description"))  # held-out clusters are the nearest centroid by construction
    assert cr.separable == {} and cr.rows == {"promoe": (1, 3)}
    assert cluster_routing(RunData(scores={})) is None
