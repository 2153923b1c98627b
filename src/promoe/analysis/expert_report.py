"""The report's section on the specialised experts: their clusters, the expert x cluster matrix and how far the
experts moved apart."""

from __future__ import annotations

import numpy as np

from promoe.analysis.expertdata import Experts
from promoe.analysis.markdown import num as _num
from promoe.analysis.markdown import table as _table

CLUSTER_METHODS = {"description": "k-means of the training tasks' description embeddings",
                   "category": "whole task categories (k-means of the categories' mean description embeddings)",
                   "given": "an assignment given in `experts.cluster_file`",
                   "meta": "a label every task carries in its `_meta` (`experts.cluster_key`)"}
"""How ``experts/clusters.json``'s method made the clusters, in the report's words."""


def experts_section(experts: Experts | None) -> list[str]:
    """The clusters the experts specialised on and the expert x cluster matrix (column minimum in bold)."""
    if experts is None:
        return []
    out, cl, m = ["## Specialised experts", ""], experts.clusters, experts.matrix
    if cl is None:
        out += ["Clusters: not in the run folder (no `experts/clusters.json`).", ""]
    else:
        method = CLUSTER_METHODS.get(cl["method"], f"`{cl['method']}`")
        out += [f"Each expert was first trained on one cluster of training tasks; clusters by {method}. "
                "Validation and test tasks belong to the cluster whose centroid is nearest to their description"
                + (" (or to their label's cluster)." if cl["method"] == "meta" else "."), ""]
        per = {k: [list(cl[k].values()).count(c) for c in range(cl["n"])] for k in ("val", "test")}
        out += _table(["cluster", "training tasks", "validation tasks", "test tasks"],
                      [[str(c), str(cl["sizes"][c]), str(per["val"][c]), str(per["test"][c])] for c in range(cl["n"])])
    if m is None:
        return out + ["Expert x cluster matrix: not measured (no `experts/matrix.json`; the specialisation did not "
                      "finish).", ""]
    best = experts.column_best()
    out += ["Mean per-token NLL of the references of each cluster's validation examples with every token routed "
            "to one expert (rows: experts, columns: clusters; bold: the lowest of the column; n/a: no validation "
            "example).", ""]
    head = ["expert", *(f"cluster {c}" for c in range(m["clusters"]))]
    rows = [[str(e), *(_num(v) if best[c] != e else f"**{v:.3f}**" for c, v in enumerate(row))]
            for e, row in enumerate(m["loss"])]
    if "val_examples" in m:
        rows.append(["validation examples", *(str(k) for k in m["val_examples"])])
    own, with_data = experts.own_best()
    return out + _table(head, rows) + [f"Own expert best on {own} of {with_data} clusters with validation data.", "",
                                       *_apart(m)]


def _apart(matrix: dict) -> list[str]:
    """How far the experts moved apart, as the mean over ordered pairs of the matrix's relative distances."""
    def mean_pair(d: list[list[float]]) -> float:
        return float(np.mean([v for i, row in enumerate(d) for j, v in enumerate(row) if i != j]))

    parts = [f"{what} {mean_pair(matrix[key]):.3f}" for key, what in
             (("weight_distance", "weights"), ("output_distance", "outputs on the validation examples' tokens"))
             if matrix.get(key) and len(matrix[key]) > 1]
    if not parts:
        return []
    return ["How far the experts moved apart (||a - b|| / ||a||, mean over pairs of experts and over MoE layers; 0 "
            f"for identical copies): {'; '.join(parts)}.", ""]
