"""Performance measurements of PRo-MoE (run them with `promoe bench`, or one by one: `python -m promoe.benchmarks.<name>`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def module_main(run: Callable[..., dict], doc: str, quick_help: str) -> None:
    """``python -m promoe.benchmarks.<name> [--quick] [--preset P] [--json OUT] [key=value ...]``: print the
    result of ``run(quick=, preset=, overrides=)`` and write it to ``--json``."""
    from promoe.io import write_json

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--preset", default="default")
    p.add_argument("--json", help="write the result here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args()
    res = run(quick=a.quick, preset=a.preset, overrides=a.overrides)
    print(json.dumps(res, indent=2))
    if a.json:
        write_json(a.json, res)
