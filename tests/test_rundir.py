"""promoe.rundir: one writer at a time (even after a SIGKILL), no mixing of two configs, a finished run
left alone unless overwritten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from promoe.cli import main
from promoe.config import load_config, to_dict
from promoe.errors import ConfigError, PromoeError
from promoe.rundir import (
    LOCK,
    MARKER,
    RunDirError,
    RunLock,
    claim,
    config_differences,
    guard_output,
    prepare,
    run_root,
)
from promoe.training.trainer import load_params


def test_second_writer_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    first = RunLock(tmp_path / "run").acquire()
    with pytest.raises(RunDirError, match=f"another run is writing into this folder \\(pid {os.getpid()}"):
        RunLock(tmp_path / "run").acquire()
    first.release()
    with RunLock(tmp_path / "run"):
        pass


def test_a_killed_run_leaves_no_stale_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = f"from promoe.rundir import RunLock; RunLock({str(run)!r}).acquire(); print('held', flush=True); " \
           "import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"pid {proc.pid}"):
            RunLock(run).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(run):  # the kernel dropped the dead process's lock; the lock file itself is still there
        assert (run / LOCK).exists()


def test_run_into_a_busy_folder_stops_with_one_message(tiny_data_root: Path, tmp_path: Path, capsys) -> None:
    with RunLock(tmp_path / "smoke"):
        code = main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "another run is writing" in err and "name=" in err
    assert sorted(p.name for p in (tmp_path / "smoke").iterdir()) == [LOCK]  # nothing else was written


def test_folder_with_another_config_is_refused_and_names_the_keys(tmp_path: Path) -> None:
    cfg = to_dict(load_config("smoke"))
    run = tmp_path / "smoke"
    claim(run)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert prepare(run, cfg) is False  # same config, not finished: resume
    other = to_dict(load_config("smoke", ["train.steps=7", "model.top_k=1"]))
    with pytest.raises(RunDirError, match=r"model.top_k: 2 -> 1, train.steps: \d+ -> 7.*--overwrite"):
        prepare(run, other)
    assert config_differences(cfg, {**cfg, "output_dir": "elsewhere"}) == []


def test_finished_run_is_left_alone_unless_overwritten(tmp_path: Path) -> None:
    cfg = to_dict(load_config("smoke"))
    run = tmp_path / "smoke"
    claim(run)
    (run / "scores").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for name in ("summary.json", "REPORT.md", "scores/moe.json"):
        (run / name).write_text("{}")
    with RunLock(run):
        assert prepare(run, cfg) is True
        assert prepare(run, to_dict(load_config("smoke", ["train.steps=7"])), overwrite=True) is False
    assert [p.name for p in run.iterdir()] == [LOCK]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_that_is_not_a_run_is_never_written_or_emptied(tiny_data_root: Path, tmp_path: Path, capsys) -> None:
    # the user's own folder, with code and notes in it, named as the run folder
    mine = tmp_path / "out" / "smoke"
    (mine / "src").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    (mine / "src" / "code.py").write_text("print(1)")
    before = _tree(mine)
    for extra in ([], ["--overwrite"]):
        code = main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir",
                     str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("error:") == 1 and "not a PRo-MoE run folder" in err and "notes.txt" in err
        assert _tree(mine) == before and not (mine / LOCK).exists()  # not even a lock file was written
    with pytest.raises(RunDirError, match="is a file"):
        RunLock(mine / "notes.txt").acquire()


def test_a_run_marks_its_folder_and_only_a_marked_folder_is_emptied(tmp_path: Path) -> None:
    cfg = to_dict(load_config("smoke"))
    run = tmp_path / "run"
    with RunLock(run):
        claim(run)
        (run / "scores").mkdir()
        (run / "scores" / "moe.json").write_text("{}")
        assert (run / MARKER).is_file()
        prepare(run, cfg, overwrite=True)
    assert [p.name for p in run.iterdir()] == [LOCK]


@pytest.mark.parametrize("name", ["/some/folder/mycode", "../escape", "a/b", "..", "."])
def test_a_run_name_cannot_leave_the_output_folder(name: str) -> None:
    with pytest.raises(ConfigError, match="name=.*not a plain folder name.*--output-dir"):
        load_config("smoke", [f"name={name}"])


def _fake_run(folder: Path) -> dict[str, bytes]:
    claim(folder)
    (folder / "scores").mkdir()
    (folder / "predictions").mkdir()
    (folder / "config.yaml").write_text("name: r\n")
    (folder / "scores" / "promoe.json").write_text('{"rougeL": 30.91}')
    (folder / "predictions" / "promoe.jsonl").write_text('{"id": "1", "prediction": "a"}\n')
    (folder / "references.jsonl").write_text('{"id": "1", "task_id": "t", "references": ["a"]}\n')
    return _tree(folder)


def test_commands_that_read_a_run_never_write_over_its_results_or_their_inputs(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    before = _fake_run(run)
    tasks = tmp_path / "tasks.json"
    tasks.write_text("{}")
    refused = [
        (["eval", "--run", str(run), "--model", "promoe", "--tasks", str(tasks), "--output-dir", str(run)],
         "lies in the run folder"),
        (["eval", "--run", str(run), "--model", "promoe", "--tasks", str(tasks), "--output-dir",
          str(run / "scores")], "lies in the run folder"),
        (["eval", "--run", str(run), "--model", "promoe", "--tasks", str(tasks), "--output-dir", str(tasks)],
         "is a file"),
        (["score", "--predictions", str(run / "predictions/promoe.jsonl"), "--references",
          str(run / "references.jsonl"), "--output", str(run / "scores/promoe.json")], "lies in the run folder"),
        (["score", "--predictions", str(tmp_path / "p.jsonl"), "--references", str(tmp_path / "r.jsonl"),
          "--output", str(tmp_path / "p.jsonl")], "would be overwritten"),
        (["baseline", "heuristic", "--output-dir", str(run)], "lies in the run folder"),
    ]
    (tmp_path / "p.jsonl").write_text('{"id": "1", "prediction": "a"}\n')
    (tmp_path / "r.jsonl").write_text('{"id": "1", "task_id": "t", "references": ["a"]}\n')
    for argv, message in refused:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and message in err, (argv, err)
    assert _tree(run) == before
    assert (tmp_path / "p.jsonl").read_text() == '{"id": "1", "prediction": "a"}\n'
    # a run's user_eval/ is where reading commands write, and a run from before markers is still a run
    guard_output(run / "user_eval" / "mine", flag="--output-dir", folder=True)
    (run / ".promoe-run").unlink()
    assert run_root(run / "scores" / "x.json") == run.resolve()


def test_moe_layers_outside_the_backbone_are_one_error_naming_the_key(tiny_data_root: Path, tmp_path: Path,
                                                                      capsys) -> None:
    code = main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path),
                 "model.moe_layers=[0,999]"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "model.moe_layers=[0, 999]" in err and "choose positions" in err


def test_an_output_dir_that_is_a_file_and_a_corrupt_run_config_are_one_error_each(tiny_data_root: Path,
                                                                                  tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    args = ["run", "--preset", "smoke", "--data-root", str(tiny_data_root)]
    assert main([*args, "--output-dir", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "is a file" in err and "--output-dir" in err and afile.read_text() == "mine"
    run = tmp_path / "out" / "smoke"
    claim(run)
    (run / "config.yaml").write_bytes(b"name: [unclosed\n\xff\xfe")
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "cannot be read" in err and "--overwrite" in err


def test_a_corrupt_checkpoint_is_one_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "best.safetensors"
    bad.write_bytes(b"\x00\x01not a checkpoint")
    with pytest.raises(PromoeError, match="best.safetensors: cannot be read as a safetensors checkpoint"):
        load_params(torch.nn.Linear(2, 2), bad, ["weight"], what="trained parameters")
