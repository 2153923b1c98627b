"""Analysis of a finished run, regenerated from the run's files alone (no model code, no retraining).

``analyze(run_dir)`` reads ``scores/<row>.json`` (required), and where present ``routing/<row>.npz``,
``task_embeddings.npz``, ``train/<model>/metrics.jsonl``, ``splits.json``, ``seeds/<seed>/scores/<row>.json``
and ``REPORT_extra.md``; it writes ``significance.json``, ``seeds.json`` (several seeds only),
``figures/*.png`` and ``REPORT.md``, every file atomically. Also runnable: ``python -m promoe.analysis RUN_DIR``
or ``promoe analyze --run RUN_DIR``.

A row is a scored system: a model (``promoe``), a router on the trained ``moe``'s experts (``knn``),
a heuristic (``copy_demo``) or a variant ``<base>-<variant>`` (``promoe-shuffled``, ``dense-fewshot``);
see :data:`promoe.figures.GROUPS`. ``significance.json`` holds, over the test tasks:

* ``models``: per row, 95% bootstrap CIs of task means and of instance means; ``per_category_rougeL``;
* ``paired``: the reference (``promoe``) against every other row over their common tasks, with
  Holm-adjusted Wilcoxon p values over that family (``p_wilcoxon_holm``);
* ``ablations``: per ``promoe-<variant>`` row and ``moe``, the paired change *row − promoe* per metric
  over common tasks, with both rows' means on those tasks (``mean``, ``reference_mean``);
* ``zero_vs_few_shot``: per base model, the zero-shot, ``-icl`` and ``-fewshot`` ROUGE-L CIs and the
  paired differences ``promoe − <base>-icl`` and ``promoe − <base>-fewshot``;
* ``routing_similarity``: per routing row, Spearman rho between tasks' routing similarity and their
  description similarity with a Mantel permutation p (``n_perm`` permutations), and the mean routing
  similarity of same- and different-category task pairs (:func:`promoe.routing_figures.routing_similarity`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.figures import (
    ADAPTATIONS,
    METRICS,
    draw_figures,
    model_key,
    row_group,
)
from promoe.io import atomic_write_text, write_json
from promoe.metrics import category_key
from promoe.report import REFERENCE, render_report
from promoe.routing_figures import routing_similarity
from promoe.significance import aggregate_seeds, bootstrap_ci, paired_test

log = logging.getLogger(__name__)

ROUTING_KEYS = ("load", "tokens", "load_cv", "token_entropy", "task_names", "task_histograms")
EMBEDDING_KEYS = ("task_names", "embeddings")  # also read: categories, split
MAX_PERMUTATIONS = 2000


@dataclass
class RunData:
    """Everything :func:`analyze` reads from a run folder."""

    scores: dict[str, dict]  # row -> score() dict
    routing: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # row -> npz arrays
    curves: dict[str, list[dict]] = field(default_factory=dict)  # model -> metrics.jsonl rows
    seeds: dict[str, dict[str, dict]] = field(default_factory=dict)  # seed -> row -> score() dict
    test_tasks: set[str] | None = None
    embeddings: dict[str, np.ndarray] | None = None  # task_embeddings.npz arrays

    def task_categories(self) -> dict[str, str]:
        """Task -> category key, from the scores (first row wins), else from ``task_embeddings.npz``."""
        cat = {}
        if self.embeddings is not None and "categories" in self.embeddings:
            cat = {str(t): category_key(str(c)) for t, c in
                   zip(self.embeddings["task_names"], self.embeddings["categories"], strict=True)}
        for s in reversed(list(self.scores.values())):
            cat |= {t: r["category"] for t, r in s["per_task"].items()}
        return cat


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
        out[p.stem] = s
    return out


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


def load_run(run_dir: Path) -> RunData:
    """Read a run folder; only ``scores/`` is required."""
    run_dir = Path(run_dir)
    scores = _read_scores(run_dir / "scores") if (run_dir / "scores").is_dir() else {}
    if not scores:
        raise DataError("holds no scores/<model>.json", file=str(run_dir / "scores"),
                        fix="run the experiment first (python run_experiment.py) or point at a run folder")
    data = RunData(scores=scores)
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
    return data


def task_rows(score: dict, test_tasks: set[str] | None) -> dict[str, dict]:
    """The per-task rows of a score dict, limited to the test tasks when the split is known."""
    rows = score["per_task"]
    if test_tasks is not None:
        kept = {t: r for t, r in rows.items() if t in test_tasks}
        if kept:
            return kept
        log.warning("no scored task is in splits.json's test list; using every scored task")
    return rows


def _vals(rows: dict[str, dict], metric: str) -> dict[str, float]:
    return {t: r[metric] for t, r in rows.items()}


def holm(p: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p values of one family of tests (step-down, monotone, capped at 1)."""
    out, running = {}, 0.0
    for k, name in enumerate(sorted(p, key=lambda n: p[n])):
        running = max(running, min(1.0, (len(p) - k) * p[name]))
        out[name] = running
    return out


def ablations(rows_of: dict[str, dict[str, dict]], *, n_boot: int, seed: int) -> dict:
    """Per ``promoe-<variant>`` row (and ``moe`` for context): paired ``row − promoe`` over common tasks;
    empty without ``promoe`` or without any ablation row."""
    if REFERENCE not in rows_of or not any(row_group(m) == "ablation" for m in rows_of):
        return {}
    ref, out = rows_of[REFERENCE], {}
    for m, rows in rows_of.items():
        if m != "moe" and row_group(m) != "ablation":
            continue
        common = sorted(set(rows) & set(ref))
        if not common:
            log.warning("%s shares no test task with %s; left out of the ablation table", m, REFERENCE)
            continue
        out[m] = {metric: {**paired_test(_vals(rows, metric), _vals(ref, metric), n_boot=n_boot, seed=seed),
                           "mean": float(np.mean([rows[t][metric] for t in common])),
                           "reference_mean": float(np.mean([ref[t][metric] for t in common]))}
                  for metric in METRICS}
    return out


