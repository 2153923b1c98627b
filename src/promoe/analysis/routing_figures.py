"""Routing figures of a run, drawn from :class:`~promoe.analysis.rundata.RunData` and the significance dict.

Expert utilisation per category and layer (one heatmap per profiled row), routing entropy and load
balance (every routed row), routing vs description similarity (scatter, one panel per profiled row)
and a 2-D PCA map of the task-routed rows' routing policies by category. Which rows get which figure
is derived from the registry (:mod:`promoe.analysis.rows`); the numbers come from
:mod:`promoe.analysis.stats`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from promoe.analysis.rows import profiled_rows, task_routed_rows
from promoe.analysis.rundata import RunData
from promoe.analysis.stats import UNKNOWN, TaskSimilarity, kept_indices, task_similarity

TOP_CATEGORIES = 8


def fig_expert_utilisation(model: str, routing: dict[str, np.ndarray], task_cat: dict[str, str]) -> Figure | None:
    hist = routing["task_histograms"]  # (n_tasks, n_layers, n_experts)
    if hist.ndim != 3 or hist.shape[0] == 0:
        return None
    cats = [task_cat.get(str(t), UNKNOWN) for t in routing["task_names"]]
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
    """Bars: mean over MoE layers; dots: each layer. One row per routing file, so many rows stay readable."""
    models = list(routing)
    fig = Figure(figsize=(11.0, 1.6 + 0.3 * len(models)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(models))
    for ax, key in zip(axes, ("token_entropy", "load_cv"), strict=True):
        vals = [np.nan_to_num(np.asarray(routing[m][key], dtype=float).ravel()) for m in models]
        ax.barh(y, [v.mean() if v.size else 0.0 for v in vals], 0.7, color=[colors[m] for m in models], alpha=0.85)
        for k, v in enumerate(vals):
            ax.plot(v, np.full(len(v), k), ls="none", marker=".", color="black", ms=4,
                    label="one MoE layer" if k == 0 else None)
        ax.grid(axis="x", alpha=0.3)
    hmax = [math.log(max(int(routing[m]["load"].shape[-1]), 1)) for m in models]
    axes[0].plot(hmax, y, ls="none", marker="|", color="crimson", ms=14, mew=2, label="uniform maximum, log E")
    axes[0].set_yticks(y, models)
    axes[0].invert_yaxis()
    axes[0].set(xlabel="mean token entropy (nats)", title="Routing entropy (bar: mean over layers)")
    axes[1].set(xlabel="load coefficient of variation (0 = balanced)", title="Load balance (bar: mean over layers)")
    fig.legend(handles=axes[0].get_legend_handles_labels()[0], loc="outside lower center", ncols=2,
               fontsize="small")
    return fig


def fig_routing_vs_description(sims: dict[str, TaskSimilarity], numbers: dict[str, dict]) -> Figure | None:
    if not sims:
        return None
    ncols = 2 if len(sims) > 1 else 1
    nrows = math.ceil(len(sims) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 4.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    rng = np.random.default_rng(0)
    for ax, (m, sim) in zip(axes, sims.items(), strict=False):
        route, desc, same, known = sim.pairs()
        shown = np.sort(rng.choice(len(route), 20000, replace=False)) if len(route) > 20000 else np.arange(len(route))
        s = numbers.get(m, {})
        for mask, color, what, mean in ((known & ~same, "tab:gray", "different category", "diff_category_mean"),
                                        (same, "tab:orange", "same category", "same_category_mean"),
                                        (~known, "tab:blue", "category unknown", None)):
            sel = shown[mask[shown]]
            if len(sel):
                label = what if mean is None or s.get(mean) is None else f"{what} (mean {s[mean]:.2f})"
                ax.scatter(desc[sel], route[sel], s=5, alpha=0.4, color=color, label=label, linewidths=0)
        rho = s.get("spearman_rho")
        ax.set_title(f"{m}: Spearman ρ = {rho:+.2f}, Mantel p = {s['p']:.3g}" if rho is not None
                     else f"{m}: ρ undefined (a similarity is constant)", fontsize="medium")
        ax.set(xlabel="description cosine similarity", ylabel="routing cosine similarity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", markerscale=3)
    for ax in axes[len(sims):]:
        ax.set_visible(False)
    fig.suptitle("Task pairs: routing similarity vs description similarity")
    return fig


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal-component scores (n, 2) and their explained-variance shares (numpy SVD)."""
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    k = min(2, len(s))
    coords, share = np.zeros((len(x), 2)), np.zeros(2)
    coords[:, :k] = u[:, :k] * s[:k]
    total = float((s**2).sum())
    if total > 0:
        share[:k] = s[:k] ** 2 / total
    return coords, share


