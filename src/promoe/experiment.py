"""The experiment driver behind ``python run_experiment.py``.

It prepares the task splits, scores the heuristic baselines, trains and scores every model and
comparison row (:func:`promoe.stages.run_models`) and writes the analysis, every output a run owns
under ``<output_dir>/<name>/``.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import yaml
from accelerate import Accelerator

from promoe.analysis import analyze
from promoe.config import ExperimentConfig, to_dict
from promoe.data.groups import task_groups
from promoe.data.schema import QUIRK_RULES
from promoe.data.splits import TaskSplits, load_splits
from promoe.data.summary import summarize
from promoe.errors import ConfigError
from promoe.io import atomic_write_text, write_json
from promoe.resources import (
    CUT,
    PEAKS,
    SIMD_FLAGS,
    cpu,
    peak_rss_gib,
    record_stage,
    resume_times,
    stage_seconds,
)
from promoe.rundir import RunLock, check_experts_source, claim, is_finished, prepare
from promoe.stages.heuristics import run_heuristics

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("rougeL", "exact_match", "n", "rougeL_task_mean", "exact_match_task_mean", "n_tasks",
                "per_category")
LIKELIHOOD_KEYS = ("ref_nll", "ref_nll_task_mean")
"""In the summary of every row that has them (a row with a model, :mod:`promoe.evaluation.likelihood`)."""


def write_splits(splits: TaskSplits, run_dir: Path) -> None:
    """Record which tasks each split holds, where they came from, and every left-out candidate."""
    write_json(run_dir / "splits.json", {
        "sources": splits.sources,
        "train_collections": sorted({t.collection for t in splits.train + splits.val}),
        "train": [t.name for t in splits.train],
        "val": [t.name for t in splits.val],
        "test": [t.name for t in splits.test],
        "test_groups": task_groups(splits.test),  # the analysis's bootstrap resamples these (promoe.data.groups)
        "left_out": [{"task": d.task, "collection": d.collection, "reason": d.reason}
                     for d in splits.decisions if not d.kept],
        "instances_left_out_by_caps": splits.capped,
        "test_instances_available": splits.test_available,
        "test_per_task": splits.test_per_task,
        "test_tasks_with_fewer": splits.short_test_tasks(),
        "quirks": {"rules": {k: QUIRK_RULES[k] for k in sorted({q.kind for q in splits.quirks})},
                   "found": [{"task": q.task, "kind": q.kind, "where": q.where} for q in splits.quirks
                             if q.kind != "empty_reasoning"],
                   "empty_reasoning_tasks": sum(q.kind == "empty_reasoning" for q in splits.quirks)},
    })
    atomic_write_text(run_dir / "data_summary.txt", summarize(splits) + "\n")


def per_task_csv(results: dict[str, dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "task", "category", "n", "rougeL", "exact_match", "ref_nll"])
    for model, res in results.items():
        for task, row in res["per_task"].items():
            w.writerow([model, task, row["category"], row["n"], row["rougeL"], row["exact_match"], row.get("ref_nll", "")])
    return buf.getvalue()


def stage_notes(cfg: ExperimentConfig, splits: TaskSplits, times: dict[str, float]) -> str:
    """Run facts appended to REPORT.md: data, stage times, peak memory."""
    n_test = sum(len(t.instances) for t in splits.test)
    return "\n".join([
        "## Run", "",
        f"Test: {len(splits.test)} tasks, {n_test} instances. Meta-training pool: {len(splits.train)} training + "
        f"{len(splits.val)} validation tasks from {_train_sources(splits)} "
        f"(backbone {cfg.model.backbone}).", *_short_note(splits), "",
        "Prompt condition: " + ("standard (Definition + input)." if cfg.prompt.with_definition else
                                "router_only (the instance input alone: the task reaches a model only through "
                                "its router)."), "",
        "Stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in stage_seconds(times).items()) + ".",
        f"Peak memory (RSS): {times.get('peak_rss_gib', 0):.2f} GiB.", *_cpu_note(times.get("cpu")),
        *_dtype_note(times.get("dtype")),
        *_cut_note(times)])


def _cpu_note(c: dict | None) -> list[str]:
    """The CPU the times were measured on (``times.json``'s ``cpu``)."""
    if not c:
        return []
    return [f"CPU: {c['model']}, {c['cores']} cores, {c['threads']} torch threads, flags "
            f"{' '.join(c['flags']) or 'none of ' + ', '.join(SIMD_FLAGS)}, torch kernels {c['capability']}, "
            f"bf16 {'native' if c['native_bf16'] else 'not native'}"
            + (f" ({', '.join(f'{k}={v}' for k, v in c['env'].items())})" if c["env"] else "") + "."]


def _dtype_note(d: dict | None) -> list[str]:
    """What the models computed in (``times.json``'s ``dtype``: ``model.dtype`` resolved, ``train.mixed_precision``)."""
    if not d:
        return []
    return [f"Precision: the frozen lower layers in {d['frozen_lower_layers']} (model.dtype), the rest in fp32"
            + (f" under {d['mixed_precision']} autocast" if d["mixed_precision"] != "no" else "") + "."]


def _train_sources(splits: TaskSplits) -> str:
    """Where the training tasks were read from, as the splits record it."""
    return "; ".join(v for k, v in splits.sources.items() if k != "test")


def _short_note(splits: TaskSplits) -> list[str]:
    """Test tasks scored on fewer real instances than the others (partial tasks of the offline package)."""
    short = splits.short_test_tasks()
    if not short:
        return []
    return ["", f"{len(short)} test tasks have fewer than {splits.test_per_task} real instances: "
            + ", ".join(f"{k} ({v})" for k, v in short.items()) + "."]


def _cut_note(times: dict) -> list[str]:
    cut = {stage: c for stage, c in times.get(CUT, {}).items() if c[0]}
    if not cut:
        return [""]
    return ["", "Prompts longer than their limit lost their start (kept: the end, with the instance): " + ", ".join(
        f"{stage} {n} of {total} (over {limit} tokens)" for stage, (n, total, limit) in cut.items()) + ".", ""]


def run(cfg: ExperimentConfig, *, overwrite: bool = False) -> Path:
    """Run the experiment of ``cfg``; returns the run folder. Under ``accelerate launch`` / ``torchrun``
    every process runs this; the main process alone writes the run's files, holding the folder's lock.

    A folder holding this run resumes it (finished stages are not redone); a finished run is left as it
    is; a folder holding a run with another config is refused. ``overwrite`` starts again from nothing."""
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision)
    main = acc.is_main_process
    run_dir = Path(cfg.output_dir) / cfg.name
    lock = RunLock(run_dir).acquire() if main else None
    try:
        if main and not overwrite:
            prepare(run_dir, to_dict(cfg))  # refuses a folder holding another run
        acc.wait_for_everyone()
        if not overwrite and is_finished(run_dir):
            log.info("%s: this run is finished (summary.json, REPORT.md); nothing to do — pass --overwrite to "
                     "run it again from the start", run_dir)
            return run_dir
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        splits = load_splits(cfg.data)  # bad data stops the run here, before --overwrite empties the folder
        if cfg.experts.specialise and cfg.experts.from_run:  # so does a run without the experts it should start from
            check_experts_source(Path(cfg.experts.from_run), to_dict(cfg))
        record_stage(times, "data", time.perf_counter() - t0)
        if main and overwrite:
            prepare(run_dir, to_dict(cfg), overwrite=True)
        if main:
            claim(run_dir)
            times = resume_times(run_dir / "times.json", times)  # the stages an interrupted start finished
        acc.wait_for_everyone()
        return _run(cfg, acc, run_dir, splits, times)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: ExperimentConfig, acc: Accelerator, run_dir: Path, splits: TaskSplits, times: dict[str, float]) -> Path:
    main = acc.is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        write_splits(splits, run_dir)
        t0 = time.perf_counter()
        results = run_heuristics(splits.test, run_dir)
        record_stage(times, "heuristics", time.perf_counter() - t0)
    acc.wait_for_everyone()
    if cfg.train.models or cfg.eval.backbone:
        from promoe.stages import run_models

        model_results = run_models(cfg, splits, run_dir, times, acc)
    if not main:
        return run_dir
    results.update(model_results if cfg.train.models or cfg.eval.backbone else {})
    times["peak_rss_gib"] = max(peak_rss_gib(), *times.get(PEAKS, {}).values())  # an earlier start's too
    times["cpu"] = cpu()
    write_json(run_dir / "summary.json", {m: {k: r[k] for k in (*SUMMARY_KEYS, *LIKELIHOOD_KEYS) if k in r}
                                          for m, r in results.items()})
    atomic_write_text(run_dir / "per_task.csv", per_task_csv(results))
    write_json(run_dir / "times.json", times)
    atomic_write_text(run_dir / "REPORT_extra.md", stage_notes(cfg, splits, times))
    analyze(run_dir)
    log.info("results in %s", run_dir)
    return run_dir


