"""Analysis of a finished run, regenerated from the run's files alone (no model code, no retraining).

``analyze(run_dir)`` reads the run folder (:mod:`~promoe.analysis.rundata`: ``scores/<row>.json``
required; routing, task embeddings, training curves, splits, seeds, the specialised experts' clusters and
expert x cluster matrix, and ``REPORT_extra.md`` where present) and writes ``significance.json``
(:mod:`~promoe.analysis.significance`), ``seeds.json`` (several seeds only), ``figures/*.png``
(:mod:`~promoe.analysis.figures`, :mod:`~promoe.analysis.routing_figures`,
:mod:`~promoe.analysis.expert_figures`) and ``REPORT.md`` (:mod:`~promoe.analysis.report`), every
file atomically. Also runnable: ``python -m promoe.analysis RUN_DIR`` or ``promoe analyze --run RUN_DIR``.

Data flows one way: ``rundata`` -> ``stats`` -> ``significance`` -> ``figures`` / ``report``, with the
rows each table and figure shows derived from :mod:`promoe.registry` (:mod:`~promoe.analysis.rows`).
A row is a scored system: a model (``promoe``), a router on the trained ``moe``'s experts (``knn``),
a heuristic (``copy_demo``) or a variant ``<base>-<variant>`` (``promoe-shuffled``, ``dense-fewshot``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from promoe.analysis.figures import draw_figures
from promoe.analysis.report import render_report
from promoe.analysis.rundata import RunData, load_run
from promoe.analysis.significance import seed_summary, significance
from promoe.errors import DataError
from promoe.io import atomic_write_text, write_json
from promoe.limits import count_arg, seed_arg
from promoe.registry import REFERENCE

log = logging.getLogger(__name__)

__all__ = ["RunData", "analyze", "load_run", "main", "seed_summary", "significance"]


def analyze(run_dir: Path, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Regenerate significance tests, figures and REPORT.md of ``run_dir``; returns what was written."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    if REFERENCE in data.missing:  # every paired test is against it: never swap in another row silently
        raise DataError(f"the reference row {REFERENCE!r} has no score file ({data.missing[REFERENCE]})",
                        file=str(run_dir / "scores" / f"{REFERENCE}.json"),
                        fix=f"restore scores/{REFERENCE}.json, or run the experiment again (python "
                            "run_experiment.py with the run's preset and overrides, --overwrite)")
    for row, why in data.missing.items():
        log.warning("%s: row %s is left out of the analysis: %s", run_dir, row, why)
    sig = significance(data, n_boot=n_boot, seed=seed)
    write_json(run_dir / "significance.json", sig)
    written: dict = {"significance": str(run_dir / "significance.json"), "seeds": None}
    seeds = seed_summary(data.seeds) if data.seeds else None
    if seeds:
        write_json(run_dir / "seeds.json", seeds)
        written["seeds"] = str(run_dir / "seeds.json")
    figures, skipped = draw_figures(run_dir, data, sig)
    atomic_write_text(run_dir / "REPORT.md", render_report(run_dir, data, sig, seeds, figures, skipped))
    written |= {"figures": [str(run_dir / p) for p in figures], "skipped": skipped,
                "report": str(run_dir / "REPORT.md")}
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m promoe.analysis RUN_DIR``: rewrite a run's analysis and report."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("run_dir", type=Path, help="a results/<run> folder holding scores/<model>.json")
    p.add_argument("--n-boot", type=count_arg("size"), default=10000, help="bootstrap resamples")
    p.add_argument("--seed", type=seed_arg, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    print(json.dumps(analyze(args.run_dir, n_boot=args.n_boot, seed=args.seed), indent=2))
