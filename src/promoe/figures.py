"""Figures of a run (PNG, matplotlib Agg), drawn from the data :func:`promoe.analysis.load_run` read.

Overall and per-category scores with bootstrap CIs and training curves live here; the routing figures
(expert utilisation, entropy and load balance, routing vs description similarity, the map of routing
policies) in :mod:`promoe.routing_figures`. Also the row order, groups and colours every table and
figure shares. Every file is written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from promoe.io import atomic_write_bytes
from promoe.routing_figures import draw_routing_figures

if TYPE_CHECKING:
    from promoe.analysis import RunData

METRICS = ("rougeL", "exact_match")
LABEL = {"rougeL": "ROUGE-L", "exact_match": "Exact match"}
# Rows of a run by group, in report order. A row's base model is the part of its name before the
# first "-", its variant the rest; rows not listed here are placed by :func:`row_group`.
GROUPS: dict[str, tuple[str, ...]] = {
    "zero-shot": ("copy_input", "copy_demo", "backbone", "dense", "moe", "promoe"),
    "routing": ("knn", "skill", "uniform", "random"),
    "ablation": ("promoe-shuffled", "promoe-empty", "promoe-random_text", "promoe-category", "promoe-paraphrase"),
    "adaptation": ("backbone-icl", "dense-icl", "moe-icl", "promoe-icl", "dense-fewshot", "moe-fewshot",
                   "promoe-fewshot"),
    "other": (),
}
GROUP_TITLE = {
    "zero-shot": "Zero-shot models and heuristic floors",
    "routing": "Routing baselines (zero-shot routers on the trained `moe`'s experts)",
    "ablation": "Ablations of `promoe`'s router input (prompt unchanged)",
    "adaptation": "In-context (Definition + 2 positive examples) and few-shot fine-tuning",
    "other": "Other rows",
}
MODEL_ORDER = tuple(m for rows in GROUPS.values() for m in rows)
ADAPTATIONS = ("icl", "fewshot")
BASES = ("copy_input", "copy_demo", "backbone", "dense", "moe", "promoe", "knn", "skill", "uniform", "random")
DPI = 120


def split_row(name: str) -> tuple[str, str]:
    """``(base, variant)`` of a row name: ``"promoe-icl"`` -> ``("promoe", "icl")``; no variant -> ``""``."""
    base, _, variant = name.partition("-")
    return base, variant


def row_group(name: str) -> str:
    """The report group of a row (a key of :data:`GROUPS`), also for rows not listed there."""
    for group, rows in GROUPS.items():
        if name in rows:
            return group
    base, variant = split_row(name)
    if variant in ADAPTATIONS:
        return "adaptation"
    if variant and base == "promoe":
        return "ablation"
    return "other"


def model_key(name: str) -> tuple[int, int, str]:
    """Sort key: group, then the position in :data:`MODEL_ORDER`, then the name."""
    pos = MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER)
    return list(GROUPS).index(row_group(name)), pos, name


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())


def _mix(c: tuple, other: str, t: float) -> tuple[float, float, float]:
    a, b = np.array(to_rgb(c)), np.array(to_rgb(other))
    return tuple(float(v) for v in (1 - t) * a + t * b)


def _colors(models: Iterable[str]) -> dict[str, tuple]:
    """A fixed colour per row: one hue per base model, lighter for ``-icl``, darker for ``-fewshot``,
    a separate palette for ``promoe`` ablations, so a row keeps its colour in every figure and run."""
    models = sorted(set(models), key=model_key)
    extra_bases = sorted({split_row(m)[0] for m in models} - set(BASES))
    ablations = [m for m in models if row_group(m) in ("ablation", "other") and split_row(m)[1]]
    out = {}
    for m in models:
        base, variant = split_row(m)
        c = (colormaps["tab10"](BASES.index(base)) if base in BASES
             else colormaps["tab20b"](extra_bases.index(base) % 20))
        if variant == "icl":
            c = _mix(c, "white", 0.45)
        elif variant == "fewshot":
            c = _mix(c, "black", 0.35)
        elif variant:
            c = colormaps["Dark2"](ablations.index(m) % 8)
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
    "overall": "Overall ROUGE-L and exact match per row (official instance means) with 95% bootstrap "
               "intervals that resample test tasks; lines separate the report's groups.",
    "per_category_rougeL": "ROUGE-L per task category (one panel each) for the zero-shot models, heuristic "
                           "floors and routing baselines; error bars are 95% bootstrap intervals over the "
                           "category's tasks (none for a category with one task).",
    "per_category_rougeL_variants": "ROUGE-L per task category for `promoe` (reference) and its ablations, "
                                    "in-context and few-shot rows; 95% bootstrap intervals over the "
                                    "category's tasks.",
    "training_curves": "Training loss (solid) and validation loss (dashed) against the optimiser step.",
}

Emit = Callable[[Figure | None, str, str, str], None]


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
    emit(fig_overall(sig, colors), "overall", "overall scores", FIGURE_TEXT["overall"])
    main = [m for m in models if row_group(m) in ("zero-shot", "routing")]
    variants = [m for m in models if row_group(m) not in ("zero-shot", "routing")]
    if main:
        emit(fig_per_category(sig, main, colors, "ROUGE-L per category: zero-shot models and routers"),
             "per_category_rougeL", "ROUGE-L per category", FIGURE_TEXT["per_category_rougeL"])
    else:
        skipped["per_category_rougeL"] = "no zero-shot, heuristic or routing-baseline row"
    if variants:
        ref = ["promoe"] if "promoe" in sig["models"] else []
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
    return made, skipped
