"""promoe.rundir: one writer at a time (even after a SIGKILL), no mixing of two configs, a finished run
left alone unless overwritten."""

from __future__ import annotations

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
