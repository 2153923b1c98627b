"""promoe.rows.heuristics: the copy-demonstration floor never answers with the scored example's own output
(``promoe baseline heuristic`` on the tiny data folder)."""

from __future__ import annotations

import json
from pathlib import Path

from promoe.cli import main


def test_copy_demo_never_copies_the_scored_example_itself(tiny_data_root: Path, tmp_path: Path) -> None:
    # task901 is scored on 1 first instance + its 2 positive examples (pos0 -> out0, pos1 -> out1).
    # Leave-one-out: pos0 is answered with out1 and pos1 with out0, so every prediction is wrong;
    # copying the example's own output would score 2 of 3.
    out = tmp_path / "h"
    assert main(["baseline", "heuristic", "--output-dir", str(out), "--data-root", str(tiny_data_root),
                 "data.test_positive_examples=true", "data.test_max_per_task=null", "data.val_tasks=1"]) == 0
    task = json.loads((out / "scores/copy_demo.json").read_text())["per_task"]["task901_toy_entailment"]
    assert task["n"] == 3 and task["exact_match"] == 0.0
    preds = {json.loads(line)["id"]: json.loads(line)["prediction"]
             for line in (out / "predictions/copy_demo.jsonl").read_text().splitlines()}
    assert preds["task901_toy_entailment-pos0"] == "out1"
    assert preds["task901_toy_entailment-pos1"] == "out0"
