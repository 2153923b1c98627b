"""promoe.inference: ``promoe eval`` scores a trained run's model on a new task file, ``promoe predict``
answers one instance and shows its routing (on a smoke run in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

from promoe.cli import main


def test_trained_model_scores_a_new_task_file_and_answers_one_instance(tiny_data_root: Path, tmp_path: Path,
                                                                        capsys) -> None:
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir",
                 str(tmp_path)]) == 0
    run = tmp_path / "smoke"
    task = {"Definition": ["Repeat the word."], "Categories": ["Misc."],
            "Instances": [{"id": f"u-{i}", "input": w, "output": [w]} for i, w in enumerate(["cat", "dog"])]}
    task_file = tmp_path / "task999_user_repeat.json"
    task_file.write_text(json.dumps(task))
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--model", "promoe", "--tasks", str(task_file)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and out["n_tasks"] == 1 and "rougeL" in out
    scored = run / "user_eval/task999_user_repeat"
    assert (scored / "predictions/promoe.jsonl").exists() and (scored / "references.jsonl").exists()
    assert main(["predict", "--run", str(run), "--model", "moe", "--definition", "Say yes or no.",
                 "--input", "Is it raining?"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("answer:") and text.count("layer") == 2
    assert main(["predict", "--run", str(run), "--model", "nope", "--definition", "d", "--input", "i"]) == 2