SEED_COPY = ("config.yaml", "splits.json", "data_summary.txt", "references.jsonl", "summary.json", "per_task.csv",
             "times.json", "REPORT_extra.md", "scores", "predictions", "routing")


def run_seeds(cfg: ExperimentConfig, seeds: list[int], *, overwrite: bool = False) -> Path:
    """One run per seed in ``<run>/seeds/<seed>/``; ``<run>/`` shows the first seed's run in full and the
    mean ± CI of every model's overall scores over the seeds (``seeds.json`` and REPORT.md), with paired tests
    pooled over the seeds (``significance.json``'s ``over_seeds``). With specialised experts and
    ``experts.per_seed=false`` (the default) the experts are trained once, with the first seed, and every
    later seed starts from them (``experts.from_run``): the seeds then vary the models, routers and
    description-router rows learned over the same experts."""
    if twice := sorted({s for s in seeds if seeds.count(s) > 1}):  # before anything runs or is written
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: seed {twice[0]} is listed twice; the same seed gives "
                          "the same run, and counted twice it would make a mean ± CI of copies: list each seed once "
                          "(e.g. --seeds 0 1 2)")
    top = Path(cfg.output_dir) / cfg.name
    if Accelerator().is_main_process:
        with RunLock(top):
            claim(top)  # the seeds' parent is a run folder too (its own files are the first seed's copies)
    for i, seed in enumerate(seeds):
        seeded = replace(cfg, seed=seed, output_dir=str(top / "seeds"), name=str(seed))
        if i and cfg.experts.specialise and not cfg.experts.per_seed and not cfg.experts.from_run:
            # the experts once, with the first seed: later seeds re-seed only what is learned over them
            seeded = replace(seeded, experts=replace(cfg.experts, from_run=str(top / "seeds" / str(seeds[0]))))
        run(seeded, overwrite=overwrite)
    if not Accelerator().is_main_process:
        return top
    first = top / "seeds" / str(seeds[0])
    for item in SEED_COPY:
        src, dst = first / item, top / item
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dst)
    for curves in [*(first / "train").glob("*/metrics.jsonl"), *(first / "train").glob("*/compute.json")]:
        (top / "train" / curves.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(curves, top / "train" / curves.parent.name / curves.name)
    analyze(top)
    return top
