"""bf16 against fp32 for the frozen lower layers (``model.dtype``), on the same instances and trained weights.

A run's trained rows are rebuilt twice from its folder, once with the frozen lower layers in fp32 and once in
bf16 (:mod:`promoe.model.precision`), and score the same test instances the way a run does (one shared pass
through the lower layers for all rows, greedy answers and each reference's NLL from the prompt's cache). Rows:
every model the run trained (``train/<row>/best.safetensors``), and over ``moe``'s experts the headroom's
``uniform`` mixing and ``oracle`` (the run's own ``oracle.json`` choices) when the run has them. Reported per
row: the share of answers identical, ROUGE-L and reference NLL under each dtype with bf16 - fp32 paired over
tasks (bootstrap CI, MDE); per pair of rows, the comparison (e.g. ``oracle`` - ``uniform``) under each dtype, so
a reader sees whether a conclusion changes; and the time of each dtype's scoring pass, side by side in one
process (fp32 first, then bf16, then fp32 again: the first pass warms caches, the two fp32 passes bound the
drift), with the CPU.

    python -m promoe.benchmarks.precision --run RUN_DIR [--tasks 40] [--per-task 4] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from promoe.analysis.stats import paired_test
from promoe.config import load_config
from promoe.data.schema import Task
from promoe.data.splits import load_splits
from promoe.evaluation.predict import Variant, eval_items, predict_variants
from promoe.io import write_json
from promoe.metrics import instance_scores
from promoe.model.build import replace_routers, variant_copy
from promoe.model.task_routing import TableRouting, task_routed
from promoe.resources import cpu
from promoe.rows.oracle import one_hot
from promoe.setup import Setup

DTYPES = ("fp32", "bf16", "fp32")


def variants(setup: Setup, run: Path, tasks: list[Task]) -> list[Variant]:
    """The run's trained rows, and ``uniform`` / ``oracle`` over ``moe``'s experts (module docstring)."""
    emb = setup.embed_tasks(tasks)
    out = []
    for w in sorted((run / "train").glob("*/best.safetensors")):
        name = w.parent.name
        if name == "experts":
            continue
        out.append(Variant(name, setup.model(name, w, experts=setup.experts_of(name, run)), emb))
    moe = next((v.model for v in out if v.name == "moe"), None)
    if moe is not None:
        uniform = variant_copy(moe)
        replace_routers(uniform, "uniform")
        out.append(Variant("uniform", uniform.eval(), emb))
        if (run / "oracle.json").is_file():
            choices = json.loads((run / "oracle.json").read_text())["choices"]
            n_layers, n_experts = len(moe.moe_layers), moe.moe_layers[0].experts.n_experts
            table = {t.name: one_hot(n_layers, n_experts, choices.get(t.name, {}).get("expert")) for t in tasks}
            out.append(Variant("oracle", task_routed(variant_copy(moe), TableRouting(table)).eval(), emb))
    return out


def score(setup: Setup, run: Path, tasks: list[Task], items: list) -> tuple[dict, dict, dict, float]:
    """Answers, instance ROUGE-L and reference NLL of every row, and the seconds of the scoring pass."""
    cfg = setup.cfg
    rows = variants(setup, run, tasks)
    nll: dict[str, dict[str, float]] = {v.name: {} for v in rows}
    t0 = time.perf_counter()
    answers = predict_variants(rows, setup.tokenizer, items, prompt=cfg.prompt, wrap=setup.wrap,
                               batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                               max_length=cfg.eval.max_length, batch_tokens=cfg.eval.batch_tokens,
                               likelihood=nll, max_target_length=cfg.train.max_target_length,
                               prefix_cache=cfg.eval.prefix_cache,
                               desc=f"scoring, lower layers in {setup.lower_dtype}")
    seconds = time.perf_counter() - t0
    rouge = {r: {i.id: 100 * instance_scores(a[i.id], i.outputs)[0] for _, i in items} for r, a in answers.items()}
    return answers, rouge, nll, seconds


def per_task(values: dict[str, float], items: list) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for t, i in items:
        by.setdefault(t.name, []).append(values[i.id])
    return {k: float(np.mean(v)) for k, v in by.items()}


def _test(a: dict, b: dict) -> dict:
    r = paired_test(a, b, n_boot=10000, seed=0)
    return {k: r[k] for k in ("diff", "low", "high", "mde", "n_tasks")}


def measure(run: Path, n_tasks: int, per: int) -> dict:
    caps = [f"data.test_max_per_task={per}", "data.headline_max_per_task=null"]
    test = load_splits(load_config(str(run / "config.yaml"), caps).data).test
    step = max(1, len(test) // n_tasks)
    tasks = test[::step][:n_tasks]
    items = eval_items(tasks, ("instance",))
    runs = []
    for dtype in DTYPES:
        setup = Setup.load(load_config(str(run / "config.yaml"), [*caps, f"model.dtype={dtype}"]))
        runs.append((setup.lower_dtype, *score(setup, run, tasks, items)))
    (_, a32, r32, n32, s32), (_, a16, r16, n16, s16), (_, _, _, _, s32b) = runs
    rows = {}
    for name in a32:
        same = sum(a32[name][i.id] == a16[name][i.id] for _, i in items)
        rows[name] = {"identical_answers": same, "instances": len(items),
                      "rougeL": {"fp32": float(np.mean(list(r32[name].values()))),
                                 "bf16": float(np.mean(list(r16[name].values()))),
                                 "bf16_minus_fp32": _test(per_task(r16[name], items), per_task(r32[name], items))},
                      "nll": {"fp32": float(np.mean(list(n32[name].values()))),
                              "bf16": float(np.mean(list(n16[name].values()))),
                              "bf16_minus_fp32": _test(per_task(n16[name], items), per_task(n32[name], items))}}
    pairs = {f"{x} - {y}": {d: {m: _test(per_task(src[m][x], items), per_task(src[m][y], items))
                                for m in ("rougeL", "nll")} for d, src in (("fp32", {"rougeL": r32, "nll": n32}),
                                                                          ("bf16", {"rougeL": r16, "nll": n16}))}
             for x, y in itertools.combinations(sorted(a32), 2)}
    return {"run": str(run), "tasks": len(tasks), "instances": len(items), "cpu": cpu(),
            "seconds": {"fp32": s32, "bf16": s16, "fp32_again": s32b}, "speedup": min(s32, s32b) / s16,
            "rows": rows, "comparisons": pairs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a run folder with trained models")
    ap.add_argument("--tasks", type=int, default=40, help="test tasks, spread over the list")
    ap.add_argument("--per-task", type=int, default=4, help="instances per test task")
    ap.add_argument("--json", type=Path, help="write the result here")
    a = ap.parse_args(argv)
    if a.tasks < 1 or a.per_task < 1:
        ap.error("--tasks and --per-task must be at least 1")
    torch.manual_seed(0)
    res = measure(a.run, a.tasks, a.per_task)
    print(json.dumps({k: res[k] for k in ("seconds", "speedup", "rows")}, indent=1))
    if a.json:
        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
