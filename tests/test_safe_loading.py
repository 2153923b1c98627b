"""Nothing the project loads can run code: every ``torch.load`` is ``weights_only=True``, every
``np.load`` ``allow_pickle=False``, YAML is read with ``safe_load``, and no source evaluates strings or
imports modules by name (a config cannot name code to run). The one exception is the row registry,
which imports its builders lazily; it accepts only modules of ``promoe.rows`` and configs name rows
it holds, never modules (checked below).

Cross-cutting (a scan of every source file, not a test of one module), so at the top level of tests/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"), ROOT / "run_experiment.py"])
BUILTINS = {"eval", "exec", "compile", "__import__"}  # called by bare name (``model.eval()`` is fine)
IMPORTERS = {"import_module", "load_module", "exec_module"}
FORBIDDEN_IMPORTS = {"pickle", "dill", "cloudpickle", "marshal", "shelve"}


def _name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, key: str):
    for kw in call.keywords:
        if kw.arg == key and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def _problems(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {m}" for m in mods if m.split(".")[0] in FORBIDDEN_IMPORTS]
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if (isinstance(node.func, ast.Name) and name in BUILTINS) or name.rsplit(".", 1)[-1] in IMPORTERS:
            found.append(f"{where}: calls {name}")
        if name == "torch.load" and _keyword(node, "weights_only") is not True:
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
            found.append(f"{where}: np.load without allow_pickle=False")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where}: {name} (use yaml.safe_load)")
    return found


LAZY_IMPORTS = {"src/promoe/registry.py": 1}  # Row.builder(): promoe.rows modules only (see below)


def test_sources_load_nothing_that_runs_code() -> None:
    assert len(SOURCES) > 20
    problems = [p for path in SOURCES for p in _problems(path)]
    allowed = [p for p in problems if p.split(":")[0] in LAZY_IMPORTS and "calls importlib.import_module" in p]
    assert len(allowed) == sum(LAZY_IMPORTS.values())
    problems = [p for p in problems if p not in allowed]
    assert not problems, "\n".join(problems)


def test_the_registry_imports_only_row_modules_and_configs_name_only_rows() -> None:
    from promoe.config import load_config
    from promoe.errors import ConfigError
    from promoe.registry import Row, register

    for build in ("os:system", "promoe.rowsx.evil:run", "promoe.rows.heuristics"):
        with pytest.raises(ValueError, match="promoe.rows"):
            register(Row("evil", "router", "runs code", build))
    with pytest.raises(ConfigError, match="compare.routers"):
        load_config("smoke", ["compare.routers=['os:system']"])


@pytest.mark.parametrize(("code", "problem"), [
    ("import torch\ntorch.load('x.pt')", "torch.load without weights_only=True"),
    ("import torch\ntorch.load('x.pt', weights_only=False)", "torch.load without weights_only=True"),
    ("import numpy as np\nnp.load('x.npz')", "np.load without allow_pickle=False"),
    ("import yaml\nyaml.load(open('c.yaml'))", "yaml.load"),
    ("eval(text)", "calls eval"),
    ("import importlib\nimportlib.import_module(cfg.router)", "calls importlib.import_module"),
    ("import pickle", "imports pickle"),
])
def test_the_scan_finds_each_unsafe_load(tmp_path: Path, code: str, problem: str, monkeypatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text(code + "\n")
    assert any(problem in p for p in _problems(bad))
