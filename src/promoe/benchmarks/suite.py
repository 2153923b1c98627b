"""``promoe bench``: every performance measurement of the project in one run, as JSON and a Markdown table.

* the MoE layer against a dense FFN and transformers' Mixtral block, with its scaling in experts and
  tokens (:mod:`promoe.benchmarks.moe_layer`);
* zero-shot generation throughput of dense, token-level MoE, proactive MoE and the exported task
  sub-network (:mod:`promoe.benchmarks.generation`);
* training and evaluation throughput of the default configuration as a fraction of this machine's matmul
  peak (:mod:`promoe.benchmarks.throughput`);
* stage times and peak memory of the default experiment, read from a finished run's ``times.json``
  (``python run_experiment.py`` writes it; the benchmark does not rerun a 30-minute experiment).

Each headline ratio is reported against its target; the machine and library versions are recorded.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from promoe.benchmarks import generation, moe_layer, throughput
from promoe.io import atomic_write_text, write_json
from promoe.resources import PEAKS, stage_seconds

TARGETS = {
    "moe_vs_dense": ("<=", 1.2, "MoE layer fwd+bwd time / dense FFN with the activated parameters"),
    "moe_vs_hf_mixtral": (">=", 2.0, "speed-up of the MoE layer over transformers' MixtralSparseMoeBlock"),
    "export_vs_token_moe": (">=", 1.5, "generation tokens/s of the exported task sub-network / token-level MoE"),
    "default_peak_rss_gib": ("<=", 6.0, "peak memory (RSS, GiB) of `python run_experiment.py`"),
}


def machine() -> dict:
    """Where the numbers come from: the MoE-layer benchmark's record plus the commit measured."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {**moe_layer.machine(), "commit": commit}


def default_experiment(run_dir: Path) -> dict:
    """Stage times (s) and peak RSS of a finished run of the default preset."""
    path = run_dir / "times.json"
    if not path.exists():
        return {"run": str(run_dir), "missing": f"{path} not found: run `python run_experiment.py` first"}
    times = json.loads(path.read_text(encoding="utf-8"))
    stages = stage_seconds(times)
    stages.pop("lower_cache", None)  # part of the training stages
    return {"run": str(run_dir), "stages_s": stages, "total_s": sum(stages.values()),
            "lower_cache_s": times.get("lower_cache"), "peak_rss_gib": times.get("peak_rss_gib"),
            "peak_rss_gib_by_stage": times.get(PEAKS)}


def met(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, target, _ = TARGETS[key]
    return value <= target if op == "<=" else value >= target


def markdown(res: dict) -> str:
    """The headline ratios against their targets, then the detail tables."""
    m = res["machine"]
    lines = [f"# promoe bench{' (quick)' if res['quick'] else ''}", "",
             f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads; Python {m['python']}, torch {m['torch']}, "
             f"transformers {m['transformers']}; commit {m['commit']}.", "",
             "| metric | value | target | met |", "|---|---|---|---|"]
    for key, (op, target, what) in TARGETS.items():
        v = res[key]
        shown = "n/a" if v is None else f"{v:.2f}"
        ok = {True: "yes", False: "no", None: "n/a"}[met(key, v)]
        lines.append(f"| `{key}` ({what}) | {shown} | {op} {target} | {ok} |")
    layer = res["moe_layer"]
    lines += ["", "## MoE layer (fwd+bwd, seconds, medians)", "", "| shape | ours | dense | Mixtral |",
              "|---|---|---|---|"]
    for row in layer.get("table", []):
        lines.append(f"| {row['label']} | {row['ours']:.4f} | {row['dense']:.4f} | {row['hf_mixtral']:.4f} |")
    tp = res["throughput"]
    peak = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in tp["peak_flop_per_s"].items())
    tr, ev = tp["train"], tp["eval"]
    lines += ["", f"## Throughput against the matmul peak ({peak}; the run computes in {tp['dtype']})", "",
              "| work | rate | counted GFLOP/s | fraction of peak |", "|---|---|---|---|",
              f"| training, batch {tr['batch_size']} ({tr['tokens_per_step']} tokens) | {tr['tokens_per_s']:.0f} tokens/s "
              f"| {tr['flop_per_s'] / 1e9:.1f} | {res['train_fraction_of_peak']:.3f} |",
              f"| evaluation, batch {ev['batch_size']} × {ev['new_tokens']} new tokens | {ev['instances_per_s']:.2f} "
              f"instances/s | {ev['flop_per_s'] / 1e9:.1f} | {res['eval_fraction_of_peak']:.3f} |"]
    gen = res["generation"]
    w = gen["workload"]
    lines += ["", f"## Generation ({w['backbone']}, batch {w['batch_size']}, {w['prompt_tokens']} prompt tokens, "
                  f"{w['new_tokens']} new tokens, {w['n_experts']} experts of width {w['expert_width']}, top-{w['top_k']})",
              "", "| model | tokens/s | decode tokens/s |", "|---|---|---|"]
    for name, tps in gen["tokens_per_s"].items():
        lines.append(f"| {name} | {tps:.1f} | {gen['decode_tokens_per_s'][name]:.1f} |")
    p = gen["params"]
    lines += ["", f"Exported sub-network: {p['exported']:,} parameters, {100 * p['exported_vs_moe_total']:.1f}% of "
                  f"the full MoE ({p['moe_total']:,}); same tokens as the proactive MoE: "
                  f"{gen['exported_equals_promoe']}."]
    d = res["default_experiment"]
    lines += ["", "## Default experiment", ""]
    if "missing" in d:
        lines.append(d["missing"])
    else:
        lines.append(f"{d['run']}: {d['total_s'] / 60:.1f} min in all, peak RSS {d['peak_rss_gib']:.2f} GiB.")
        lines += ["", "| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in d["stages_s"].items()]
    return "\n".join(lines) + "\n"


def run_suite(*, quick: bool, run_dir: Path, preset: str = "default") -> dict:
    layer = moe_layer.run(quick=quick)
    gen = generation.run(quick=quick, preset=preset)
    tp = throughput.run(quick=quick, preset=preset)
    default = default_experiment(run_dir)
    res = {"quick": quick, "machine": machine(), "moe_vs_dense": layer["moe_vs_dense"],
           "moe_vs_hf_mixtral": layer["moe_vs_hf_mixtral"], "export_vs_token_moe": gen["export_vs_token_moe"],
           "default_peak_rss_gib": default.get("peak_rss_gib"), "peak_flop_per_s": tp["peak_flop_per_s"],
           "train_fraction_of_peak": tp["train_fraction_of_peak"], "eval_fraction_of_peak": tp["eval_fraction_of_peak"]}
    res["targets"] = {k: {"target": f"{op} {t}", "met": met(k, res[k])} for k, (op, t, _) in TARGETS.items()}
    res.update({"moe_layer": layer, "generation": gen, "throughput": tp, "default_experiment": default})
    return res


def write(res: dict, out: Path) -> Path:
    """``out`` (JSON) and the Markdown table beside it (same name, ``.md``); returns the Markdown path."""
    write_json(out, res)
    md = out.with_suffix(".md")
    atomic_write_text(md, markdown(res))
    return md
