"""promoe.data.location: the data folder from config, environment, or found beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from promoe.config import DataConfig
from promoe.data import location
from promoe.data.location import MARKER, PACKAGE_FILES, data_root, find_data_root
from promoe.data.splits import load_splits
from promoe.errors import DataError


def _data_folder(path: Path) -> Path:
    for f in PACKAGE_FILES:
        (path / f).parent.mkdir(parents=True, exist_ok=True)
        (path / f).write_text("x\n")
    return path


def test_found_beside_the_checkout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    checkout = tmp_path / "work/main"
    (checkout / "tests").mkdir(parents=True)
    _data_folder(checkout / "tests/data")  # a checkout's own sub-folders are not searched
    data = _data_folder(tmp_path / "work/shared/data")
    assert find_data_root([checkout]) == data
    (tmp_path / "work/other/data").mkdir(parents=True)  # a data folder without the packages is not taken
    (tmp_path / "work/partial/data/sni/splits/default").mkdir(parents=True)
    (tmp_path / "work/partial/data" / MARKER).write_text("x\n")  # nor one with only some of them
    assert find_data_root([checkout]) == data
    # the parent's data/ comes before siblings', the checkout's own data/ first; several are named
    parent = _data_folder(tmp_path / "work/data")
    assert find_data_root([checkout]) == parent
    inside = _data_folder(checkout / "data")
    assert find_data_root([checkout]) == inside
    assert "several data folders found" in caplog.text and str(data) in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_sibling_is_skipped(tmp_path: Path) -> None:
    checkout = tmp_path / "work/main"
    checkout.mkdir(parents=True)
    locked = tmp_path / "work/a_locked"
    _data_folder(locked / "data")
    data = _data_folder(tmp_path / "work/shared/data")
    locked.chmod(0)
    try:
        assert find_data_root([checkout]) == data
    finally:
        locked.chmod(0o700)


def test_nothing_found_is_none(tmp_path: Path) -> None:
    (tmp_path / "a/data/sni").mkdir(parents=True)  # not a data package: no split lists
    assert find_data_root([tmp_path / "a"]) is None


def test_config_and_environment_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = _data_folder(tmp_path / "near/data")
    monkeypatch.setattr(location, "search_bases", lambda: [tmp_path / "near"])
    monkeypatch.delenv("PROMOE_DATA", raising=False)
    assert data_root(DataConfig()) == found
    env = _data_folder(tmp_path / "env")
    monkeypatch.setenv("PROMOE_DATA", str(env))
    assert data_root(DataConfig()) == env
    given = _data_folder(tmp_path / "given")
    assert data_root(DataConfig(root=str(given))) == given


def test_no_data_anywhere_is_one_error_saying_how_to_get_it(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "alone/checkout"  # its parent holds nothing else (tmp_path's has other tests' folders)
    base.mkdir(parents=True)
    monkeypatch.setattr(location, "search_bases", lambda: [base])
    monkeypatch.delenv("PROMOE_DATA", raising=False)
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(root=None))
    msg = str(info.value)
    assert info.value.field == "data.root" and "PROMOE_DATA" in msg and "beside the checkout" in msg
    assert "data.source=hf" in msg and "allenai/natural-instructions" in msg and str(base) in msg


def test_the_checkout_is_a_search_base() -> None:
    root = location.checkout_root()
    if root is None:
        pytest.skip("the package is not installed from a checkout")
    assert (root / "src/promoe/data/location.py").is_file() and root in location.search_bases()
