"""Analysis of a finished run, regenerated from the run's files alone (no model code, no retraining).

``analyze(run_dir)`` reads ``scores/<model>.json`` (required), and where present ``routing/<model>.npz``,
``train/<model>/metrics.jsonl``, ``splits.json``, ``seeds/<seed>/scores/<model>.json`` and
``REPORT_extra.md``; it writes ``significance.json``, ``seeds.json`` (several seeds only),
``figures/*.png`` and ``REPORT.md``, every file atomically. Also runnable: ``python -m promoe.analysis RUN_DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.figures import LABEL, METRICS, _model_key, draw_figures
from promoe.io import atomic_write_text, write_json
from promoe.significance import aggregate_seeds, bootstrap_ci, paired_test

log = logging.getLogger(__name__)

REFERENCE = "promoe"
ROUTING_KEYS = ("load", "tokens", "load_cv", "token_entropy", "task_names", "task_histograms")


@dataclass
class RunData:
    """Everything :func:`analyze` reads from a run folder."""

    scores: dict[str, dict]  # model -> score() dict
    routing: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model -> npz arrays
    curves: dict[str, list[dict]] = field(default_factory=dict)  # model -> metrics.jsonl rows
    seeds: dict[str, dict[str, dict]] = field(default_factory=dict)  # seed -> model -> score() dict
    test_tasks: set[str] | None = None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot be read as JSON ({e})", file=str(path), fix="rewrite or remove it") from None


def _read_scores(folder: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(folder.glob("*.json"), key=lambda p: _model_key(p.stem)):
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


def load_run(run_dir: Path) -> RunData:
    """Read a run folder; only ``scores/`` is required."""
    run_dir = Path(run_dir)
    scores = _read_scores(run_dir / "scores") if (run_dir / "scores").is_dir() else {}
    if not scores:
        raise DataError("holds no scores/<model>.json", file=str(run_dir / "scores"),
                        fix="run the experiment first (python run_experiment.py) or point at a run folder")
    data = RunData(scores=scores)
    for p in sorted((run_dir / "routing").glob("*.npz"), key=lambda p: _model_key(p.stem)):
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DataError(f"cannot be read ({e})", file=str(p), fix="rewrite or remove it") from None
        missing = [k for k in ROUTING_KEYS if k not in arrays]
        if missing:
            raise DataError(f"lacks {missing}", file=str(p), fix="write it with RoutingStats.save")
        data.routing[p.stem] = arrays
    for p in sorted((run_dir / "train").glob("*/metrics.jsonl"), key=lambda p: _model_key(p.parent.name)):
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


def significance(data: RunData, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Bootstrap CIs per model (task means and instance means), per category, and paired tests."""
    models, per_cat, rows_of = {}, {}, {}
    for m, s in data.scores.items():
        rows = rows_of[m] = task_rows(s, data.test_tasks)
        n = {t: r["n"] for t, r in rows.items()}
        entry: dict = {"n": sum(n.values()), "n_tasks": len(rows)}
        for metric in METRICS:
            vals = {t: r[metric] for t, r in rows.items()}
            entry[metric] = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
            entry[f"{metric}_instance"] = bootstrap_ci(vals, n_boot=n_boot, seed=seed, weights=n)
        models[m] = entry
        by_cat: dict[str, list[str]] = defaultdict(list)
        for t, r in rows.items():
            by_cat[r["category"]].append(t)
        per_cat[m] = {c: bootstrap_ci({t: rows[t]["rougeL"] for t in ts}, n_boot=n_boot, seed=seed,
                                      weights={t: rows[t]["n"] for t in ts}) for c, ts in sorted(by_cat.items())}
    ref = REFERENCE if REFERENCE in data.scores else next(iter(data.scores))
    paired = {o: {metric: paired_test({t: r[metric] for t, r in rows_of[ref].items()},
                                      {t: r[metric] for t, r in rows_of[o].items()}, n_boot=n_boot, seed=seed)
                  for metric in METRICS}
              for o in data.scores if o != ref}
    return {"n_boot": n_boot, "seed": seed, "alpha": 0.05, "reference": ref,
            "n_test_tasks": None if data.test_tasks is None else len(data.test_tasks),
            "models": models, "per_category_rougeL": per_cat, "paired": paired}


def seed_summary(seeds: dict[str, dict[str, dict]]) -> dict:
    """Per model: :func:`aggregate_seeds` of the overall ROUGE-L and EM over the seeds that scored it."""
    models = sorted({m for s in seeds.values() for m in s}, key=_model_key)
    return {m: {"seeds": [k for k in seeds if m in seeds[k]],
                **{metric: aggregate_seeds([s[m][metric] for s in seeds.values() if m in s]) for metric in METRICS}}
            for m in models}


