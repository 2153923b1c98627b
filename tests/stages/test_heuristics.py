"""promoe.stages.heuristics: the heuristic floors on the real test tasks are those of the SNI paper
(``promoe baseline heuristic``; skipped without the offline data)."""

from __future__ import annotations

import json
from pathlib import Path

from promoe.cli import main


def test_real_heuristic_floors(real_data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "h"
    assert main(["baseline", "heuristic", "--output-dir", str(out), "--data-root", str(real_data_root),
                 "data.test_positive_examples=false"]) == 0
    s = json.loads((out / "summary.json").read_text())
    # The SNI paper reports 14.2 (copy input) and 28.5 (copy demo) ROUGE-L on the full test set.
    assert 8 < s["copy_input"]["rougeL"] < 16 < 24 < s["copy_demo"]["rougeL"] < 34
    assert s["copy_demo"]["n_tasks"] == 119  # every test task has at least 2 real instances offline
