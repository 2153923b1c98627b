"""The package layout: data flows one way (no import cycles between the project's modules) and every
module stays small enough to read in one sitting.

Cross-cutting (a property of the whole package, not of one module), so at the top level of tests/."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "promoe"
MAX_LINES = 320


def _module_name(path: Path) -> str:
    parts = ["promoe", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: set[str], package: str) -> set[str]:
    """Project modules imported anywhere in ``tree`` (functions included; ``if TYPE_CHECKING`` too —
    a type-only import that would be a cycle still ties the two modules together)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name in modules:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _imports(ast.parse(path.read_text(encoding="utf-8")), modules, package) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "promoe.registry" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_registry_and_config_import_no_model_code() -> None:
    graph = import_graph()
    assert graph["promoe.registry"] == set()
    config = {"promoe.config", "promoe.config.sections", "promoe.config.fields", "promoe.config.experts"}
    for module in config:
        assert graph[module] <= config | {"promoe.registry", "promoe.errors", "promoe.limits", "promoe.text"}, module
    assert graph["promoe.config.fields"] == {"promoe.errors", "promoe.limits"}
    assert graph["promoe.limits"] == {"promoe.errors"}  # the bounds configs are read within: a leaf, like errors
    assert not graph.get("promoe.text")  # the one form of names and text: a leaf


def test_every_module_is_short() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
