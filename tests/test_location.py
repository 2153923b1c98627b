"""promoe.data.location: the data folder from config, environment, or found beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoe.config import DataConfig
from promoe.data import location
from promoe.data.location import MARKER, data_root, find_data_root
from promoe.data.splits import load_splits
from promoe.errors import DataError


def _data_folder(path: Path) -> Path:
    (path / MARKER).parent.mkdir(parents=True)
    (path / MARKER).write_text("task1\n")
    return path


def test_found_beside_the_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "work/main"
    checkout.mkdir(parents=True)
    data = _data_folder(tmp_path / "work/shared/data")
    assert find_data_root([checkout]) == data
    # a data/ folder inside the checkout comes first, then one in its parent, then siblings'
    inside = _data_folder(checkout / "data")
    assert find_data_root([checkout]) == inside
    # folders named data without the packages are not taken
    (tmp_path / "work/other/data").mkdir(parents=True)
    assert find_data_root([tmp_path / "work/other"]) == inside  # work/main/data sorts before work/shared/data


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
