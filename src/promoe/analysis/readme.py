"""The README's results tables, written from a run's ``significance.json``: every row's ROUGE-L, exact match
and reference NLL with their CIs, then the paired tests of "The answer" (REPORT.md's family, Holm-adjusted).
Each table sits between ``<!-- results: DIR -->`` / ``<!-- paired: DIR -->`` markers, which
tests/test_readme_results.py checks against that folder, so the front page cannot drift from its run.

    python -m promoe.analysis.readme results/reference      # prints both tables, to paste into README.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = {
    "promoe": "MoE routed by a hypernetwork reading the task's Definition",
    "moe": "the same experts, a static token-level top-k gate",
    "dense": "one FFN with the MoE's activated parameters, equal compute",
    "upcycled": "the sparse-upcycled MoE trained end to end (the standard recipe)",
    "uniform": "every expert mixed equally",
    "oracle": "per task the best expert, chosen on its 2 demonstrations",
    "oracle_insample": "per task the best expert, chosen on the scored instances (a ceiling, not a result)",
    "promoe-shuffled": "`promoe` whose router reads another task's Definition",
    "backbone": "the untrained backbone",
    "copy_demo": "floor: copy a demonstration's answer",
    "copy_input": "floor: copy the input",
}
"""The rows the README shows, in order, with what each is (a run's other rows are in its REPORT.md)."""


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def _plain(x: float) -> str:
    return f"{x:.2f}".replace("-", "−")


def _interval(stats: dict, key: str = "mean", fmt=_plain) -> str:
    return f"{fmt(stats[key])} [{fmt(stats['low'])}, {fmt(stats['high'])}]"


def tables(run: str | Path, root: Path = Path()) -> str:
    """Both marked tables for the run folder ``run`` as the README names it (relative to the repository ``root``)."""
    sig = json.loads((root / run / "significance.json").read_text(encoding="utf-8"))
    models = sig["models"]
    out = [f"<!-- results: {run} -->", "| row | what it is | ROUGE-L [95% CI] | exact match [95% CI] | reference NLL |",
           "|---|---|---:|---:|---:|"]
    for row, text in ROWS.items():
        if row in models:
            m = models[row]
            nll = f" {m['ref_nll']['mean']:.2f} " if "ref_nll" in m else " "
            out.append(f"| `{row}` | {text} | {_interval(m['rougeL'])} | {_interval(m['exact_match'])} |{nll}|")
    out += ["<!-- /results -->", "", f"<!-- paired: {run} -->",
            "| comparison | difference [95% CI] | MDE | p (Holm) | verdict |", "|---|---:|---:|---:|---|"]
    for t in sig["family"]["tests"]:
        a, b = t["comparison"].split(" − ")
        headroom = (a, b) == ("oracle", "uniform")
        power = sig["headroom"]["rougeL"]["headroom"] if headroom else sig["paired"][b]["rougeL"]
        name = f"`{a}` − `{b}`" + (" (the headroom)" if headroom else "")
        out.append(f"| {name} | {_interval(t, 'diff', _signed)} | {power['mde']:.2f} | {t['p_holm']:.3g} | "
                   f"{t['verdict']} |")
    return "\n".join([*out, "<!-- /paired -->"]) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="print the README's results tables for a run folder")
    p.add_argument("run", help="the run folder, relative to the repository root (results/reference)")
    print(tables(p.parse_args(argv).run), end="")


if __name__ == "__main__":
    main()
