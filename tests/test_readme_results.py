"""The README's results tables say what the results files they quote say: each block between
``<!-- results: DIR -->`` / ``<!-- paired: DIR -->`` and its closing comment is checked, number by number at the
precision printed, against ``DIR/significance.json`` (a run folder, or its copy under benchmarks/results/), so
the front page cannot drift from the run it reports.

Cross-cutting (a property of the documentation, not of one module), so at the top level of tests/."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"<!-- (results|paired): (\S+) -->\n(.*?)<!-- /\1 -->", re.S)
_INTERVAL = re.compile(r"^(\S+) \[(\S+), (\S+)\]$")


def _blocks(text: str) -> list[tuple[str, dict, list[list[str]]]]:
    """(kind, the run's significance.json, table rows as cells) for every marked block."""
    out = []
    for kind, folder, body in _BLOCK.findall(text):
        significance = json.loads((ROOT / folder / "significance.json").read_text(encoding="utf-8"))
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in body.strip().splitlines()[2:]]  # skip the header and its rule
        out.append((kind, significance, rows))
    return out


def _same(printed: str, value: float) -> bool:
    """``printed`` is ``value`` rounded to the decimals it shows."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(float(printed.replace("−", "-")) - value) <= 0.5 * 10 ** -decimals + 1e-12


def _interval(cell: str, stats: dict, key: str = "mean") -> None:
    m = _INTERVAL.match(cell)
    assert m, f"not 'x [low, high]': {cell!r}"
    for printed, value in zip(m.groups(), (stats[key], stats["low"], stats["high"]), strict=True):
        assert _same(printed, value), f"{cell!r}: {printed} is not {value}"


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _check_rows(significance: dict, rows: list[list[str]]) -> int:
    for cells in rows:
        row = _names(cells[0])[0]
        model = significance["models"][row]
        _interval(cells[2], model["rougeL"])
        _interval(cells[3], model["exact_match"])
        if cells[4]:
            assert _same(cells[4], model["ref_nll"]["mean"]), (row, cells[4])
        else:
            assert "ref_nll" not in model, f"{row}: the README leaves out its reference NLL"
    return len(rows)


def _check_paired(significance: dict, rows: list[list[str]]) -> int:
    tests = {t["comparison"]: t for t in significance["family"]["tests"]}
    for cells in rows:
        a, b = _names(cells[0])[:2]
        test = tests[f"{a} − {b}"]
        _interval(cells[1], test, "diff")
        power = (significance["headroom"]["rougeL"]["headroom"] if (a, b) == ("oracle", "uniform")
                 else significance["paired"][b]["rougeL"])
        assert _same(cells[2], power["mde"]), (a, b, cells[2])
        assert _same(cells[3], test["p_holm"]), (a, b, cells[3])
        assert cells[4] == test["verdict"], (a, b, cells[4])
    return len(rows)


def test_the_readme_results_tables_match_their_files() -> None:
    blocks = _blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {kind for kind, _, _ in blocks} == {"results", "paired"}
    for kind, significance, rows in blocks:
        checked = (_check_rows if kind == "results" else _check_paired)(significance, rows)
        assert checked >= 2


def test_a_wrong_number_is_caught() -> None:
    stats = {"mean": 27.5104, "low": 22.2411, "high": 32.79}
    _interval("27.51 [22.24, 32.79]", stats)
    for wrong in ("27.52 [22.24, 32.79]", "27.51 [22.24, 32.80]", "27.51 [−22.24, 32.79]"):
        try:
            _interval(wrong, stats)
        except AssertionError:
            continue
        raise AssertionError(f"{wrong} passed")
    assert _same("−2.71", -2.7057) and _same("0.0084", 0.0084) and not _same("0.57", 0.567 - 0.01)


def test_the_readme_tables_are_what_the_command_prints() -> None:
    """Each marked block is exactly what ``python -m promoe.analysis.readme DIR`` prints for it."""
    from promoe.analysis.readme import tables

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {(kind, folder): body for kind, folder, body in _BLOCK.findall(readme)}
    for kind, folder in blocks:
        printed = {(k, f): b for k, f, b in _BLOCK.findall(tables(folder, ROOT))}
        assert printed[kind, folder] == blocks[kind, folder], f"README's {kind} table of {folder}: regenerate it"
