"""``promoe analyze`` (a run's statistics, figures and REPORT.md again, from its files) and ``promoe publish`` (a
finished run's small outputs copied where they can be committed: :mod:`promoe.publish`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from promoe.limits import count_arg, seed_arg


def cmd_analyze(args: argparse.Namespace) -> int:
    from promoe.analysis import analyze

    out = analyze(args.run, n_boot=args.n_boot, seed=args.seed)
    print(f"report: {out['report']}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from promoe.publish import publish

    files = publish(args.run, args.to, commit=args.commit, command=args.command_line, max_mb=args.max_mb)
    print(f"published {len(files)} files to {args.to} (check it with: promoe analyze --run {args.to})")
    return 0


def add_results_commands(sub) -> None:
    p = sub.add_parser("analyze", help="regenerate a run's significance tests, figures and REPORT.md from its files")
    p.add_argument("--run", required=True, type=Path, help="run folder holding scores/<row>.json")
    p.add_argument("--n-boot", type=count_arg("size"), default=10000,
                   help="bootstrap resamples (and up to 2000 permutations), at most the size limit (promoe.limits)")
    p.add_argument("--seed", type=seed_arg, default=0, help="bootstrap and permutation seed")
    p.set_defaults(func=cmd_analyze)
    p = sub.add_parser("publish", help="copy a finished run's small outputs (no checkpoints; predictions gzipped; "
                                       "no machine paths) to a folder that can be committed")
    p.add_argument("--run", required=True, type=Path, help="the finished run folder")
    p.add_argument("--to", required=True, type=Path, help="where to write them (new, empty or an earlier publish)")
    p.add_argument("--commit", help="the commit of the code that made the run (written to PROVENANCE.md)")
    p.add_argument("--command", dest="command_line", help="the command that made the run (PROVENANCE.md)")
    p.add_argument("--max-mb", type=float, default=5.0, help="the largest file allowed, in MB (default 5)")
    p.set_defaults(func=cmd_publish)
