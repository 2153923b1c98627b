"""One analysed run of every row, shared by the tests of significance.json, the figures and REPORT.md."""

from __future__ import annotations

import pytest

from promoe.analysis import analyze
from tests.analysis.helpers import AnalysedRun, synthetic_run


@pytest.fixture(scope="session")
def every_row(tmp_path_factory: pytest.TempPathFactory) -> AnalysedRun:
    """Every row of the experiment analysed once (``n_boot=300``); tests only read it."""
    run = tmp_path_factory.mktemp("every_row") / "run"
    per_task = synthetic_run(run)
    return AnalysedRun(run, per_task, analyze(run, n_boot=300))
