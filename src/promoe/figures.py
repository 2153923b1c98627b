"""Figures of a run (PNG, matplotlib Agg), drawn from the data :func:`promoe.analysis.load_run` read.

Overall and per-category scores with bootstrap CIs, expert utilisation per category and layer,
routing entropy and load balance, training curves. Every file is written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from promoe.io import atomic_write_bytes

if TYPE_CHECKING:
    from promoe.analysis import RunData

METRICS = ("rougeL", "exact_match")
LABEL = {"rougeL": "ROUGE-L", "exact_match": "Exact match"}
MODEL_ORDER = ("copy_input", "copy_demo", "backbone", "dense", "moe", "promoe")
DPI = 120


def _model_key(name: str) -> tuple[int, str]:
    return (MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER), name)


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
