"""Figures of a run (PNG, matplotlib Agg), drawn from :class:`~promoe.analysis.rundata.RunData` and the
significance dict (:func:`promoe.analysis.significance.significance`).

Overall and per-category scores with bootstrap CIs and training curves live here; the routing figures
(expert utilisation, entropy and load balance, routing vs description similarity, the map of routing
policies) in :mod:`promoe.analysis.routing_figures`, the expert x cluster matrix of a run with specialised
experts in :mod:`promoe.analysis.expert_figures`. Also the colour of each row, which every figure
shares: one hue per base row in registry order (:func:`promoe.registry.bases`), shades of it per
condition. Every file is written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from promoe.analysis.answer import fig_answer
from promoe.analysis.expert_figures import draw_expert_figures
from promoe.analysis.routing_figures import draw_routing_figures
from promoe.analysis.rows import main_groups
from promoe.analysis.rundata import LABEL, METRICS, RunData
from promoe.io import atomic_write_bytes
from promoe.registry import REFERENCE, bases, conditions, model_key, row_group, split_row

DPI = 120
SHADES = (("white", 0.45), ("black", 0.35), ("white", 0.7), ("black", 0.6))
"""How the k-th condition (:func:`promoe.registry.conditions`) shades its base row's colour."""
N_HUES = 10  # tab10: base rows beyond it take the palette of unregistered bases


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())


def _mix(c: tuple, other: str, t: float) -> tuple[float, float, float]:
    a, b = np.array(to_rgb(c)), np.array(to_rgb(other))
    return tuple(float(v) for v in (1 - t) * a + t * b)


def _colors(models: Iterable[str]) -> dict[str, tuple]:
    """A fixed colour per row: one hue per base row, a shade of it per condition (:data:`SHADES`: the
    first lighter, the second darker), a separate palette for other variants (ablations), so a row
    keeps its colour in every figure and run."""
    models = sorted(set(models), key=model_key)
    hues = bases()[:N_HUES]
    extra_bases = sorted({split_row(m)[0] for m in models} - set(hues))
    variants = [m for m in models if row_group(m) in ("ablation", "other") and split_row(m)[1]]
    out = {}
    for m in models:
        base, variant = split_row(m)
        c = (colormaps["tab10"](hues.index(base)) if base in hues
             else colormaps["tab20b"](extra_bases.index(base) % 20))
        if variant in conditions():
            c = _mix(c, *SHADES[conditions().index(variant) % len(SHADES)])
        elif variant:
            c = colormaps["Dark2"](variants.index(m) % 8)
        out[m] = c
    return out


def _group_lines(ax, models: list[str]) -> None:
    """Thin separators between report groups on a horizontal-bar axis (rows top to bottom)."""
    groups = [row_group(m) for m in models]
    for i in range(1, len(models)):
        if groups[i] != groups[i - 1]:
            ax.axhline(i - 0.5, color="gray", lw=0.6, alpha=0.6)


def _hbars(ax, cis: list[dict | None], y: np.ndarray, colors: list) -> None:
    mean = np.array([np.nan if c is None else c["mean"] for c in cis])
    err = np.array([[0.0, 0.0] if c is None else [c["mean"] - c["low"], c["high"] - c["mean"]] for c in cis])
    ax.barh(y, mean, 0.75, xerr=np.maximum(err.T, 0), capsize=2, color=colors)


def fig_overall(sig: dict, colors: dict[str, tuple]) -> Figure:
    models = list(sig["models"])
    fig = Figure(figsize=(11.0, 1.4 + 0.3 * len(models)), layout="constrained")
    y = np.arange(len(models))
    for i, (ax, metric) in enumerate(zip(fig.subplots(1, 2, sharey=True), METRICS, strict=True)):
        _hbars(ax, [sig["models"][m][f"{metric}_instance"] for m in models], y, [colors[m] for m in models])
        _group_lines(ax, models)
        if i == 0:
            ax.set_yticks(y, models)
            ax.invert_yaxis()
        ax.set_xlabel(f"{LABEL[metric]} (instance mean)")
        ax.set_title(f"{LABEL[metric]}, 95% CI over tasks")
        ax.grid(axis="x", alpha=0.3)
    return fig


