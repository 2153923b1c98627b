"""promoe.analysis.rows: which rows each table and figure shows, derived from the registry."""

from __future__ import annotations

from promoe.analysis.rows import experts_model, main_groups, profiled_rows, task_routed_rows


def test_rows_of_the_builtin_registry() -> None:
    assert main_groups() == {"zero-shot", "routing"}
    assert experts_model() == "moe"
    assert task_routed_rows() == ("promoe", "knn", "skill")
    assert profiled_rows() == ("moe", "promoe", "knn", "skill")