def fig_routing_map(routing: dict[str, dict[str, np.ndarray]], task_cat: dict[str, str],
                    keep: set[str] | None = None) -> Figure | None:
    panels = []
    for m, r in routing.items():
        names = [str(t) for t in r["task_names"]]
        idx = kept_indices(names, keep)
        if len(idx) >= 3:
            coords, share = _pca2(r["task_histograms"][idx].reshape(len(idx), -1).astype(np.float64))
            panels.append((m, [names[i] for i in idx], coords, share))
    if not panels:
        return None
    counts = Counter(task_cat.get(t, UNKNOWN) for t in {t for p in panels for t in p[1]})
    top = sorted((c for c in counts if c != UNKNOWN), key=lambda c: (-counts[c], c))[:TOP_CATEGORIES]
    palette = [colormaps["tab10"](i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
    color = {c: palette[k] for k, c in enumerate(top)}
    fig = Figure(figsize=(4.6 * len(panels) + 2.6, 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    for ax, (m, names, coords, share) in zip(axes, panels, strict=True):
        cats = [task_cat.get(t, UNKNOWN) for t in names]
        grey = np.array([c not in color for c in cats])
        ax.scatter(coords[grey, 0], coords[grey, 1], s=14, color="lightgray", linewidths=0)
        for c in top:
            sel = np.array([x == c for x in cats])
            ax.scatter(coords[sel, 0], coords[sel, 1], s=22, color=color[c], linewidths=0)
        ax.set(title=f"{m} ({len(names)} tasks)", xlabel=f"PC 1 ({100 * share[0]:.0f}% of variance)",
               ylabel=f"PC 2 ({100 * share[1]:.0f}% of variance)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="none", marker="o", color=color[c], label=c.replace("_", " ")) for c in top]
    if len(counts) > len(top):
        handles.append(Line2D([], [], ls="none", marker="o", color="lightgray", label="other"))
    fig.legend(handles=handles, loc="outside right center", fontsize="small", title="category")
    fig.suptitle("Routing policies of the test tasks (PCA of flattened expert histograms)")
    return fig


FIGURE_TEXT = {
    "expert_utilisation": "Share of top-k expert assignments of `{model}` per task category (rows) and "
                          "expert (columns), averaged over the category's tasks, one panel per MoE layer.",
    "routing_entropy": "Mean per-token routing entropy (red tick: the uniform maximum, log E) and load "
                       "coefficient of variation (0 = perfectly balanced) per routing row; bars are means "
                       "over MoE layers, dots single layers.",
    "routing_vs_description": "Every pair of test tasks: cosine similarity of their routing policies "
                              "(flattened expert histograms) against that of their description embeddings; "
                              "titles give Spearman's rho over pairs and its Mantel permutation p value.",
    "routing_map": "The test tasks' routing policies (flattened expert histograms) projected on their first "
                   "two principal components, one panel per router, coloured by category (the most "
                   f"frequent {TOP_CATEGORIES}; the rest grey).",
}

Emit = Callable[[Figure | None, str, str, str], None]


def draw_routing_figures(emit: Emit, skipped: dict[str, str], data: RunData, sig: dict,
                         colors: dict[str, tuple]) -> None:
    """Emit the routing figures whose inputs exist; record why the others are not drawn in ``skipped``.

    Heatmaps and similarity panels: :func:`~promoe.analysis.rows.profiled_rows`; the map:
    :func:`~promoe.analysis.rows.task_routed_rows`; entropy and load balance: every routed row."""
    if not data.routing:
        skipped["expert_utilisation, routing_entropy, routing_vs_description, routing_map"] = "no routing/<model>.npz"
        return
    task_cat = data.task_categories()
    profiled = profiled_rows()
    heat = [m for m in profiled if m in data.routing]
    for m in heat:
        emit(fig_expert_utilisation(m, data.routing[m], task_cat), f"expert_utilisation_{m}",
             f"expert utilisation {m}", FIGURE_TEXT["expert_utilisation"].format(model=m))
    if not heat:
        skipped["expert_utilisation"] = f"no routing npz of {', '.join(profiled)}"
    emit(fig_routing_entropy(data.routing, colors), "routing_entropy", "routing entropy",
         FIGURE_TEXT["routing_entropy"])
    rows = [m for m in profiled if m in data.routing]
    if data.embeddings is None:
        skipped["routing_vs_description"] = "no task_embeddings.npz in the run folder"
    elif not rows:
        skipped["routing_vs_description"] = f"no routing npz of {', '.join(profiled)}"
    else:
        sims = {m: s for m in rows if (s := task_similarity(data.routing[m], data.embeddings, task_cat,
                                                            data.test_tasks)) is not None}
        if sims:
            emit(fig_routing_vs_description(sims, sig.get("routing_similarity", {})), "routing_vs_description",
                 "routing vs description similarity", FIGURE_TEXT["routing_vs_description"])
        else:
            skipped["routing_vs_description"] = "fewer than 3 routed tasks have a description embedding"
    mapped = task_routed_rows()
    rows = [m for m in mapped if m in data.routing]
    if rows:
        emit(fig_routing_map({m: data.routing[m] for m in rows}, task_cat, data.test_tasks), "routing_map",
             "map of routing policies", FIGURE_TEXT["routing_map"])
    else:
        skipped["routing_map"] = f"no routing npz of {', '.join(mapped)}"
