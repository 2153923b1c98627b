"""The experiment driver behind ``python run_experiment.py``.

Today it prepares the task splits and runs the heuristic baselines on the test tasks, writing every
output a run owns under ``<output_dir>/<name>/``; model training and evaluation plug in here.
"""

from __future__ import annotations

import csv
import io
import logging
import resource
import time
from pathlib import Path

import yaml

from promoe.analysis import analyze
from promoe.baselines import run_heuristics
from promoe.config import ExperimentConfig, to_dict
from promoe.data.splits import TaskSplits, load_splits
from promoe.data.summary import summarize
from promoe.io import atomic_write_text, write_json

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("rougeL", "exact_match", "n", "rougeL_task_mean", "exact_match_task_mean", "n_tasks",
                "per_category")


def write_splits(splits: TaskSplits, run_dir: Path) -> None:
    """Record which tasks each split holds, where they came from, and every left-out candidate."""
    write_json(run_dir / "splits.json", {
        "sources": splits.sources,
        "train_collections": sorted({t.collection for t in splits.train + splits.val}),
        "train": [t.name for t in splits.train],
        "val": [t.name for t in splits.val],
        "test": [t.name for t in splits.test],
        "left_out": [{"task": d.task, "collection": d.collection, "reason": d.reason}
                     for d in splits.decisions if not d.kept],
    })
    atomic_write_text(run_dir / "data_summary.txt", summarize(splits) + "\n")


def per_task_csv(results: dict[str, dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "task", "category", "n", "rougeL", "exact_match"])
    for model, res in results.items():
        for task, row in res["per_task"].items():
            w.writerow([model, task, row["category"], row["n"], row["rougeL"], row["exact_match"]])
    return buf.getvalue()


def stage_notes(cfg: ExperimentConfig, splits: TaskSplits, times: dict[str, float]) -> str:
    """Run facts appended to REPORT.md: data, stage times, peak memory."""
    n_test = sum(len(t.instances) for t in splits.test)
    return "\n".join([
        "## Run", "",
        f"Test: {len(splits.test)} tasks, {n_test} instances. Meta-training pool: {len(splits.train)} training + "
        f"{len(splits.val)} validation tasks from {', '.join(cfg.data.train_collections)} "
        f"(backbone {cfg.model.backbone}).", "",
        "Stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items() if k != "peak_rss_gib") + ".",
        f"Peak memory (RSS): {times.get('peak_rss_gib', 0):.2f} GiB.", ""])


def run(cfg: ExperimentConfig) -> Path:
    """Run the experiment of ``cfg``; returns the run folder."""
    run_dir = Path(cfg.output_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    splits = load_splits(cfg.data)
    write_splits(splits, run_dir)
    times["data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = run_heuristics(splits.test, run_dir)
    times["heuristics"] = time.perf_counter() - t0
    if cfg.train.models or cfg.eval.backbone:
        from promoe.pipeline import run_models

        results.update(run_models(cfg, splits, run_dir, times))
    times["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json(run_dir / "summary.json", {m: {k: r[k] for k in SUMMARY_KEYS} for m, r in results.items()})
    atomic_write_text(run_dir / "per_task.csv", per_task_csv(results))
    write_json(run_dir / "times.json", times)
    atomic_write_text(run_dir / "REPORT_extra.md", stage_notes(cfg, splits, times))
    analyze(run_dir)
    log.info("results in %s", run_dir)
    return run_dir
