"""What the analysis reads from a run folder (:func:`load_run` -> :class:`RunData`), checked as it is read.

Only ``scores/<row>.json`` is required; where present also ``routing/<row>.npz``, ``routing/logit_scale.json``,
``task_embeddings.npz``, ``train/<model>/metrics.jsonl``, ``splits.json`` (the test tasks and their groups),
``seeds/<seed>/scores/<row>.json`` and, for a run with
specialised experts, ``experts/clusters.json`` and ``experts/matrix.json``. Rows are read in report order
(:func:`promoe.registry.model_key`), so every table and figure lists them that way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from promoe.analysis.checks import is_number, read_json
from promoe.analysis.expertdata import Experts, read_experts
from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.limits import LimitError, read_yaml_file
from promoe.metrics import category_key
from promoe.registry import model_key

log = logging.getLogger(__name__)

METRICS = ("rougeL", "exact_match")
"""The per-task score fields every statistic, table and figure covers."""
LIKELIHOOD = "ref_nll"
"""The per-task reference NLL (:mod:`promoe.evaluation.likelihood`; lower is better), covered where every row compared has it
(rows without a model, and runs before it was measured, have none)."""
LABEL = {"rougeL": "ROUGE-L", "exact_match": "Exact match", LIKELIHOOD: "Reference NLL"}
ROUTING_KEYS = ("load", "tokens", "load_cv", "token_entropy", "task_names", "task_histograms")
EMBEDDING_KEYS = ("task_names", "embeddings")  # also read: categories, split



@dataclass
class RunData:
    """Everything :func:`promoe.analysis.analyze` reads from a run folder."""

    scores: dict[str, dict]  # row -> score() dict
    routing: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # row -> npz arrays
    curves: dict[str, list[dict]] = field(default_factory=dict)  # model -> metrics.jsonl rows
    seeds: dict[str, dict[str, dict]] = field(default_factory=dict)  # seed -> row -> score() dict
    test_tasks: set[str] | None = None
    groups: dict[str, str] | None = None  # splits.json's test_groups (None before they were written: tasks alone)
    embeddings: dict[str, np.ndarray] | None = None  # task_embeddings.npz arrays
    experts: Experts | None = None  # experts/*.json of a run with specialised experts
    logit_scale: dict[str, dict] | None = None  # routing/logit_scale.json: model -> total/static/generated spread
    condition: str | None = None  # config.yaml's prompt.condition (standard | router_only)
    name: str | None = None  # config.yaml's name (a published copy keeps its run's name in its report)
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
        s = read_json(p)
        rows = s.get("per_task") if isinstance(s, dict) else None
        if not isinstance(rows, dict) or not rows:
            raise DataError("has no per-task scores", file=str(p), field="per_task",
                            fix="write the full promoe.metrics.score() result")
        for task, row in rows.items():
            missing = [k for k in (*METRICS, "n", "category") if not isinstance(row, dict) or k not in row]
            if missing:
                raise DataError(f"per_task[{task!r}] lacks {missing}", file=str(p), field="per_task",
                                fix="write the full promoe.metrics.score() result")
            bad = [k for k in (*METRICS, "n", LIKELIHOOD) if k in row and not is_number(row[k])]
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
        bad = [k for k in (*METRICS, LIKELIHOOD) if (k in METRICS and k not in row) or k in row and not is_number(row[k])]
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


def _read_logit_scale(path: Path) -> dict[str, dict]:
    d = read_json(path)
    fix = "write it as promoe.stages.logit_scale.logit_scales returns it, or delete it"
    if not isinstance(d, dict):
        raise DataError("is not a JSON object", file=str(path), fix=fix)
    for model, s in d.items():
        for part in ("total", "static", "generated"):
            v = s.get(part) if isinstance(s, dict) else None
            if not (is_number(v) and v >= 0):
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
        test = read_json(run_dir / "splits.json")
        if isinstance(test, dict) and isinstance(test.get("test"), list):
            data.test_tasks = set(test["test"])
        data.groups = _read_groups(test, run_dir / "splits.json")
    if (run_dir / "seeds").is_dir():
        for d in sorted((run_dir / "seeds").iterdir(), key=_seed_key):
            if (d / "scores").is_dir() and (s := _read_scores(d / "scores")):
                data.seeds[d.name] = s
    data.experts = read_experts(run_dir / "experts")
    if (run_dir / "routing" / "logit_scale.json").is_file():
        data.logit_scale = _read_logit_scale(run_dir / "routing" / "logit_scale.json")
    data.condition, data.name = _read_config(run_dir / "config.yaml")
    return data


def _read_groups(splits: object, path: Path) -> dict[str, str] | None:
    """``test_groups`` of ``splits.json`` (test task -> group, :mod:`promoe.data.groups`), None where the run is
    from before it was written (every test task is then resampled on its own)."""
    groups = splits.get("test_groups") if isinstance(splits, dict) else None
    if groups is None:
        return None
    if not (isinstance(groups, dict) and all(isinstance(k, str) and isinstance(v, str) and v
                                             for k, v in groups.items())):
        raise DataError("must map each test task to its group's name (a non-empty string)", file=str(path),
                        field="test_groups", fix="write it with promoe.data.groups.task_groups, or delete the key "
                                                 "(every test task is then its own group)")
    return groups


def _read_config(path: Path) -> tuple[str | None, str | None]:
    """The run's prompt condition and name from its ``config.yaml`` (None where the file or key is missing or
    unreadable: the report then names no condition, and the run by its folder)."""
    if not path.is_file():
        return None, None
    try:
        cfg = read_yaml_file(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, LimitError):
        log.warning("%s: unreadable; the report names no prompt condition", path)
        return None, None
    cfg = cfg if isinstance(cfg, dict) else {}
    prompt = cfg.get("prompt")
    condition = prompt.get("condition", "standard") if isinstance(prompt, dict) else None
    name = cfg.get("name")
    return (condition if isinstance(condition, str) else None), (name if isinstance(name, str) and name else None)
