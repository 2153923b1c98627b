"""A run's specialised experts as the analysis reads them: ``experts/clusters.json`` and ``experts/matrix.json``
(:func:`read_experts` -> :class:`Experts`), checked as read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from promoe.analysis.checks import int_list, is_int, is_number, read_json, shape
from promoe.errors import DataError

MATRIX_FIX = "write it as promoe.stages.specialise.expert_matrix returns it, or delete it to measure it again"
CLUSTERS_FIX = "write it as promoe.stages.specialise.make_clusters does, or delete the experts/ folder"


@dataclass(frozen=True)
class Experts:
    """A run's specialised experts: ``experts/clusters.json`` and ``experts/matrix.json`` (either may be
    missing, e.g. a run stopped during the specialisation), checked as read."""

    clusters: dict | None  # method, n, sizes, val {task: cluster}, test {task: cluster}, ...
    matrix: dict | None  # loss (experts x clusters, null: no validation example), experts, clusters, ...

    def column_best(self) -> list[int | None]:
        """Per cluster, the expert with the lowest loss (the first on ties); None where it has no data."""
        loss = self.matrix["loss"] if self.matrix else []
        cols = [[row[c] for row in loss] for c in range(len(loss[0]))] if loss else []
        return [None if col[0] is None else min(range(len(col)), key=col.__getitem__) for col in cols]

    def own_best(self) -> tuple[int, int]:
        """(clusters whose own expert, expert c for cluster c, has the lowest loss; clusters with data)."""
        best = self.column_best()
        return sum(e == c for c, e in enumerate(best)), sum(e is not None for e in best)


def read_clusters(path: Path) -> dict:
    """``experts/clusters.json``, checked."""
    d = read_json(path)
    if not isinstance(d, dict):
        raise DataError("is not a JSON object", file=str(path), fix=CLUSTERS_FIX)
    if not isinstance(d.get("method"), str):
        raise DataError(f"must name the cluster method, got {d.get('method')!r}", file=str(path), field="method",
                        fix=CLUSTERS_FIX)
    if not (is_int(n := d.get("n")) and n >= 1):
        raise DataError(f"must be a positive integer, got {n!r}", file=str(path), field="n", fix=CLUSTERS_FIX)
    int_list(d, "sizes", n, path, CLUSTERS_FIX)
    for key in ("val", "test"):
        v = d.get(key)
        if not (isinstance(v, dict) and all(is_int(c) and 0 <= c < n for c in v.values())):
            raise DataError(f"must map each {key} task to a cluster in 0..{n - 1}", file=str(path), field=key,
                            fix=CLUSTERS_FIX)
    return d


def read_matrix(path: Path, n_clusters: int | None) -> dict:
    """``experts/matrix.json``, checked (and against ``n_clusters`` from clusters.json)."""
    m, file = read_json(path), str(path)
    if not isinstance(m, dict):
        raise DataError("is not a JSON object", file=file, fix=MATRIX_FIX)
    for key in ("experts", "clusters"):
        if not (is_int(m.get(key)) and m[key] >= 1):
            raise DataError(f"must be a positive integer, got {m.get(key)!r}", file=file, field=key, fix=MATRIX_FIX)
    n_exp, n = m["experts"], m["clusters"]
    if n_clusters is not None and n != n_clusters:
        raise DataError(f"is {n} but experts/clusters.json has {n_clusters} clusters", file=file, field="clusters",
                        fix="measure the matrix again (delete experts/matrix.json) on the clusters of clusters.json")
    if not (isinstance(loss := m.get("loss"), list) and len(loss) == n_exp and all(isinstance(r, list) and len(r) == n for r in loss)):
        raise DataError(f"must be {n_exp} experts x {n} clusters (a list of {n_exp} lists of {n}), got {shape(loss)}",
                        file=file, field="loss", fix=MATRIX_FIX)
    for e, row in enumerate(loss):
        for c, v in enumerate(row):
            if v is not None and not is_number(v):
                raise DataError(f"loss[{e}][{c}] is {v!r}; every entry must be a finite number or null", file=file,
                                field="loss", fix=MATRIX_FIX)
    for c in range(n):
        if len({row[c] is None for row in loss}) > 1:
            raise DataError(f"column {c} mixes numbers and null (null only for a cluster without validation "
                            "examples, in every expert's row)", file=file, field="loss", fix=MATRIX_FIX)
    for key in ("val_examples", "val_tasks"):
        if key in m:
            int_list(m, key, n, path, MATRIX_FIX)
    for key in ("weight_distance", "output_distance"):  # experts x experts, finite and >= 0 (null: none measured)
        if (d := m.get(key)) is not None and not (isinstance(d, list) and len(d) == n_exp and all(
                isinstance(r, list) and len(r) == n_exp and all(is_number(v) and v >= 0 for v in r) for r in d)):
            raise DataError(f"must be {n_exp} experts x {n_exp} experts of finite non-negative numbers, got "
                            f"{shape(d)}", file=file, field=key, fix=MATRIX_FIX)
    own, with_data = Experts(None, m).own_best()
    for key, value in (("best_on_own", own), ("clusters_with_data", with_data)):
        if key in m and m[key] != value:
            raise DataError(f"is {m[key]!r} but the loss matrix gives {value}", file=file, field=key, fix=MATRIX_FIX)
    return m


def read_experts(folder: Path) -> Experts | None:
    """The experts of a run's ``experts/`` folder (None: neither file there)."""
    clusters = read_clusters(folder / "clusters.json") if (folder / "clusters.json").is_file() else None
    n = None if clusters is None else clusters["n"]
    matrix = read_matrix(folder / "matrix.json", n) if (folder / "matrix.json").is_file() else None
    return None if clusters is None and matrix is None else Experts(clusters, matrix)
