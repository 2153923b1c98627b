"""promoe.analysis.expert_figures: the expert x cluster matrix of a run with specialised experts."""

from __future__ import annotations

from pathlib import Path

from promoe.analysis.expert_figures import fig_expert_matrix
from promoe.analysis.rundata import Experts
from tests.analysis.helpers import PNG, AnalysedRun, expert_files


def test_expert_cluster_matrix_marks_own_expert_and_column_minima() -> None:
    experts = Experts(*expert_files())
    fig = fig_expert_matrix(experts)
    ax = fig.axes[0]
    assert ax.get_title() == "Expert x cluster loss: own expert best on 2 of 3 clusters"
    outlines = [(p.get_xy(), p.get_edgecolor()) for p in ax.patches]
    assert len(outlines) == 4 + 3  # the diagonal, and the minimum of each of the 3 columns with data
    texts = {t.get_text(): t.get_fontweight() for t in ax.texts}
    assert texts["1.100"] == texts["1.400"] == texts["1.900"] == "bold" and texts["2.200"] == "normal"
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 4  # cluster 3: no validation example
    empty = [[None] * 4 for _ in range(4)]
    assert fig_expert_matrix(Experts(None, expert_files()[1] | {"loss": empty})) is None


def test_expert_cluster_matrix_is_drawn_only_for_specialised_runs(
        specialised: tuple[AnalysedRun, AnalysedRun]) -> None:
    with_experts, plain = specialised
    assert (with_experts.run / "figures" / "expert_cluster_matrix.png").read_bytes()[:8] == PNG
    assert "figures/expert_cluster_matrix.png" in [Path(p).relative_to(with_experts.run).as_posix()
                                                    for p in with_experts.out["figures"]]
    assert not (plain.run / "figures" / "expert_cluster_matrix.png").exists()
    assert not any("expert_cluster" in k for k in plain.out["skipped"])
