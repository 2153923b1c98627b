"""promoe.cli: ``promoe score`` on the official file formats, and failures the command line turns into one
``error:`` line and exit code 2 (a bad file, a missing data folder, a full disk, a folder without write
permission) instead of a traceback, with nothing written."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from promoe.cli import main, parse
from tests.helpers import EXAMPLE_EXPECTED, _example, write_lines

# --------------------------------------------------------------------------------------------
# `promoe score` (the hand-computed example: tests/helpers.py)
# --------------------------------------------------------------------------------------------


def _example_files(tmp_path: Path) -> tuple[Path, Path]:
    preds, refs = _example()
    p = write_lines(tmp_path / "predictions.jsonl", [{"id": k, "prediction": v} for k, v in preds.items()])
    r = write_lines(tmp_path / "references.jsonl", [
        {"id": x.id, "references": list(x.references), "task_id": x.task_id,
         "task_category": x.task_category, "track": x.track} for x in refs])
    return p, r


def test_cli_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p, r = _example_files(tmp_path)
    out = tmp_path / "sub" / "scores.json"
    assert main(["score", "--predictions", str(p), "--references", str(r), "--output", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    for key in ("rougeL", "exact_match", "per_category", "per_task", "n", "rougeL_task_mean",
                "exact_match_task_mean"):
        assert key in result
    ids = result.pop("ids")
    assert result == EXAMPLE_EXPECTED
    assert ids == {"references": 4, "missing_predictions": 1, "unknown_predictions": 1}  # as the example is made
    printed = json.loads(capsys.readouterr().out)
    assert "per_task" not in printed     # printed only with --full
    assert printed["rougeL"] == 66.6667 and printed["exact_match"] == 50.0


def test_cli_score_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p, r = _example_files(tmp_path)
    assert main(["score", "--predictions", str(p), "--references", str(r), "--full"]) == 0
    assert json.loads(capsys.readouterr().out)["per_task"] == EXAMPLE_EXPECTED["per_task"]


def test_cli_score_says_how_many_ids_are_missing_or_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = [{"id": i, "references": ["yes"], "task_id": "t1", "task_category": "QA", "track": "default"}
            for i in ("1", "2", "3")]
    r = write_lines(tmp_path / "r.jsonl", refs)
    p = write_lines(tmp_path / "p.jsonl", [{"id": "1", "prediction": "yes"}, {"id": "9", "prediction": "yes"}])
    out = tmp_path / "s.json"
    assert main(["score", "--predictions", str(p), "--references", str(r), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2 of 3 references have no prediction and score as empty answers" in err and "1 predictions" in err
    result = json.loads(out.read_text())
    assert result["ids"] == {"references": 3, "missing_predictions": 2, "unknown_predictions": 1}
    assert result["exact_match"] == pytest.approx(100 / 3, abs=1e-3)  # the official rule: missing = empty
    # no prediction id matches: surely the wrong file
    q = write_lines(tmp_path / "q.jsonl", [{"id": "x", "prediction": "yes"}])
    assert main(["score", "--predictions", str(q), "--references", str(r)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "none of its 1 prediction ids" in err


_GOOD_REF = {"id": "1", "references": ["yes"], "task_id": "t1", "task_category": "QA", "track": "default"}


@pytest.mark.parametrize(
    ("bad", "pred_rows", "ref_rows"),
    [
        ("predictions", ['{"id": "1", "prediction": "yes"'], [_GOOD_REF]),               # not JSON
        ("references", [{"id": "1", "prediction": "yes"}], [_GOOD_REF, "not json at all"]),
        ("references", [{"id": "1", "prediction": "yes"}],
         [{"id": "1", "task_id": "t1", "task_category": "QA"}]),                          # no references
        ("references", [{"id": "1", "prediction": "yes"}], [_GOOD_REF, _GOOD_REF]),       # duplicate id
        ("references", [{"id": "1", "prediction": "yes"}], [{**_GOOD_REF, "references": []}]),
        ("references", [{"id": "1", "prediction": "yes"}], [{**_GOOD_REF, "references": [1]}]),
        ("references", [{"id": "1", "prediction": "yes"}], []),                            # empty file
        ("predictions", [{"id": "1", "prediction": 5}], [_GOOD_REF]),                      # not a string
        ("predictions", [{"id": "1", "prediction": ["yes"]}], [_GOOD_REF]),
        ("predictions", [{"prediction": "yes"}], [_GOOD_REF]),                             # no id
        ("references", [{"id": "1", "prediction": "yes"}], [{**_GOOD_REF, "track": "xlingual"}]),
        ("references", [{"id": "1", "prediction": "yes"}], [{**_GOOD_REF, "track": 5}]),
    ],
    ids=["pred-not-json", "ref-not-json", "ref-no-references", "ref-duplicate-id", "ref-empty-list",
         "ref-non-string", "ref-empty-file", "pred-int", "pred-list", "pred-no-id", "ref-xlingual",
         "ref-track-int"],
)
def test_cli_score_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str,
                             pred_rows: list[Any], ref_rows: list[Any]) -> None:
    p = write_lines(tmp_path / "predictions.jsonl", pred_rows)
    r = write_lines(tmp_path / "references.jsonl", ref_rows)
    out = tmp_path / "scores.json"
    assert main(["score", "--predictions", str(p), "--references", str(r), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert str(p if bad == "predictions" else r) in err
    assert not out.exists()
    assert set(tmp_path.iterdir()) == {p, r}  # no output and no leftover temporary file


def test_cli_score_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, r = _example_files(tmp_path)
    missing = tmp_path / "nope.jsonl"
    out = tmp_path / "scores.json"
    assert main(["score", "--predictions", str(missing), "--references", str(r), "--output", str(out)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# one clear error
# --------------------------------------------------------------------------------------------


def test_bad_data_root_is_one_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["baseline", "heuristic", "--output-dir", str(tmp_path / "x"), "--data-root",
                 str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and "missing" in err and "PROMOE_DATA" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("code,fix", [(errno.ENOSPC, "free some disk space"), (errno.EACCES, "--output-dir")])
def test_no_space_or_no_permission_is_one_clear_error(tiny_data_root: Path, tmp_path: Path, monkeypatch, capsys,
                                                       code: int, fix: str) -> None:
    def refuse(splits, run_dir):
        raise OSError(code, os.strerror(code), str(run_dir / "splits.json"))

    monkeypatch.setattr("promoe.experiment.write_splits", refuse)
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "splits.json" in err and fix in err and "Traceback" not in err


def test_a_fifo_given_as_an_input_is_refused_not_waited_on(tmp_path: Path) -> None:
    # in a child process with a timeout: were the FIFO opened, the read would block forever
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    refs = write_lines(tmp_path / "r.jsonl", [{"id": "1", "references": ["a"], "task_id": "t", "track": "default"}])
    promoe = str(Path(sys.executable).parent / "promoe")
    for argv in (["score", "--predictions", str(fifo), "--references", str(refs)],
                 ["score", "--predictions", str(refs), "--references", str(fifo)],
                 ["eval", "--run", str(tmp_path / "run"), "--model", "promoe", "--tasks", str(fifo)]):
        proc = subprocess.run([promoe, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "not a regular file" in proc.stderr, (argv, proc.stderr)
        assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr


def test_ctrl_c_is_one_line_that_says_how_to_resume_and_exit_130(monkeypatch, capsys) -> None:
    import promoe.experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(promoe.experiment, "run", interrupted)
    assert main(["run", "--preset", "smoke"]) == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "interrupted (Ctrl-C)" in err[0] and "resume" in err[0]


@pytest.mark.parametrize("argv", [
    ["predict", "--run", "R", "--model", "promoe", "--definition", "   ", "--input", "x"],
    ["predict", "--run", "R", "--model", "promoe", "--definition", "Say hi.", "--input", ""],
    ["export", "--run", "R", "--model", "promoe", "--definition", "\n", "--out", "E"],
])
def test_empty_text_is_refused_by_the_rule_task_files_follow(argv: list[str], tmp_path: Path, capsys) -> None:
    argv = [str(tmp_path / a) if a in ("R", "E") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "is empty" in err and "non-empty text" in err
    assert not (tmp_path / "E").exists()


def test_overrides_may_stand_on_either_side_of_the_options() -> None:
    args = parse(["run", "train.steps=5", "--output-dir", "out", "data.val_tasks=3", "--preset", "smoke", "seed=1"])
    assert args.overrides == ["train.steps=5", "data.val_tasks=3", "seed=1"]
    assert args.output_dir == "out" and args.preset == "smoke"
    for bad in (["run", "--output-dir", "out", "--nope"], ["run", "a=1", "--output-dir", "out", "stray"],
                ["analyze", "--run", "r", "a=1"]):
        with pytest.raises(SystemExit):
            parse(bad)
