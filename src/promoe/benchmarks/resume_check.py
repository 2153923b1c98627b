"""Fault injection at any scale: kill a run (SIGKILL) at chosen points, start it again with the same
command each time, and check that it ends with the numbers of an uninterrupted run.

    python -m promoe.benchmarks.resume_check --output-dir /tmp/killed --kill train/moe:20 --kill eval:3 \\
        --reference results/full [--preset default] [key=value ...]

Kill points, in the order the run reaches them:

* ``train:<k>`` / ``train/<model>:<k>``: once <k> training steps are logged (all models / one model);
* ``<pass>:<k>``: once every row of evaluation pass <pass> (``eval``, ``icl``, ``fewshot``) has saved <k>
  units (batches; few-shot: tasks) in ``progress/<pass>.json``;
* ``analysis``: once ``summary.json`` is written and ``REPORT.md`` is not.

After the last restart finishes, every row that the reference run also has must have the same
numbers and answers (a reference from another preset with the same training, e.g. ``full`` for
``default``, shares its zero-shot rows; see :func:`differences`). Prints and writes (``--json``) what was killed where, the
restarts' times, and the differences (none when resuming is exact). Exit status 1 on a difference.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def logged_steps(run: Path, model: str = "*") -> int:
    return sum(len(p.read_text().splitlines()) for p in run.glob(f"train/{model}/metrics.jsonl"))


def units_done(progress: Path) -> int:
    """Units every row of an evaluation pass has saved (0 while the pass has saved nothing)."""
    try:
        return min(r["done"] for r in json.loads(progress.read_text())["rows"].values())
    except (FileNotFoundError, json.JSONDecodeError, ValueError):
        return 0


def reached(run: Path, point: str) -> bool:
    """Whether the run in folder ``run`` has reached kill point ``point`` (see the module doc)."""
    if point == "analysis":
        return (run / "summary.json").exists()
    where, _, k = point.rpartition(":")
    if not where or not k.isdigit():
        raise ValueError(f"kill point {point!r}: expected train:<k>, train/<model>:<k>, <pass>:<k> or analysis")
    if where == "train" or where.startswith("train/"):
        return logged_steps(run, where.partition("/")[2] or "*") >= int(k)
    return units_done(run / "progress" / f"{where}.json") >= int(k)


def run_until(cmd: list[str], run: Path, point: str | None, timeout: float = 6 * 3600,
              log: Path | None = None) -> tuple[bool, float]:
    """Run ``cmd``; SIGKILL it once ``run`` reaches ``point`` (None: let it finish). Returns whether it was
    killed before it finished, and its wall time."""
    t0 = time.monotonic()
    with open(log, "ab") if log else open("/dev/null", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out)
        killed = False
        try:
            while proc.poll() is None and time.monotonic() - t0 < timeout:
                if point is not None and reached(run, point):
                    killed = True
                    break
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
    if point is None and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit status {proc.returncode} (log: {log})")
    return killed and not (run / "REPORT.md").exists(), time.monotonic() - t0


def differences(run: Path, reference: Path) -> list[str]:
    """Every number and answer of ``run`` that differs from ``reference``'s, over the rows both have:
    ``summary.json``, ``predictions/<row>.jsonl``, and ``significance.json`` when both runs have the
    same rows (its multiple-testing corrections depend on the set of rows)."""
    summaries = [json.loads((d / "summary.json").read_text()) for d in (run, reference)]
    names = ["summary.json"] + (["significance.json"] if summaries[0].keys() == summaries[1].keys() else [])
    out = []
    for name in names:
        a, b = json.loads((run / name).read_text()), json.loads((reference / name).read_text())
        out += _diff(_common(a, b), _common(b, a), name)
    for row in sorted(summaries[0].keys() & summaries[1].keys()):
        files = [d / "predictions" / f"{row}.jsonl" for d in (run, reference)]
        if all(f.exists() for f in files) and files[0].read_bytes() != files[1].read_bytes():
            out.append(f"predictions/{row}.jsonl differs")
    return out


def _common(a, b):
    """``a`` restricted to the keys of ``b`` wherever a key names a row (a mapping of rows)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _common(v, b[k]) for k, v in a.items() if k in b}
    return a


def _diff(a, b, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)  # NaN = NaN here
    return [] if same else [f"{path}: {a!r} != {b!r}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--output-dir", type=Path, required=True, help="where the killed run writes (a new folder)")
    p.add_argument("--kill", action="append", default=[], metavar="POINT", help="kill point (repeat, in order)")
    p.add_argument("--reference", type=Path, required=True, help="folder of an uninterrupted run")
    p.add_argument("--json", type=Path, help="write the record here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args()
    cmd = [sys.executable, "-m", "promoe.cli", "run", "--preset", a.preset, "--output-dir", str(a.output_dir),
           *a.overrides]  # = python run_experiment.py, without needing a checkout
    from promoe.config import load_config

    run = a.output_dir / load_config(a.preset, a.overrides).name
    log = a.output_dir / "resume_check.log"
    a.output_dir.mkdir(parents=True, exist_ok=True)
    # the record names the command as a user types it (no paths of this machine)
    record = {"command": ["python", "run_experiment.py", "--preset", a.preset, "--output-dir", a.output_dir.name,
                          *a.overrides], "reference": a.reference.name, "attempts": []}
    for point in [*a.kill, None]:
        killed, seconds = run_until(cmd, run, point, log=log)
        record["attempts"].append({"kill_at": point, "killed": killed, "seconds": round(seconds, 1)})
        print(f"{point or 'to the end'}: {'killed' if killed else 'not killed'} after {seconds:.0f} s", flush=True)
        if point is not None and not killed:
            raise SystemExit(f"the run finished (or failed) before kill point {point}; see {log}")
    record["differences"] = differences(run, a.reference)
    print("\n".join(record["differences"]) or "identical to the reference on every common row")
    if a.json:
        from promoe.io import write_json

        write_json(a.json, record)
    return 1 if record["differences"] else 0


if __name__ == "__main__":
    sys.exit(main())
