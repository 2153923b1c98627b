"""A finished run's small outputs, copied where they can be committed beside the code (``promoe publish``).

What a reader needs to check a run's answer and to regenerate its report with ``promoe analyze`` travels: the
resolved config, the splits, every score, the routing statistics, the training curves and compute records, the
summary, the significance tests, ``per_task.csv``, ``times.json``, the figures and ``REPORT.md``; the predictions,
the reference likelihoods and the references go gzipped. Checkpoints, optimizer states and the resume bookkeeping
stay behind. The config's machine paths are dropped (a path names this machine, not the run), and no file may be
larger than ``max_mb`` once copied. ``PROVENANCE.md`` says where the files came from: the run folder, its name,
and the commit and command that made it when they are given.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml

from promoe.errors import DataError
from promoe.io import atomic_write_bytes, atomic_write_text
from promoe.limits import read_yaml_file

GZIPPED = ("predictions", "likelihood", "references.jsonl")
"""Folders (every ``.jsonl`` inside) and files written ``.gz``: large, read by people and ``promoe score``."""
LEFT_BEHIND_PARTS = ("last", "progress", "lr")
"""Folders never copied: checkpoints to resume from, scoring progress, learning-rate pilots (their choice is in
``train/<model>/lr_choice.json`` and ``compute.json``)."""
LEFT_BEHIND_SUFFIXES = (".safetensors", ".pt", ".bin")
"""Weights and optimizer states. Hidden files stay behind too: the run folder's marks (:data:`promoe.rundir.LOCK`,
:data:`promoe.rundir.MARKER`) and the temporary files of atomic writes."""


def kept(run: Path) -> Iterator[Path]:
    """The run's files that are published, relative to ``run``, in a stable order."""
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run)
        if not path.is_file() or path.is_symlink():
            continue
        if any(part in LEFT_BEHIND_PARTS for part in rel.parts[:-1]) or path.suffix in LEFT_BEHIND_SUFFIXES \
                or path.name.startswith("."):
            continue
        yield rel


def gzipped(rel: Path) -> bool:
    return str(rel) in GZIPPED or (rel.parts[0] in GZIPPED and rel.suffix == ".jsonl")


def portable_config(cfg: dict) -> str:
    """The text of ``config.yaml`` (read: ``cfg``) without this machine's paths: every absolute path value becomes
    ``null`` (``output_dir``, which the run's folder must have, becomes ``runs``), with a comment saying so."""

    def walk(node, key: str = ""):
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str) and Path(node).is_absolute():
            return "runs" if key == "output_dir" else None
        return node

    head = "# The run's resolved config; this machine's absolute paths dropped by `promoe publish`.\n"
    return head + yaml.safe_dump(walk(cfg), sort_keys=False)


def publish(run: Path, to: Path, *, commit: str | None = None, command: str | None = None,
            max_mb: float = 5.0) -> list[Path]:
    """Copy ``run``'s small outputs into ``to`` (created; refused if it holds anything but an earlier publish of
    a run), gzipping :data:`GZIPPED`; returns the files written, relative to ``to``."""
    run, to = Path(run), Path(to)
    if not (run / "scores").is_dir() or not (run / "config.yaml").is_file():
        raise DataError("is not a finished run folder (no scores/ or config.yaml)", file=str(run),
                        fix="point --run at the folder a run wrote (results/<name>/), after it finished")
    if to.exists() and any(to.iterdir()) and not (to / "PROVENANCE.md").is_file():
        raise DataError("exists and is not an earlier publish (no PROVENANCE.md): nothing is overwritten", file=str(to),
                        fix="give an empty or new folder as --to")
    if to.resolve() == run.resolve() or run.resolve() in to.resolve().parents:
        raise DataError("is the run folder or inside it", file=str(to), fix="publish to a folder outside the run")
    cfg = read_yaml_file(run / "config.yaml")
    cfg = cfg if isinstance(cfg, dict) else {}
    blobs: dict[Path, bytes] = {}
    for rel in kept(run):
        data = portable_config(cfg).encode("utf-8") if rel == Path("config.yaml") else (run / rel).read_bytes()
        if gzipped(rel):
            rel, data = rel.with_name(rel.name + ".gz"), gzip.compress(data, mtime=0)
        if len(data) > max_mb * 2**20:
            raise DataError(f"would be {len(data) / 2**20:.1f} MB, above the {max_mb:g} MB a published file may have",
                            file=str(run / rel), fix="publish a run with fewer instances per row, or raise --max-mb")
        blobs[rel] = data
    if to.exists():  # an earlier publish: replaced whole, only once every new file is ready
        shutil.rmtree(to)
    for rel, data in blobs.items():
        atomic_write_bytes(to / rel, data)
    lines = [f"# Provenance of `{to.name}`", "",
             f"Published by `promoe publish` from the run folder `{run.name}` (run name `{cfg.get('name', '?')}`).", "",
             f"* commit: {commit or 'not given'}", f"* command: `{command}`" if command else "* command: not given",
             "* `promoe analyze --run <this folder>` regenerates `significance.json`, the figures and `REPORT.md` "
             "from these files alone.", "", "| file | bytes |", "|---|---:|"]
    lines += [f"| `{rel}` | {len(data)} |" for rel, data in blobs.items()]
    atomic_write_text(to / "PROVENANCE.md", "\n".join(lines) + "\n")
    return [*blobs, Path("PROVENANCE.md")]
