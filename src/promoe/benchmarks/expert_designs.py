"""Expert designs side by side: how much headroom each leaves a router, read from finished runs.

``python -m promoe.benchmarks.expert_designs NAME=RUN_DIR ... [--out PREFIX]`` takes one run folder per
design (each made by ``python run_experiment.py`` on one fixed protocol with that design's overrides and
``compare.routers=[uniform,oracle,oracle_insample]``) and writes, per design:

* the expert x cluster matrix's summary (``experts/matrix.json``): on how many clusters the own expert is best,
  and each cluster's margin — the best other expert's NLL minus the own expert's (positive: the own is best);
* how far the experts moved apart: mean off-diagonal weight and output distances;
* both oracles' headroom over ``uniform`` (``significance.json``): ``oracle`` (chosen on two demonstrations)
  and the in-sample ceiling ``oracle_insample``, in ROUGE-L, exact match and reference NLL, with 95% CIs and
  MDEs, and how often the two choose the same expert (``oracle.json``, ``oracle_insample.json``);
* the time of the specialisation and of the whole run (``times.json``).

Nothing is run: the table is as reproducible as the runs it reads. Markdown on stdout, JSON and Markdown at
``PREFIX.json`` / ``PREFIX.md`` with ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from promoe.analysis.markdown import table
from promoe.io import atomic_write_text, write_json
from promoe.registry import CEILING
from promoe.resources import stage_seconds

METRICS = {"rougeL": "ROUGE-L", "exact_match": "EM", "ref_nll": "ref. NLL"}
NESTED = ("lower_cache",)
"""Stage times of ``times.json`` spent inside other stages (the lower-layer states computed while training): left
out of a run's total, which is then its wall time but for the process start."""


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _off_diagonal(m: list[list[float]] | None) -> float | None:
    if not m or len(m) < 2:
        return None
    a = np.asarray(m, dtype=np.float64)
    return float(a[~np.eye(len(a), dtype=bool)].mean())


def margins(loss: list[list[float | None]]) -> list[float | None]:
    """Per cluster c: the best other expert's NLL minus expert c's (positive: the own expert is best)."""
    a = np.array([[np.nan if v is None else v for v in row] for row in loss], dtype=np.float64)
    out: list[float | None] = []
    for c in range(a.shape[1]):
        if c >= a.shape[0] or np.isnan(a[c, c]):
            out.append(None)
            continue
        others = np.delete(a[:, c], c)
        out.append(float(np.nanmin(others) - a[c, c]) if len(others) else None)
    return out


def agreement(run: Path) -> dict | None:
    """How often ``oracle`` (demonstrations) picks the expert the ceiling picks (scored instances)."""
    demo, top = _read(run / "oracle.json"), _read(run / f"{CEILING}.json")
    if not demo or not top:
        return None
    common = sorted(set(demo["choices"]) & set(top["choices"]))
    same = sum(demo["choices"][t]["expert"] == top["choices"][t]["expert"] for t in common)
    return {"same": same, "tasks": len(common)}


def design(name: str, run: Path) -> dict:
    """One design's record (see the module docstring)."""
    matrix, sig, times = _read(run / "experts" / "matrix.json"), _read(run / "significance.json"), \
        _read(run / "times.json") or {}
    if sig is None:
        raise SystemExit(f"error: {run}: no significance.json: run `promoe analyze --run {run}` first, or let "
                         "the run finish")
    clusters = _read(run / "experts" / "clusters.json") or {}
    room = {}
    for k in METRICS:
        h = (sig.get("headroom") or {}).get(k) or {}
        room[k] = {which: {f: h[which].get(f) for f in ("diff", "low", "high", "mde", "detected", "n_tasks")}
                   for which in ("headroom", "ceiling") if which in h}
    stages = stage_seconds(times)
    return {"design": name, "run": str(run), "clusters": clusters.get("method"), "sizes": clusters.get("sizes"),
            "best_on_own": None if matrix is None else matrix["best_on_own"],
            "clusters_with_data": None if matrix is None else matrix["clusters_with_data"],
            "margins": None if matrix is None else margins(matrix["loss"]),
            "weight_distance": None if matrix is None else _off_diagonal(matrix.get("weight_distance")),
            "output_distance": None if matrix is None else _off_diagonal(matrix.get("output_distance")),
            "headroom": room, "agreement": agreement(run),
            "specialise_s": stages.get("specialise"), "cpu": times.get("cpu"),
            "total_s": sum(v for k, v in stages.items() if k not in NESTED) if stages else None}


def _ci(t: dict | None, digits: int = 2) -> str:
    if not t or t.get("diff") is None:
        return "—"
    mark = "**" if t.get("detected") else ""
    return f"{mark}{t['diff']:+.{digits}f} [{t['low']:+.{digits}f}, {t['high']:+.{digits}f}]{mark} " \
           f"(MDE {t['mde']:.{digits}f})" if t.get("mde") is not None else f"{t['diff']:+.{digits}f}"


def markdown(rows: list[dict]) -> str:
    """The designs table: experts, then each oracle's headroom over uniform per metric (bold: CI excludes 0)."""
    def num(v: float | None, f: str = ".3f") -> str:
        return "—" if v is None else format(v, f)

    head = ["design", "clusters (sizes)", "own best", "margins (nats)", "weight / output distance",
            *(f"{w} − uniform, {label}" for w in ("oracle", "ceiling") for label in METRICS.values()),
            "same choice", "specialise / run (min)"]
    body = []
    for r in rows:
        agree = r["agreement"]
        body.append([r["design"], f"{r['clusters']} ({', '.join(map(str, r['sizes'] or []))})",
                     f"{r['best_on_own']} of {r['clusters_with_data']}" if r["best_on_own"] is not None else "—",
                     " / ".join(num(m, "+.3f") for m in r["margins"] or []) or "—",
                     f"{num(r['weight_distance'])} / {num(r['output_distance'])}",
                     *(_ci(r["headroom"][k].get(which), 3 if k == "ref_nll" else 2)
                       for which in ("headroom", "ceiling") for k in METRICS),
                     f"{agree['same']} of {agree['tasks']}" if agree else "—",
                     f"{num(r['specialise_s'] and r['specialise_s'] / 60, '.1f')} / "
                     f"{num(r['total_s'] and r['total_s'] / 60, '.1f')}"])
    return "\n".join(table(head, body)) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m promoe.benchmarks.expert_designs", description=__doc__.split("\n")[0])
    p.add_argument("designs", nargs="+", metavar="NAME=RUN_DIR", help="a design's name and its finished run folder")
    p.add_argument("--out", type=Path, help="write PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    rows = []
    for item in args.designs:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            raise SystemExit(f"error: {item!r} is not NAME=RUN_DIR with an existing folder")
        rows.append(design(name, Path(path)))
    text = markdown(rows)
    print(text)
    if args.out:
        write_json(args.out.with_suffix(".json"), {"designs": rows})
        atomic_write_text(args.out.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
