"""Analysis of a finished run, regenerated from the run's files alone (no model code, no retraining).

``analyze(run_dir)`` reads ``scores/<model>.json`` (required), and where present ``routing/<model>.npz``,
``train/<model>/metrics.jsonl``, ``splits.json``, ``seeds/<seed>/scores/<model>.json`` and
``REPORT_extra.md``; it writes ``significance.json``, ``seeds.json`` (several seeds only),
``figures/*.png`` and ``REPORT.md``, every file atomically. Also runnable: ``python -m promoe.analysis RUN_DIR``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.io import atomic_write_bytes, atomic_write_text, write_json
from promoe.significance import aggregate_seeds, bootstrap_ci, paired_test

log = logging.getLogger(__name__)

METRICS = ("rougeL", "exact_match")
LABEL = {"rougeL": "ROUGE-L", "exact_match": "Exact match"}
MODEL_ORDER = ("copy_input", "copy_demo", "backbone", "dense", "moe", "promoe")
REFERENCE = "promoe"
ROUTING_KEYS = ("load", "tokens", "load_cv", "token_entropy", "task_names", "task_histograms")
DPI = 120


@dataclass
class RunData:
    """Everything :func:`analyze` reads from a run folder."""

    scores: dict[str, dict]  # model -> score() dict
    routing: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model -> npz arrays
    curves: dict[str, list[dict]] = field(default_factory=dict)  # model -> metrics.jsonl rows
    seeds: dict[str, dict[str, dict]] = field(default_factory=dict)  # seed -> model -> score() dict
    test_tasks: set[str] | None = None


def _model_key(name: str) -> tuple[int, str]:
    return (MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER), name)


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


# ----------------------------------------------------------------------------------------------- figures


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())


def _colors(models: list[str] | set[str]) -> dict[str, tuple]:
    """One colour per model; pass every model of the run so that each keeps its colour in every figure."""
    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(models, key=_model_key))}


def _bars(ax, cis: list[dict | None], x: np.ndarray, width: float, **kw) -> None:
    mean = np.array([np.nan if c is None else c["mean"] for c in cis])
    err = np.array([[0.0, 0.0] if c is None else [c["mean"] - c["low"], c["high"] - c["mean"]] for c in cis])
    ax.bar(x, mean, width, yerr=np.maximum(err.T, 0), capsize=2, **kw)


def fig_overall(sig: dict, colors: dict[str, tuple]) -> Figure:
    models = list(sig["models"])
    fig = Figure(figsize=(max(6.0, 1.6 * len(models)), 4.2), layout="constrained")
    x = np.arange(len(models))
    for ax, metric in zip(fig.subplots(1, 2), METRICS, strict=True):
        _bars(ax, [sig["models"][m][f"{metric}_instance"] for m in models], x, 0.7, color=[colors[m] for m in models])
        ax.set_xticks(x, models, rotation=30, ha="right")
        ax.set_ylabel(f"{LABEL[metric]} (instance mean)")
        ax.set_title(f"{LABEL[metric]}, 95% CI over tasks")
        ax.grid(axis="y", alpha=0.3)
    return fig


def fig_per_category(sig: dict, colors: dict[str, tuple]) -> Figure:
    models = list(sig["models"])
    per_cat = sig["per_category_rougeL"]
    cats = sorted({c for m in models for c in per_cat[m]})
    width = 0.8 / len(models)
    fig = Figure(figsize=(max(7.0, len(cats) * (0.4 + 0.15 * len(models))), 4.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(cats))
    for i, m in enumerate(models):
        _bars(ax, [per_cat[m].get(c) for c in cats], x + (i - (len(models) - 1) / 2) * width, width,
              label=m, color=colors[m])
    ax.set_xticks(x, [c.replace("_", " ") for c in cats], rotation=35, ha="right")
    ax.set_ylabel("ROUGE-L (instance mean)")
    ax.set_title("ROUGE-L per category, 95% CI over the category's tasks")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncols=min(len(models), 6))
    return fig


def fig_expert_utilisation(model: str, routing: dict[str, np.ndarray], task_cat: dict[str, str]) -> Figure | None:
    hist = routing["task_histograms"]  # (n_tasks, n_layers, n_experts)
    if hist.ndim != 3 or hist.shape[0] == 0:
        return None
    cats = [task_cat.get(str(t), "(unknown)") for t in routing["task_names"]]
    names = sorted(set(cats))
    mat = np.stack([hist[[i for i, c in enumerate(cats) if c == k]].mean(0) for k in names])  # (C, L, E)
    n_layers, n_experts = hist.shape[1:]
    ncols = min(n_layers, 4)
    nrows = math.ceil(n_layers / ncols)
    fig = Figure(figsize=(2.0 + 0.35 * n_experts * ncols + 1.5, 1.2 + (0.3 * len(names) + 0.8) * nrows),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    vmax = float(mat.max()) or 1.0
    im = None
    for layer, ax in enumerate(axes):
        if layer >= n_layers:
            ax.set_visible(False)
            continue
        im = ax.imshow(mat[:, layer, :], aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_title(f"MoE layer {layer}", fontsize="medium")
        ax.set_xticks(range(n_experts), [str(e) for e in range(n_experts)], fontsize="small")
        ax.set_xlabel("expert")
        ax.set_yticks(range(len(names)), [c.replace("_", " ") for c in names] if layer % ncols == 0 else [])
    fig.colorbar(im, ax=axes[:n_layers].tolist(), label="share of top-k assignments")
    fig.suptitle(f"Expert utilisation per category: {model}")
    return fig


def fig_routing_entropy(routing: dict[str, dict[str, np.ndarray]], colors: dict[str, tuple]) -> Figure:
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax_h, ax_cv = fig.subplots(1, 2)
    for m, r in routing.items():
        layers = np.arange(len(r["token_entropy"]))
        ax_h.plot(layers, r["token_entropy"], marker="o", label=m, color=colors[m])
        ax_cv.plot(layers, r["load_cv"], marker="o", label=m, color=colors[m])
    for e in sorted({int(r["load"].shape[-1]) for r in routing.values()}):
        ax_h.axhline(math.log(e), color="gray", ls="--", lw=1, label=f"uniform over {e} experts")
    ax_h.set(xlabel="MoE layer", ylabel="mean token entropy (nats)", title="Routing entropy")
    ax_cv.set(xlabel="MoE layer", ylabel="load CV (0 = balanced)", title="Load balance")
    for ax in (ax_h, ax_cv):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def fig_training_curves(curves: dict[str, list[dict]], colors: dict[str, tuple]) -> Figure | None:
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for m, rows in curves.items():
        for key, style in (("loss", {"lw": 1, "alpha": 0.8}), ("val_loss", {"ls": "--", "marker": "o"})):
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=colors[m], label=f"{m} {key}", **style)
                drawn = True
    if not drawn:
        return None
    ax.set(xlabel="step", ylabel="loss", title="Training curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


FIGURE_TEXT = {
    "overall": "Overall ROUGE-L and exact match per model (official instance means) with 95% bootstrap "
               "intervals that resample test tasks.",
    "per_category_rougeL": "ROUGE-L per task category and model; error bars are 95% bootstrap intervals "
                           "over the category's tasks (none for a category with one task).",
    "expert_utilisation": "Share of top-k expert assignments of `{model}` per task category (rows) and "
                          "expert (columns), averaged over the category's tasks, one panel per MoE layer.",
    "routing_entropy": "Mean per-token routing entropy (dashed: the uniform maximum, log E) and load "
                       "coefficient of variation (0 = perfectly balanced) per MoE layer and model.",
    "training_curves": "Training loss (solid) and validation loss (dashed) against the optimiser step.",
}


def draw_figures(run_dir: Path, data: RunData, sig: dict) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Draw every figure whose inputs exist; returns ``({file: (alt, caption)}, {figure: why skipped})``."""
    out_dir, made, skipped = run_dir / "figures", {}, {}

    def emit(fig: Figure | None, stem: str, alt: str, caption: str) -> None:
        if fig is None:
            skipped[stem] = "its inputs hold no data"
            return
        _save(fig, out_dir / f"{stem}.png")
        made[f"figures/{stem}.png"] = (alt, caption)

    colors = _colors(set(data.scores) | set(data.routing) | set(data.curves))
    emit(fig_overall(sig, colors), "overall", "overall scores", FIGURE_TEXT["overall"])
    emit(fig_per_category(sig, colors), "per_category_rougeL", "ROUGE-L per category", FIGURE_TEXT["per_category_rougeL"])
    task_cat = {t: r["category"] for s in reversed(list(data.scores.values())) for t, r in s["per_task"].items()}
    for m, r in data.routing.items():
        emit(fig_expert_utilisation(m, r, task_cat), f"expert_utilisation_{m}", f"expert utilisation {m}",
             FIGURE_TEXT["expert_utilisation"].format(model=m))
    if data.routing:
        emit(fig_routing_entropy(data.routing, colors), "routing_entropy", "routing entropy", FIGURE_TEXT["routing_entropy"])
    else:
        skipped["expert_utilisation, routing_entropy"] = "no routing/<model>.npz"
    if data.curves:
        emit(fig_training_curves(data.curves, colors), "training_curves", "training curves", FIGURE_TEXT["training_curves"])
    else:
        skipped["training_curves"] = "no train/<model>/metrics.jsonl"
    return made, skipped


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
