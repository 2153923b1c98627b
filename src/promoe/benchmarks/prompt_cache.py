"""The per-task prompt cache (``eval.prefix_cache``) off and on, on the same instances and trained weights.

A run's trained rows (those of :mod:`promoe.benchmarks.precision`: every model the run trained, ``uniform`` and
``oracle`` over ``moe``'s experts) score the same test instances the way a run does (one shared pass through the
lower layers per batch, greedy answers and each reference's NLL from the prompt's cache), with the cache off, on,
and off again, side by side in one process (the first pass warms caches; the two off passes bound the drift of a
shared machine), for each number of instances per task. Reported per setting: the seconds of each pass and of its
phases (``prefill``: the lower layers; ``upper``: each row's own layers over the prompts; ``greedy``: decoding;
``lower_targets`` and ``best_target_nll``: the references), the prompt positions each pass computed (padding
included: the cache's batches are cut differently) and their share of the plain pass's, whether every row's answers are identical and
the largest reference-NLL difference, and the CPU.

    python -m promoe.benchmarks.prompt_cache --run RUN_DIR [--tasks 24] [--per-task 2 8] [--batch-size 16] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import torch

import promoe.evaluation.decode
import promoe.evaluation.predict
from promoe.benchmarks.precision import variants
from promoe.config import load_config
from promoe.data.splits import load_splits
from promoe.evaluation.predict import eval_items, predict_variants
from promoe.io import write_json
from promoe.resources import cpu
from promoe.setup import Setup

PASSES = (("off", False), ("on", True), ("off_again", False))
PHASES = ("prefill", "upper", "greedy", "lower_targets", "best_target_nll")


@contextlib.contextmanager
def timed_phases(seconds: Counter, positions: Counter):
    """Inside the block, the seconds of each of :data:`PHASES` as :func:`promoe.evaluation.predict.predict_variants` calls
    them add to ``seconds``, and to ``positions`` the prompt positions of the batches (``plain``: each padded to its
    longest prompt) and those the passes computed (``computed``: less what the batches split by the cache saved)."""
    def timer(name, fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - t0
        return run

    def plan(input_ids, *args, **kwargs):
        layout = real_plan(input_ids, *args, **kwargs)
        positions["computed"] += layout.positions - input_ids.numel() if layout is not None else 0
        positions["batches_split"] += layout is not None
        return layout

    def prefill(model, input_ids, *args, **kwargs):
        positions["batches"] += 1
        positions["plain"] += input_ids.numel()  # the batch's prompts, padded to the longest
        positions["computed"] += input_ids.numel()  # less what a split saves (plan)
        return real_prefill(model, input_ids, *args, **kwargs)

    real_plan, real_prefill = promoe.evaluation.decode.plan, promoe.evaluation.predict.prefill
    with contextlib.ExitStack() as stack:
        for name in PHASES:
            fn = prefill if name == "prefill" else getattr(promoe.evaluation.predict, name)
            stack.enter_context(mock.patch.object(promoe.evaluation.predict, name, timer(name, fn)))
        stack.enter_context(mock.patch.object(promoe.evaluation.decode, "plan", plan))
        yield


def measure_one(run: Path, n_tasks: int, per: int, batch_size: int | None) -> dict:
    """Cache off, on, off again on ``n_tasks`` test tasks (spread over the list) x ``per`` instances each."""
    caps = [f"data.test_max_per_task={per}", "data.headline_max_per_task=null"]
    cfg = load_config(str(run / "config.yaml"), caps)
    test = load_splits(cfg.data).test
    tasks = test[::max(1, len(test) // n_tasks)][:n_tasks]
    items = eval_items(tasks, ("instance",))
    setup = Setup.load(cfg)
    rows = variants(setup, run, tasks)
    bs = batch_size or cfg.eval.batch_size
    out: dict = {"tasks": len(tasks), "per_task": per, "instances": len(items), "batch_size": bs,
                 "rows": [v.name for v in rows], "passes": {}}
    answers, nlls = {}, {}
    for label, cache in PASSES:
        seconds, positions = Counter(), Counter()
        nll: dict[str, dict[str, float]] = {v.name: {} for v in rows}
        with timed_phases(seconds, positions):
            t0 = time.perf_counter()
            answers[label] = predict_variants(
                rows, setup.tokenizer, items, prompt=cfg.prompt, wrap=setup.wrap, batch_size=bs,
                max_new_tokens=cfg.eval.max_new_tokens, max_length=cfg.eval.max_length,
                batch_tokens=cfg.eval.batch_tokens, likelihood=nll, max_target_length=cfg.train.max_target_length,
                prefix_cache=cache, desc=f"{per} per task, cache {label}", disable_progress=True)
            total = time.perf_counter() - t0
        nlls[label] = nll
        out["passes"][label] = {"seconds": total, "phases": {k: seconds[k] for k in PHASES},
                                "positions": dict(positions)}
        print(f"{per} per task, cache {label}: {total:.1f} s", {k: round(seconds[k], 1) for k in PHASES}, flush=True)
    on, off = out["passes"]["on"], out["passes"]
    out["speedup"] = min(off["off"]["seconds"], off["off_again"]["seconds"]) / on["seconds"]
    out["positions_share"] = on["positions"]["computed"] / off["off"]["positions"]["plain"]  # of the plain pass's
    out["identical_answers"] = {r: sum(answers["on"][r][i.id] == answers["off"][r][i.id] for _, i in items)
                                for r in answers["off"]}
    out["max_nll_diff"] = {r: max((abs(x - nlls["off"][r][k]) for k, x in nlls["on"][r].items()), default=0.0)
                           for r in nlls["off"]}
    out["off_passes_identical"] = answers["off"] == answers["off_again"]
    return out


def measure(run: Path, n_tasks: int, per_task: list[int], batch_size: int | None) -> dict:
    return {"run": str(run), "cpu": cpu(), "torch": torch.__version__,
            "settings": [measure_one(run, n_tasks, per, batch_size) for per in per_task]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a run folder with trained models")
    ap.add_argument("--tasks", type=int, default=24, help="test tasks, spread over the list")
    ap.add_argument("--per-task", type=int, nargs="+", default=[2, 8], help="instances per test task (each a setting)")
    ap.add_argument("--batch-size", type=int, help="prompts per batch (default: the run's eval.batch_size)")
    ap.add_argument("--json", type=Path, help="write the result here")
    a = ap.parse_args(argv)
    if a.tasks < 1 or min(a.per_task) < 1 or (a.batch_size is not None and a.batch_size < 1):
        ap.error("--tasks, --per-task and --batch-size must be at least 1")
    torch.manual_seed(0)
    res = measure(a.run, a.tasks, a.per_task, a.batch_size)
    print(json.dumps([{k: s[k] for k in ("per_task", "speedup", "positions_share", "identical_answers",
                                         "max_nll_diff")} for s in res["settings"]], indent=1))
    if a.json:
        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
