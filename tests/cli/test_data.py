"""promoe.cli.data: ``promoe data clusters`` on the tiny offline data (summary and synth: tests/data)."""

from __future__ import annotations

import json
from pathlib import Path

from promoe.cli import main


def test_data_clusters_prints_and_writes_the_clusters(tiny_data_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "clusters.json"
    code = main(["data", "clusters", "--preset", "smoke", "--data-root", str(tiny_data_root), "--n", "2",
                 "--out", str(out), "data.val_tasks=1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 clusters of 4 training tasks by description" in printed
    saved = json.loads(out.read_text())
    assert saved["n"] == 2 and sum(saved["sizes"]) == 4 and len(saved["test"]) == 3 and len(saved["val"]) == 1
    assert set(saved["assignment"].values()) == {0, 1}


def test_data_clusters_refuses_too_many(tiny_data_root: Path, capsys) -> None:
    code = main(["data", "clusters", "--preset", "smoke", "--data-root", str(tiny_data_root), "--n", "9"])
    assert code == 2 and "cannot make 9 clusters" in capsys.readouterr().err