def zero_vs_few_shot(models: dict[str, dict], rows_of: dict[str, dict[str, dict]], *, n_boot: int,
                     seed: int) -> dict:
    """Per base model with an ``-icl`` or ``-fewshot`` row: ROUGE-L CIs of the three settings and the
    paired differences ``promoe − <base>-icl`` and ``promoe − <base>-fewshot`` (task means)."""
    out = {}
    for base in ("backbone", "dense", "moe", "promoe"):
        names = {"zero_shot": base} | {k: f"{base}-{k}" for k in ADAPTATIONS}
        if not any(names[k] in rows_of for k in ADAPTATIONS):
            continue
        entry: dict = {k: models[n]["rougeL_instance"] if n in models else None for k, n in names.items()}
        for k in ADAPTATIONS:
            other = rows_of.get(names[k])
            ok = REFERENCE in rows_of and other is not None and set(other) & set(rows_of[REFERENCE])
            entry[f"promoe_minus_{k}"] = {
                metric: paired_test(_vals(rows_of[REFERENCE], metric), _vals(other, metric), n_boot=n_boot, seed=seed)
                for metric in METRICS} if ok else None
        out[base] = entry
    return out


def significance(data: RunData, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Bootstrap CIs per row (task and instance means), per category, paired tests, ablations,
    zero- vs few-shot differences and routing-vs-description similarity (see the module docstring)."""
    models, per_cat, rows_of = {}, {}, {}
    for m, s in data.scores.items():
        rows = rows_of[m] = task_rows(s, data.test_tasks)
        n = {t: r["n"] for t, r in rows.items()}
        entry: dict = {"n": sum(n.values()), "n_tasks": len(rows)}
        for metric in METRICS:
            vals = _vals(rows, metric)
            entry[metric] = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
            entry[f"{metric}_instance"] = bootstrap_ci(vals, n_boot=n_boot, seed=seed, weights=n)
        models[m] = entry
        by_cat: dict[str, list[str]] = defaultdict(list)
        for t, r in rows.items():
            by_cat[r["category"]].append(t)
        per_cat[m] = {c: bootstrap_ci({t: rows[t]["rougeL"] for t in ts}, n_boot=n_boot, seed=seed,
                                      weights={t: rows[t]["n"] for t in ts}) for c, ts in sorted(by_cat.items())}
    ref = REFERENCE if REFERENCE in data.scores else next(iter(data.scores))
    paired = {o: {metric: paired_test(_vals(rows_of[ref], metric), _vals(rows_of[o], metric), n_boot=n_boot,
                                      seed=seed) for metric in METRICS}
              for o in data.scores if o != ref and set(rows_of[o]) & set(rows_of[ref])}
    for metric in METRICS:
        for o, p in holm({o: t[metric]["p_wilcoxon"] for o, t in paired.items()}).items():
            paired[o][metric]["p_wilcoxon_holm"] = p
    n_perm = min(n_boot, MAX_PERMUTATIONS)
    return {"n_boot": n_boot, "seed": seed, "alpha": 0.05, "reference": ref,
            "n_test_tasks": None if data.test_tasks is None else len(data.test_tasks),
            "models": models, "per_category_rougeL": per_cat, "paired": paired,
            "ablations": ablations(rows_of, n_boot=n_boot, seed=seed),
            "zero_vs_few_shot": zero_vs_few_shot(models, rows_of, n_boot=n_boot, seed=seed),
            "n_perm": n_perm,
            "routing_similarity": routing_similarity(data.routing, data.embeddings, data.task_categories(),
                                                     keep=data.test_tasks, n_perm=n_perm, seed=seed)}


def seed_summary(seeds: dict[str, dict[str, dict]]) -> dict:
    """Per model: :func:`aggregate_seeds` of the overall ROUGE-L and EM over the seeds that scored it."""
    models = sorted({m for s in seeds.values() for m in s}, key=model_key)
    return {m: {"seeds": [k for k in seeds if m in seeds[k]],
                **{metric: aggregate_seeds([s[m][metric] for s in seeds.values() if m in s]) for metric in METRICS}}
            for m in models}


def analyze(run_dir: Path, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Regenerate significance tests, figures and REPORT.md of ``run_dir``; returns what was written."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    sig = significance(data, n_boot=n_boot, seed=seed)
    write_json(run_dir / "significance.json", sig)
    written: dict = {"significance": str(run_dir / "significance.json"), "seeds": None}
    seeds = seed_summary(data.seeds) if data.seeds else None
    if seeds:
        write_json(run_dir / "seeds.json", seeds)
        written["seeds"] = str(run_dir / "seeds.json")
    figures, skipped = draw_figures(run_dir, data, sig)
    atomic_write_text(run_dir / "REPORT.md", render_report(run_dir, data, sig, seeds, figures, skipped))
    written |= {"figures": [str(run_dir / p) for p in figures], "skipped": skipped,
                "report": str(run_dir / "REPORT.md")}
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m promoe.analysis RUN_DIR``: rewrite a run's analysis and report."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("run_dir", type=Path, help="a results/<run> folder holding scores/<model>.json")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    print(json.dumps(analyze(args.run_dir, n_boot=args.n_boot, seed=args.seed), indent=2))


if __name__ == "__main__":
    main()
