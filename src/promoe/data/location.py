"""Where the offline data packages are: config, environment, or found beside the checkout.

The order is ``data.root`` (or ``--data-root``), then ``$PROMOE_DATA``, then a search: a folder named
``data`` holding ``sni/`` in the checkout the package runs from or in the current folder, in their
parent, or in a sibling of either (``<parent>/<any>/data``) — where the packages sit beside a checkout on the
team's machines. A machine without them gets one message saying how to get them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from promoe.config import DATA_ENV, DataConfig
from promoe.data.sources import require_path
from promoe.errors import DataError

log = logging.getLogger(__name__)

MARKER = "sni/splits/default/test_tasks.txt"
PACKAGE_FILES = (MARKER, "sni/splits/default/train_tasks.txt", "sni/train.jsonl.gz", "sni/test.jsonl.gz",
                 "sni/test_task_meta.jsonl.gz")
"""Files every offline data folder has (what the offline reader opens first)."""

HOW_TO_GET_DATA = (
    f"put the offline packages (sni/, bigbench/, paraphrases/) in a folder named data beside the checkout, "
    f"or set {DATA_ENV}=<folder holding sni/> or --data-root; without them: data.source=hf (the Hugging Face "
    f"copy, online), data.source=sni_repo data.sni_repo=<clone of https://github.com/allenai/natural-instructions>, "
    f"or your own tasks with data.source=files"
)


def checkout_root() -> Path | None:
    """The source checkout this package runs from (an editable install), if it is one."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "src/promoe").is_dir() else None


def search_bases() -> list[Path]:
    """Folders the search starts from: the checkout and the current folder."""
    bases = [b for b in (checkout_root(), Path.cwd()) if b is not None]
    return list(dict.fromkeys(b.resolve() for b in bases))


def _readable_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder``, skipping any that cannot be read (another user's, lost+found)."""
    out = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return out
    for p in entries:
        with contextlib.suppress(OSError):
            if p.is_dir():
                out.append(p)
    return out


def _holds_packages(folder: Path) -> bool:
    try:
        return all((folder / f).is_file() for f in PACKAGE_FILES)
    except OSError:  # a folder we may not read
        return False


def find_data_root(bases: list[Path] | None = None) -> Path | None:
    """The first ``data`` folder holding the packages near ``bases`` (module docstring), or None.

    Looked at, for each base: ``base/data``, ``<parent>/data``, then ``<parent>/<sibling>/data`` in name
    order (a base's own sub-folders are not searched). When several qualify the first is used and the
    others are named in a warning.
    """
    found: list[Path] = []
    for base in search_bases() if bases is None else bases:
        parent = base.parent
        candidates = [base / "data", parent / "data"]
        candidates += [p / "data" for p in _readable_dirs(parent) if p != base]
        found += [c for c in candidates if c not in found and _holds_packages(c)]
    if len(found) > 1:
        log.warning("several data folders found: %s; using the first (set %s to choose)",
                    ", ".join(map(str, found)), DATA_ENV)
    return found[0] if found else None


def data_root(cfg: DataConfig) -> Path:
    """The offline data folder (module docstring), with one clear error when there is none."""
    given = cfg.root or os.environ.get(DATA_ENV)
    if given:
        return require_path(given, f"data folder (data.root / ${DATA_ENV})", fix=HOW_TO_GET_DATA)
    found = find_data_root()
    if found is None:
        raise DataError("no data folder given or found", field="data.root",
                        fix=HOW_TO_GET_DATA + f" (searched near {', '.join(map(str, search_bases()))})")
    log.info("data folder %s (found beside the checkout; set %s to choose another)", found, DATA_ENV)
    return found
