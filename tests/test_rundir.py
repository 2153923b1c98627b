"""Run folder safety: one writer at a time (even after a SIGKILL), no mixing of two configs, a finished
run left alone unless overwritten."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from promoe.cli import main
from promoe.config import load_config, to_dict
from promoe.rundir import LOCK, RunDirError, RunLock, config_differences, prepare


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
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert prepare(run, cfg) is False  # same config, not finished: resume
    other = to_dict(load_config("smoke", ["train.steps=7", "model.top_k=1"]))
    with pytest.raises(RunDirError, match=r"model.top_k: 2 -> 1, train.steps: \d+ -> 7.*--overwrite"):
        prepare(run, other)
    assert config_differences(cfg, {**cfg, "output_dir": "elsewhere"}) == []


def test_finished_run_is_left_alone_unless_overwritten(tmp_path: Path) -> None:
    cfg = to_dict(load_config("smoke"))
    run = tmp_path / "smoke"
    (run / "scores").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for name in ("summary.json", "REPORT.md", "scores/moe.json"):
        (run / name).write_text("{}")
    with RunLock(run):
        assert prepare(run, cfg) is True
        assert prepare(run, to_dict(load_config("smoke", ["train.steps=7"])), overwrite=True) is False
    assert [p.name for p in run.iterdir()] == [LOCK]


def test_finished_run_is_not_redone(tiny_data_root: Path, tmp_path: Path, caplog) -> None:
    args = ["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path)]
    run = tmp_path / "smoke"
    (run / "scores").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(load_config("smoke", [f"data.root={tiny_data_root}"]))
                                                    | {"output_dir": str(tmp_path)}))
    for name in ("summary.json", "REPORT.md"):
        (run / name).write_text("{}")
    with caplog.at_level("INFO"):
        assert main(args) == 0
    assert "nothing to do" in caplog.text
    assert (run / "summary.json").read_text() == "{}" and not (run / "predictions").exists()  # nothing ran


def test_bad_data_with_overwrite_keeps_the_earlier_run(tiny_data_root: Path, tmp_path: Path, capsys) -> None:
    """--overwrite empties the folder only once the data has loaded: a wrong data folder destroys nothing."""
    run = tmp_path / "smoke"
    run.mkdir()
    for name in ("summary.json", "REPORT.md"):
        (run / name).write_text("{}")
    missing = tmp_path / "no_data_here"
    args = ["run", "--preset", "smoke", "--data-root", str(missing), "--output-dir", str(tmp_path), "--overwrite"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and str(missing) in err and "not found" in err
    assert sorted(p.name for p in run.iterdir()) == sorted([LOCK, "summary.json", "REPORT.md"])


@pytest.mark.parametrize("code,fix", [(errno.ENOSPC, "free some disk space"), (errno.EACCES, "--output-dir")])
def test_no_space_or_no_permission_is_one_clear_error(tiny_data_root: Path, tmp_path: Path, monkeypatch, capsys,
                                                       code: int, fix: str) -> None:
    def refuse(splits, run_dir):
        raise OSError(code, os.strerror(code), str(run_dir / "splits.json"))

    monkeypatch.setattr("promoe.experiment.write_splits", refuse)
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "splits.json" in err and fix in err and "Traceback" not in err
