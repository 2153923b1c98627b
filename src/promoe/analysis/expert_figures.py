"""The figure of a run with specialised experts: the expert x cluster matrix (``experts/matrix.json``).

Drawn only when the run folder has ``experts/`` (:class:`~promoe.analysis.rundata.Experts`); a run
without specialised experts gets no figure and no "not drawn" note.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from promoe.analysis.routing_figures import Emit
from promoe.analysis.rundata import Experts

NO_DATA = "0.85"  # grey of a cluster without validation examples
OWN, BEST = "black", "tab:red"  # outline of the diagonal (own expert), of each column's minimum


def _luminance(rgba: tuple) -> float:
    r, g, b = rgba[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def fig_expert_matrix(experts: Experts) -> Figure | None:
    """Heatmap of the loss (experts rows, clusters columns), every cell annotated, the diagonal outlined
    and each column's minimum marked; None without a cluster that has validation data."""
    own, with_data = experts.own_best()
    if experts.matrix is None or with_data == 0:
        return None
    loss = np.array([[np.nan if v is None else v for v in row] for row in experts.matrix["loss"]], dtype=float)
    n_exp, n = loss.shape  # (E, C)
    best = experts.column_best()
    cmap = colormaps["viridis_r"].with_extremes(bad=NO_DATA)  # bright: low loss
    norm = Normalize(float(np.nanmin(loss)), float(np.nanmax(loss)))
    fig = Figure(figsize=(max(6.4, 2.6 + 0.75 * n), max(3.4, 1.8 + 0.5 * n_exp)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(loss), cmap=cmap, norm=norm, aspect="auto")
    size = "small" if max(n, n_exp) <= 12 else "xx-small"
    for e in range(n_exp):
        for c in range(n):
            v = loss[e, c]
            if np.isnan(v):
                ax.text(c, e, "n/a", ha="center", va="center", fontsize=size, color="dimgray")
                continue
            color = "black" if _luminance(cmap(norm(v))) > 0.5 else "white"
            ax.text(c, e, f"{v:.3f}", ha="center", va="center", fontsize=size, color=color,
                    fontweight="bold" if best[c] == e else "normal")
    for d in range(min(n, n_exp)):
        ax.add_patch(Rectangle((d - 0.5, d - 0.5), 1, 1, fill=False, ec=OWN, lw=2.0,  # haloed: dark cells
                               path_effects=[patheffects.withStroke(linewidth=3.5, foreground="white")]))
    for c, e in enumerate(best):
        if e is not None:
            ax.add_patch(Rectangle((c - 0.4, e - 0.4), 0.8, 0.8, fill=False, ec=BEST, lw=1.5, ls="--"))
    ax.set_xticks(range(n), [str(c) for c in range(n)])
    ax.set_yticks(range(n_exp), [str(e) for e in range(n_exp)])
    ax.set(xlabel="cluster (validation examples)", ylabel="expert (every token routed to it)")
    fig.colorbar(im, ax=ax, label="mean NLL per reference token")
    handles = [Line2D([], [], ls="none", marker="s", mfc="none", mec=OWN, mew=2, ms=10, label="own expert"),
               Line2D([], [], ls="none", marker="s", mfc="none", mec=BEST, mew=1.5, ms=10,
                      label="lowest loss of the cluster")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    ax.set_title(f"Expert x cluster loss: own expert best on {own} of {with_data} clusters")
    return fig


FIGURE_TEXT = {
    "expert_cluster_matrix": "Mean per-token NLL of the references of each cluster's validation examples "
                             "(columns) with every token routed to one specialised expert (rows); black "
                             "outline: the cluster's own expert, dashed red: the column's lowest loss (bold "
                             "number); grey n/a: a cluster without validation examples.",
}


def draw_expert_figures(emit: Emit, skipped: dict[str, str], experts: Experts | None) -> None:
    """Emit the expert x cluster matrix of a run with specialised experts; nothing for other runs."""
    if experts is None:
        return
    if experts.matrix is None:
        skipped["expert_cluster_matrix"] = "no experts/matrix.json"
        return
    emit(fig_expert_matrix(experts), "expert_cluster_matrix", "expert x cluster matrix",
         FIGURE_TEXT["expert_cluster_matrix"])
