"""Clusters of training tasks: which tasks an expert specialises on (Branch-Train-MiX style).

Three ways to make ``n`` clusters of the training tasks:

* ``description`` — k-means (scikit-learn) over the tasks' L2-normalised description embeddings;
* ``category`` — whole SNI categories kept together: k-means over the categories' mean embeddings,
  weighted by their task counts, so related categories share a cluster;
* ``given`` — a researcher's own assignment (a JSON file ``{task: cluster}``);
* ``meta`` — a label every training task carries in its record's ``_meta`` (e.g. ``rule`` in the
  synthetic suite of :mod:`promoe.data.synth`); clusters are the sorted distinct labels;
* ``output`` — the kind of output a task asks for, read off its instances (:func:`output_kind`): a label
  from a small set, a span copied from the input, or free text (three clusters).

Every method keeps a centroid per cluster, so tasks that were not clustered (validation and test
tasks) are assigned to the cluster whose centroid is nearest to their description (cosine); with
``meta``, a held-out task that carries a known label gets that label's cluster. Nothing is chosen on
test tasks: clusters and centroids come from training tasks only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from promoe.data.schema import Task
from promoe.data.sources import require_path
from promoe.errors import DataError, PromoeError
from promoe.limits import READ_ERRORS, LimitError, load_json, read_text
from promoe.text import clean

METHODS = ("description", "category", "given", "meta", "output")
LABELLED = ("meta", "output")
"""Methods that label held-out tasks themselves (``Clusters.held``) rather than by their nearest centroid."""
OUTPUT_KINDS = ("label", "span", "free text")
"""The clusters of ``output``, in order."""
MAX_LABELS = 16
"""A task whose instances' outputs take at most this many distinct values (and fewer than half as many as
there are instances) answers with a label."""
MIN_FOR_SET = 8
LABEL_WORDS = 3


def output_kind(task: Task, *, instances: bool = True) -> str:
    """What ``task`` asks for, from its instances' first outputs and its positive examples (``instances=False``:
    the positive examples only, as for a test task): ``label`` — at most :data:`MAX_LABELS` distinct answers,
    fewer than half as many as examples (with fewer than :data:`MIN_FOR_SET` examples a set cannot be seen:
    every answer at most :data:`LABEL_WORDS` words); ``span`` — at least half the answers occur verbatim in their
    input, ignoring case; else ``free text``."""
    pairs = [(e.input.casefold(), e.output.strip().casefold()) for e in task.positive_examples]
    if instances:
        pairs += [(i.input.casefold(), i.outputs[0].strip().casefold()) for i in task.instances if i.outputs]
    answers = {o for _, o in pairs}
    if len(pairs) >= MIN_FOR_SET:
        if len(answers) <= MAX_LABELS and 2 * len(answers) < len(pairs):
            return "label"
    elif pairs and all(len(o.split()) <= LABEL_WORDS for o in answers):
        return "label"
    if pairs and 2 * sum(bool(o) and o in x for x, o in pairs) >= len(pairs):
        return "span"
    return "free text"


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Clusters:
    """``assignment``: training task -> cluster in ``0..n-1``; ``centroids`` (n, d), unit length; ``held``:
    held-out tasks whose cluster is known without their description (``meta`` labels)."""

    method: str
    assignment: dict[str, int]
    centroids: np.ndarray
    held: dict[str, int] = field(default_factory=dict)

    @property
    def known(self) -> dict[str, int]:
        """Every task whose cluster is given (training tasks and labelled held-out tasks)."""
        return {**self.held, **self.assignment}

    @property
    def n(self) -> int:
        return len(self.centroids)

    def sizes(self) -> list[int]:
        return np.bincount(list(self.assignment.values()), minlength=self.n).tolist()

    def assign(self, emb: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Cluster of each task in ``emb`` (its own for a clustered or labelled task, else the nearest centroid)."""
        names = sorted(emb)
        if not names:
            return {}
        sim = _unit(np.stack([np.asarray(emb[t]) for t in names])) @ self.centroids.T
        known = self.known
        return {t: known.get(t, int(np.argmax(s))) for t, s in zip(names, sim, strict=True)}

    def to_json(self) -> dict:
        return {"method": self.method, "n": self.n, "sizes": self.sizes(),
                "assignment": dict(sorted(self.assignment.items())), "centroids": self.centroids.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Clusters:
        held = {str(k): int(v) for split in ("val", "test") for k, v in (data.get(split) or {}).items()}
        return cls(data["method"], {str(k): int(v) for k, v in data["assignment"].items()},
                   np.asarray(data["centroids"], dtype=np.float64), held if data["method"] in LABELLED else {})


def _kmeans(x: np.ndarray, n: int, seed: int, weights: np.ndarray | None = None) -> np.ndarray:
    if len(np.unique(np.round(x, 9), axis=0)) < n:
        raise ValueError(f"only {len(np.unique(np.round(x, 9), axis=0))} distinct descriptions for {n} clusters: "
                         "choose fewer clusters")
    return KMeans(n_clusters=n, n_init=10, random_state=seed).fit_predict(x, sample_weight=weights)


def _centroids(labels: dict[str, int], emb: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    groups: dict[int, list[np.ndarray]] = defaultdict(list)
    for t, c in labels.items():
        groups[c].append(_unit(emb[t]))
    return _unit(np.stack([np.mean(groups[c], axis=0) for c in range(n)]))


def read_assignment(path: str | Path) -> dict[str, int]:
    """A given assignment: a JSON object ``{task name: cluster number}``."""
    fix = 'write a JSON object {"task name": cluster number, ...} with clusters numbered from 0'
    try:
        data = load_json(read_text(require_path(path, "cluster file", fix=fix)))
    except (*READ_ERRORS, json.JSONDecodeError, LimitError) as e:
        raise DataError(f"cannot be read as JSON ({e})", file=str(path), fix=fix) from None
    if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                             for v in data.values()):
        raise DataError("is not a mapping of task names to cluster numbers >= 0", file=str(path), fix=fix)
    return {clean(str(k)): v for k, v in data.items()}  # task names in the form they are compared in


def meta_labels(tasks: Sequence[Task], *, key: str, known: Sequence[str]) -> dict[str, int]:
    """``{task: index in known}`` of the tasks whose ``_meta[key]`` is one of ``known``."""
    index = {label: i for i, label in enumerate(known)}
    return {t.name: index[str(t.meta[key])] for t in tasks if key in t.meta and str(t.meta[key]) in index}


def cluster_tasks(tasks: Sequence[Task], emb: Mapping[str, np.ndarray], n: int, method: str = "description", *,
                  seed: int = 0, given: Mapping[str, int] | None = None, meta_key: str = "") -> Clusters:
    """``n`` clusters of ``tasks`` by ``method`` (see the module docstring); ``emb`` holds each task's
    description embedding. Every cluster gets at least one task; ``meta`` reads ``task.meta[meta_key]``."""
    if method not in METHODS:
        raise ValueError(f"cluster method {method!r} is not one of {list(METHODS)}")
    names = sorted({t.name for t in tasks})
    if not 1 <= n <= len(names):
        raise ValueError(f"cannot make {n} clusters of {len(names)} training tasks (1 <= n <= tasks)")
    if method == "description":
        labels = _kmeans(_unit(np.stack([emb[t] for t in names])), n, seed)
        assignment = {t: int(c) for t, c in zip(names, labels, strict=True)}
    elif method == "category":
        by_cat: dict[str, list[str]] = defaultdict(list)
        for t in tasks:
            by_cat[t.category].append(t.name)
        cats = sorted(by_cat)
        if len(cats) < n:
            raise ValueError(f"cannot make {n} clusters of whole categories: the training tasks have {len(cats)}")
        means = _unit(np.stack([np.mean([_unit(emb[t]) for t in by_cat[c]], axis=0) for c in cats]))
        labels = _kmeans(means, n, seed, weights=np.array([len(by_cat[c]) for c in cats], dtype=np.float64))
        assignment = {t: int(lab) for c, lab in zip(cats, labels, strict=True) for t in by_cat[c]}
    else:
        if method == "meta":
            given = meta_labels(tasks, key=meta_key, known=sorted({str(t.meta.get(meta_key)) for t in tasks}))
        elif method == "output":
            if n != len(OUTPUT_KINDS):
                raise ValueError(f"clusters by output make {len(OUTPUT_KINDS)} ({', '.join(OUTPUT_KINDS)}): set "
                                 f"model.n_experts={len(OUTPUT_KINDS)}")
            given = {t.name: OUTPUT_KINDS.index(output_kind(t)) for t in tasks}
        missing = [t for t in names if t not in given]
        if missing:
            raise ValueError(f"the given assignment has no cluster for {len(missing)} training tasks, e.g. "
                             f"{missing[:3]}")
        assignment = {t: int(given[t]) for t in names}
        if sorted(set(assignment.values())) != list(range(n)):
            raise ValueError(f"the {method} clusters must use every cluster 0..{n - 1}, got "
                             f"{sorted(set(assignment.values()))}")
    return Clusters(method, assignment, _centroids(assignment, emb, n))


def cluster_splits(splits, emb: Mapping[str, np.ndarray], n: int, method: str, *, seed: int = 0,
                   cluster_file: str | None = None, meta_key: str = "") -> tuple[Clusters, dict[str, dict[str, int]]]:
    """Clusters of ``splits.train`` and the cluster of each validation and test task (``{"val": ...,
    "test": ...}``, by nearest centroid or, with ``meta``, their label); a request that cannot be met is
    one :class:`PromoeError`."""
    given = read_assignment(cluster_file) if method == "given" else None
    if method == "meta" and (missing := [t.name for t in splits.train if meta_key not in t.meta]):
        raise PromoeError(f"clusters: experts.clusters=meta reads _meta.{meta_key} of every training task, but "
                          f"{len(missing)} have none, e.g. {missing[0]}; set experts.cluster_key to a key they all "
                          "carry, or choose another experts.clusters")
    try:
        clusters = cluster_tasks(splits.train, emb, n, method, seed=seed, given=given, meta_key=meta_key)
    except ValueError as e:
        raise PromoeError(f"clusters: {e}") from None
    if method == "meta":
        clusters.held = meta_labels(splits.val + splits.test, key=meta_key,
                                    known=sorted({str(t.meta[meta_key]) for t in splits.train}))
    elif method == "output":  # a test task's kind from its demonstrations only: its scored instances stay unseen
        test = {t.name for t in splits.test}
        clusters.held = {t.name: OUTPUT_KINDS.index(output_kind(t, instances=t.name not in test))
                         for t in splits.val + splits.test}
    held = {s: clusters.assign({t.name: emb[t.name] for t in ts}) for s, ts in (("val", splits.val), ("test", splits.test))}
    return clusters, held