# ------------------------------------------------------------------------------------------------ report


def _ci(c: dict) -> str:
    return f"{c['mean']:.2f} [{c['low']:.2f}, {c['high']:.2f}]"


def _p(p: float, n_boot: int) -> str:
    return f"< {1 / n_boot:.0e}" if p == 0 else f"{p:.3g}"


def _table(head: list[str], rows: list[list[str]], align: str = "---:") -> list[str]:
    return ["| " + " | ".join(head) + " |", "|---|" + f"{align}|" * (len(head) - 1),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def render_report(run_dir: Path, data: RunData, sig: dict, seeds: dict | None,
                  figures: dict[str, tuple[str, str]], skipped: dict[str, str]) -> str:
    """REPORT.md: headline, paired tests, per-category, routing and seed tables, then the figures."""
    models, ref, nb = sig["models"], sig["reference"], sig["n_boot"]
    split = "" if sig["n_test_tasks"] is None else f" {sig['n_test_tasks']} test tasks in `splits.json`."
    out = [f"# PRo-MoE analysis: run `{run_dir.name}`", "",
           f"Models: {', '.join(models)}.{split} Intervals are 95% percentile bootstraps over test tasks "
           f"({nb} resamples, seed {sig['seed']}): ROUGE-L and EM are the official instance means, their "
           "intervals resample tasks with all their instances; task means weigh every task the same.", "",
           "## Headline", ""]
    out += _table(["model", "ROUGE-L [95% CI]", "EM [95% CI]", "ROUGE-L task mean [95% CI]", "n instances",
                   "n tasks"],
                  [[m, _ci(e["rougeL_instance"]), _ci(e["exact_match_instance"]), _ci(e["rougeL"]), str(e["n"]),
                    str(e["n_tasks"])] for m, e in models.items()])
    if sig["paired"]:
        out += [f"## Paired tests: `{ref}` against each model", "",
                f"Per-task differences `{ref}` − other over the tasks both were scored on (task means); "
                "p values are two-sided (bootstrap of the mean difference; Wilcoxon signed-rank).", ""]
        out += _table(["vs", "metric", "diff [95% CI]", "p (bootstrap)", "p (Wilcoxon)", "wins / losses / ties",
                       "tasks"],
                      [[o, LABEL[k], f"{t['diff']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}]",
                        _p(t["p_bootstrap"], nb), f"{t['p_wilcoxon']:.3g}", f"{t['wins']} / {t['losses']} / {t['ties']}",
                        str(t["n_tasks"])] for o, tests in sig["paired"].items() for k, t in tests.items()])
    per_cat = sig["per_category_rougeL"]
    cats = sorted({c for m in models for c in per_cat[m]})
    out += ["## ROUGE-L per category", "", "Instance means with 95% bootstrap intervals over the category's tasks.", ""]
    out += _table(["category", "tasks", *models],
                  [[c.replace("_", " "), str(max(per_cat[m][c]["n_tasks"] for m in models if c in per_cat[m])),
                    *(_ci(per_cat[m][c]) if c in per_cat[m] else "" for m in models)] for c in cats])
    if data.routing:
        out += ["## Routing", "", "Means over MoE layers of the test-set routing statistics.", ""]
        rows = []
        for m, r in data.routing.items():
            n_exp = int(r["load"].shape[-1])
            h, hmax = float(np.mean(r["token_entropy"])), math.log(n_exp)
            rows.append([m, str(len(r["load_cv"])), str(n_exp), f"{float(np.mean(r['load_cv'])):.3f}",
                         (f"{h:.3f} / {hmax:.3f} ({100 * h / hmax:.0f}%)" if hmax > 0 else f"{h:.3f}"), f"{int(np.max(r['tokens']))}"])
        out += _table(["model", "MoE layers", "experts", "mean load CV", "token entropy / max (nats)",
                       "routed tokens per layer"], rows)
    if seeds:
        out += ["## Seeds", "", "Overall scores across seeds: mean ± sample std [95% t interval].", ""]
        out += _table(["model", "seeds", *(LABEL[k] for k in METRICS)],
                      [[m, str(len(s["seeds"])), *(f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f} "
                                                    f"[{s[k]['low']:.2f}, {s[k]['high']:.2f}]" for k in METRICS)]
                       for m, s in seeds.items()])
    out += ["## Figures", ""]
    for path, (alt, caption) in figures.items():
        out += [f"![{alt}]({path})", "", caption, ""]
    if skipped:
        out += ["Not drawn: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".", ""]
    text = "\n".join(out)
    extra = run_dir / "REPORT_extra.md"
    if extra.is_file():
        text += "\n" + extra.read_text(encoding="utf-8")
    return text


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
