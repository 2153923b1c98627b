"""What the analysis reads from a run folder (:func:`load_run` -> :class:`RunData`), checked as it is read.

Only ``scores/<row>.json`` is required; where present also ``routing/<row>.npz``, ``routing/logit_scale.json``,
``task_embeddings.npz``,
``train/<model>/metrics.jsonl``, ``splits.json``, ``seeds/<seed>/scores/<row>.json`` and, for a run with
specialised experts, ``experts/clusters.json`` and ``experts/matrix.json``. Rows are read in report order
(:func:`promoe.registry.model_key`), so every table and figure lists them that way.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.metrics import category_key
from promoe.registry import model_key

log = logging.getLogger(__name__)

METRICS = ("rougeL", "exact_match")
"""The per-task score fields every statistic, table and figure covers."""
LIKELIHOOD = "ref_nll"
"""The per-task reference NLL (:mod:`promoe.likelihood`; lower is better), covered where every row compared has it
(rows without a model, and runs before it was measured, have none)."""
LABEL = {"rougeL": "ROUGE-L", "exact_match": "Exact match", LIKELIHOOD: "Reference NLL"}
ROUTING_KEYS = ("load", "tokens", "load_cv", "token_entropy", "task_names", "task_histograms")
EMBEDDING_KEYS = ("task_names", "embeddings")  # also read: categories, split
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


@dataclass
class RunData:
    """Everything :func:`promoe.analysis.analyze` reads from a run folder."""

    scores: dict[str, dict]  # row -> score() dict
    routing: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # row -> npz arrays
    curves: dict[str, list[dict]] = field(default_factory=dict)  # model -> metrics.jsonl rows
    seeds: dict[str, dict[str, dict]] = field(default_factory=dict)  # seed -> row -> score() dict
    test_tasks: set[str] | None = None
    embeddings: dict[str, np.ndarray] | None = None  # task_embeddings.npz arrays
    experts: Experts | None = None  # experts/*.json of a run with specialised experts
    logit_scale: dict[str, dict] | None = None  # routing/logit_scale.json: model -> total/static/generated spread
    condition: str | None = None  # config.yaml's prompt.condition (standard | router_only)
    missing: dict[str, str] = field(default_factory=dict)  # row -> what of it is there although its score is not

    def task_categories(self) -> dict[str, str]:
        """Task -> category key, from the scores (first row wins), else from ``task_embeddings.npz``."""
        cat = {}
        if self.embeddings is not None and "categories" in self.embeddings:
            cat = {str(t): category_key(str(c)) for t, c in
                   zip(self.embeddings["task_names"], self.embeddings["categories"], strict=True)}
        for s in reversed(list(self.scores.values())):
            cat |= {t: r["category"] for t, r in s["per_task"].items()}
        return cat


def metrics_of(*rows: dict[str, dict]) -> tuple[str, ...]:
    """The metrics to compare ``rows`` (per-task rows of one or more score dicts) on: :data:`METRICS`, and
    :data:`LIKELIHOOD` when every task row of every one of them has it."""
    has = all(LIKELIHOOD in r for task_rows_ in rows for r in task_rows_.values())
    return (*METRICS, LIKELIHOOD) if has and rows else METRICS


def task_rows(score: dict, test_tasks: set[str] | None) -> dict[str, dict]:
    """The per-task rows of a score dict, limited to the test tasks when the split is known."""
    rows = score["per_task"]
    if test_tasks is not None:
        kept = {t: r for t, r in rows.items() if t in test_tasks}
        if kept:
            return kept
        log.warning("no scored task is in splits.json's test list; using every scored task")
    return rows


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot be read as JSON ({e})", file=str(path), fix="rewrite or remove it") from None


def _read_npz(path: Path, keys: tuple[str, ...], fix: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot be read ({e})", file=str(path), fix="rewrite or remove it") from None
    if missing := [k for k in keys if k not in arrays]:
        raise DataError(f"lacks {missing}", file=str(path), fix=fix)
    return arrays


def _read_scores(folder: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(folder.glob("*.json"), key=lambda p: model_key(p.stem)):
        s = _read_json(p)
        rows = s.get("per_task") if isinstance(s, dict) else None
        if not isinstance(rows, dict) or not rows:
            raise DataError("has no per-task scores", file=str(p), field="per_task",
                            fix="write the full promoe.metrics.score() result")
        for task, row in rows.items():
            missing = [k for k in (*METRICS, "n", "category") if not isinstance(row, dict) or k not in row]
            if missing:
                raise DataError(f"per_task[{task!r}] lacks {missing}", file=str(p), field="per_task",
                                fix="write the full promoe.metrics.score() result")
            bad = [k for k in (*METRICS, "n", LIKELIHOOD) if k in row and not _is_number(row[k])]
            if bad:  # no NaN (or text) reaches a statistic
                raise DataError(f"per_task[{task!r}] has non-finite or non-numeric {bad}", file=str(p),
                                field="per_task", fix="score the row again (promoe score … --output …)")
        _check_instances(s.get("per_instance"), rows, p)
        out[p.stem] = s
    return out


def _check_instances(per: object, per_task: dict, p: Path) -> None:
    """``per_instance`` (optional): ``{id: {task, rougeL, exact_match[, ref_nll]}}``, tasks among ``per_task``."""
    if per is None:
        return
    fix = "write the full promoe.metrics.score() result, or drop per_instance (rows are then taken as scored on " \
          "the same instances)"
    if not isinstance(per, dict):
        raise DataError("is not a mapping of instance ids", file=str(p), field="per_instance", fix=fix)
    for i, row in per.items():
        if not isinstance(row, dict) or row.get("task") not in per_task:
            raise DataError(f"per_instance[{i!r}] names no task of per_task", file=str(p), field="per_instance",
                            fix=fix)
        bad = [k for k in (*METRICS, LIKELIHOOD) if (k in METRICS and k not in row) or k in row and not _is_number(row[k])]
        if bad:
            raise DataError(f"per_instance[{i!r}] lacks or has non-finite {bad}", file=str(p), field="per_instance",
                            fix=fix)


def _seed_key(p: Path) -> tuple[int, int | str]:
    return (0, int(p.name)) if p.name.isdigit() else (1, p.name)


def _read_embeddings(path: Path) -> dict[str, np.ndarray]:
    fix = "write task_names, embeddings (n, d), categories and split, one entry per task"
    arrays = _read_npz(path, EMBEDDING_KEYS, fix)
    n, emb = len(arrays["task_names"]), arrays["embeddings"]
    if emb.ndim != 2 or len(emb) != n or any(len(arrays[k]) != n for k in ("categories", "split") if k in arrays):
        raise DataError(f"embeddings {emb.shape} do not match its {n} task_names (and categories, split)",
                        file=str(path), field="embeddings", fix=fix)
    return arrays


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _shape(x: object) -> str:
    if not isinstance(x, list):
        return f"a {type(x).__name__}"
    return f"{len(x)} rows of lengths {[len(r) if isinstance(r, list) else type(r).__name__ for r in x]}"


def _int_list(d: dict, key: str, n: int, path: Path, fix: str) -> None:
    if not (isinstance(v := d.get(key), list) and len(v) == n and all(_is_int(x) and x >= 0 for x in v)):
        raise DataError(f"must be {n} non-negative integers (one per cluster), got {v!r}", file=str(path),
                        field=key, fix=fix)


def _read_clusters(path: Path) -> dict:
    d = _read_json(path)
    if not isinstance(d, dict):
        raise DataError("is not a JSON object", file=str(path), fix=CLUSTERS_FIX)
    if not isinstance(d.get("method"), str):
        raise DataError(f"must name the cluster method, got {d.get('method')!r}", file=str(path), field="method",
                        fix=CLUSTERS_FIX)
    if not (_is_int(n := d.get("n")) and n >= 1):
        raise DataError(f"must be a positive integer, got {n!r}", file=str(path), field="n", fix=CLUSTERS_FIX)
    _int_list(d, "sizes", n, path, CLUSTERS_FIX)
    for key in ("val", "test"):
        v = d.get(key)
        if not (isinstance(v, dict) and all(_is_int(c) and 0 <= c < n for c in v.values())):
            raise DataError(f"must map each {key} task to a cluster in 0..{n - 1}", file=str(path), field=key,
                            fix=CLUSTERS_FIX)
    return d


def _read_matrix(path: Path, n_clusters: int | None) -> dict:
    m, file = _read_json(path), str(path)
    if not isinstance(m, dict):
        raise DataError("is not a JSON object", file=file, fix=MATRIX_FIX)
    for key in ("experts", "clusters"):
        if not (_is_int(m.get(key)) and m[key] >= 1):
            raise DataError(f"must be a positive integer, got {m.get(key)!r}", file=file, field=key, fix=MATRIX_FIX)
    n_exp, n = m["experts"], m["clusters"]
    if n_clusters is not None and n != n_clusters:
        raise DataError(f"is {n} but experts/clusters.json has {n_clusters} clusters", file=file, field="clusters",
                        fix="measure the matrix again (delete experts/matrix.json) on the clusters of clusters.json")
    if not (isinstance(loss := m.get("loss"), list) and len(loss) == n_exp and all(isinstance(r, list) and len(r) == n for r in loss)):
        raise DataError(f"must be {n_exp} experts x {n} clusters (a list of {n_exp} lists of {n}), got {_shape(loss)}",
                        file=file, field="loss", fix=MATRIX_FIX)
    for e, row in enumerate(loss):
        for c, v in enumerate(row):
            if v is not None and not _is_number(v):
                raise DataError(f"loss[{e}][{c}] is {v!r}; every entry must be a finite number or null", file=file,
                                field="loss", fix=MATRIX_FIX)
    for c in range(n):
        if len({row[c] is None for row in loss}) > 1:
            raise DataError(f"column {c} mixes numbers and null (null only for a cluster without validation "
                            "examples, in every expert's row)", file=file, field="loss", fix=MATRIX_FIX)
    for key in ("val_examples", "val_tasks"):
        if key in m:
            _int_list(m, key, n, path, MATRIX_FIX)
    for key in ("weight_distance", "output_distance"):  # experts x experts, finite and >= 0 (null: none measured)
        if (d := m.get(key)) is not None and not (isinstance(d, list) and len(d) == n_exp and all(
                isinstance(r, list) and len(r) == n_exp and all(_is_number(v) and v >= 0 for v in r) for r in d)):
            raise DataError(f"must be {n_exp} experts x {n_exp} experts of finite non-negative numbers, got "
                            f"{_shape(d)}", file=file, field=key, fix=MATRIX_FIX)
    own, with_data = Experts(None, m).own_best()
    for key, value in (("best_on_own", own), ("clusters_with_data", with_data)):
        if key in m and m[key] != value:
            raise DataError(f"is {m[key]!r} but the loss matrix gives {value}", file=file, field=key, fix=MATRIX_FIX)
    return m


def _read_experts(folder: Path) -> Experts | None:
    clusters = _read_clusters(folder / "clusters.json") if (folder / "clusters.json").is_file() else None
    n = None if clusters is None else clusters["n"]
    matrix = _read_matrix(folder / "matrix.json", n) if (folder / "matrix.json").is_file() else None
    return None if clusters is None and matrix is None else Experts(clusters, matrix)


def _read_logit_scale(path: Path) -> dict[str, dict]:
    d = _read_json(path)
    fix = "write it as promoe.stages.logit_scale.logit_scales returns it, or delete it"
    if not isinstance(d, dict):
        raise DataError("is not a JSON object", file=str(path), fix=fix)
    for model, s in d.items():
        for part in ("total", "static", "generated"):
            v = s.get(part) if isinstance(s, dict) else None
            if not (_is_number(v) and v >= 0):
                raise DataError(f"{model}.{part} is {v!r}, not a finite number >= 0", file=str(path), field=part,
                                fix=fix)
    return d


def load_run(run_dir: Path) -> RunData:
    """Read a run folder; only ``scores/`` is required."""
    run_dir = Path(run_dir)
    scores = _read_scores(run_dir / "scores") if (run_dir / "scores").is_dir() else {}
    if not scores:
        raise DataError("holds no scores/<model>.json", file=str(run_dir / "scores"),
                        fix="run the experiment first (python run_experiment.py) or point at a run folder")
    data = RunData(scores=scores)
    for folder in ("predictions", "likelihood"):  # a row with answers but no score file: named, never skipped silently
        for p in sorted((run_dir / folder).glob("*.jsonl")):
            if p.stem not in scores and p.stem not in data.missing:
                data.missing[p.stem] = f"{folder}/{p.name} is there, scores/{p.stem}.json is not"
    for p in sorted((run_dir / "routing").glob("*.npz"), key=lambda p: model_key(p.stem)):
        data.routing[p.stem] = _read_npz(p, ROUTING_KEYS, fix="write it with RoutingStats.save")
    if (run_dir / "task_embeddings.npz").is_file():
        data.embeddings = _read_embeddings(run_dir / "task_embeddings.npz")
    for p in sorted((run_dir / "train").glob("*/metrics.jsonl"), key=lambda p: model_key(p.parent.name)):
        rows = [r for _, r in iter_jsonl(p) if isinstance(r, dict) and isinstance(r.get("step"), int | float)]
        if rows:
            data.curves[p.parent.name] = rows
    if (run_dir / "splits.json").is_file():
        test = _read_json(run_dir / "splits.json")
        if isinstance(test, dict) and isinstance(test.get("test"), list):
            data.test_tasks = set(test["test"])
    if (run_dir / "seeds").is_dir():
        for d in sorted((run_dir / "seeds").iterdir(), key=_seed_key):
            if (d / "scores").is_dir() and (s := _read_scores(d / "scores")):
                data.seeds[d.name] = s
    data.experts = _read_experts(run_dir / "experts")
    if (run_dir / "routing" / "logit_scale.json").is_file():
        data.logit_scale = _read_logit_scale(run_dir / "routing" / "logit_scale.json")
    data.condition = _read_condition(run_dir / "config.yaml")
    return data


def _read_condition(path: Path) -> str | None:
    """The run's prompt condition from its ``config.yaml`` (None where the file or key is missing or unreadable:
    the report then does not name one)."""
    if not path.is_file():
        return None
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        log.warning("%s: unreadable; the report names no prompt condition", path)
        return None
    prompt = cfg.get("prompt") if isinstance(cfg, dict) else None
    condition = prompt.get("condition", "standard") if isinstance(prompt, dict) else None
    return condition if isinstance(condition, str) else None