def fig_per_category(sig: dict, models: list[str], colors: dict[str, tuple], title: str) -> Figure | None:
    """Small multiples: one panel per category, one horizontal bar per row, with 95% CIs."""
    per_cat = sig["per_category_rougeL"]
    cats = sorted({c for m in models for c in per_cat[m]})
    if not models or not cats:
        return None
    ncols = min(len(cats), 4)
    nrows = math.ceil(len(cats) / ncols)
    fig = Figure(figsize=(1.8 + 3.0 * ncols, 0.6 + nrows * (0.7 + 0.2 * len(models))), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    y = np.arange(len(models))
    for ax, cat in zip(axes, cats, strict=False):
        cis = [per_cat[m].get(cat) for m in models]
        _hbars(ax, cis, y, [colors[m] for m in models])
        _group_lines(ax, models)
        n = max(c["n_tasks"] for c in cis if c is not None)
        ax.set_title(f"{cat.replace('_', ' ')} ({n} task{'s' * (n != 1)})", fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(cats):]:
        ax.set_visible(False)
    axes[0].set_yticks(y, models)
    axes[0].invert_yaxis()
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("ROUGE-L (instance mean)")
    fig.suptitle(title)
    return fig


def fig_training_curves(curves: dict[str, list[dict]], colors: dict[str, tuple]) -> Figure | None:
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for m, rows in curves.items():
        for key, style in (("loss", {"lw": 1, "alpha": 0.8}), ("val_loss", {"ls": "--", "marker": "o"}),
                           ("val_loss_train_top_k", {"ls": ":", "marker": "x"})):
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
    "answer": "promoe − each row per test task (ROUGE-L, paired over common tasks) with its unadjusted 95% bootstrap "
              "CI; the grey band is ± the minimum detectable effect (the true difference a two-sided paired test at "
              "5% detects with 80% power). The CI's ends say which differences are ruled out. Green: promoe "
              "better, red: worse, by the Holm-adjusted test over the answer's family (grey: no difference "
              "detected).",
    "overall": "Overall ROUGE-L and exact match per row (official instance means) with 95% bootstrap "
               "intervals that resample test tasks; lines separate the report's groups.",
    "per_category_rougeL": "ROUGE-L per task category (one panel each) for the zero-shot models, heuristic "
                           "floors and routing baselines; error bars are 95% bootstrap intervals over the "
                           "category's tasks (none for a category with one task).",
    "per_category_rougeL_variants": f"ROUGE-L per task category for `{REFERENCE}` (reference) and its ablations, "
                                    "in-context and few-shot rows; 95% bootstrap intervals over the "
                                    "category's tasks.",
    "training_curves": "Training loss (solid) and validation loss (dashed; routed as the model is scored, what chooses "
                       "the checkpoint) against the optimiser step; where scoring routes with fewer experts than "
                       "training (`model.eval_top_k`), the validation loss routed as in training (dotted).",
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
    models = list(sig["models"])
    emit(fig_answer(sig), "answer", "the answer", FIGURE_TEXT["answer"])
    emit(fig_overall(sig, colors), "overall", "overall scores", FIGURE_TEXT["overall"])
    main = [m for m in models if row_group(m) in main_groups()]
    variants = [m for m in models if m not in main]
    if main:
        emit(fig_per_category(sig, main, colors, "ROUGE-L per category: zero-shot models and routers"),
             "per_category_rougeL", "ROUGE-L per category", FIGURE_TEXT["per_category_rougeL"])
    else:
        skipped["per_category_rougeL"] = "no zero-shot, heuristic or routing-baseline row"
    if variants:
        ref = [REFERENCE] if REFERENCE in sig["models"] else []
        emit(fig_per_category(sig, ref + variants, colors, "ROUGE-L per category: ablations, in-context, few-shot"),
             "per_category_rougeL_variants", "ROUGE-L per category, variants",
             FIGURE_TEXT["per_category_rougeL_variants"])
    else:
        skipped["per_category_rougeL_variants"] = "no ablation, in-context or few-shot row"
    draw_routing_figures(emit, skipped, data, sig, colors)
    if data.curves:
        emit(fig_training_curves(data.curves, colors), "training_curves", "training curves", FIGURE_TEXT["training_curves"])
    else:
        skipped["training_curves"] = "no train/<model>/metrics.jsonl"
    draw_expert_figures(emit, skipped, data.experts)
    return made, skipped
