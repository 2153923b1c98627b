"""Analysed runs shared by the tests of significance.json, the figures and REPORT.md."""

from __future__ import annotations

import pytest

from promoe.analysis import analyze
from tests.analysis.helpers import AnalysedRun, synthetic_run, write_experts


@pytest.fixture(scope="session")
def every_row(tmp_path_factory: pytest.TempPathFactory) -> AnalysedRun:
    """Every row of the experiment analysed once (``n_boot=300``); tests only read it."""
    run = tmp_path_factory.mktemp("every_row") / "run"
    per_task = synthetic_run(run)
    return AnalysedRun(run, per_task, analyze(run, n_boot=300))


@pytest.fixture(scope="session")
def specialised(tmp_path_factory: pytest.TempPathFactory) -> tuple[AnalysedRun, AnalysedRun]:
    """The same small run analysed with and without ``experts/`` (:func:`write_experts`); tests only read them."""
    out = []
    for with_experts in (True, False):
        run = tmp_path_factory.mktemp("specialised" if with_experts else "plain") / "run"
        per_task = synthetic_run(run, rows=("copy_demo", "moe", "promoe", "uniform"), embeddings=False)
        if with_experts:
            write_experts(run)
        out.append(AnalysedRun(run, per_task, analyze(run, n_boot=200)))
    return out[0], out[1]
