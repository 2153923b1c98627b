"""``promoe publish``: a finished run's small outputs, from which ``promoe analyze`` regenerates its report."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from promoe.analysis import analyze
from promoe.cli import main
from promoe.errors import DataError
from promoe.publish import publish
from tests.analysis.helpers import TASKS, write_metrics, write_routing, write_scores


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """A finished run folder as a run leaves it: scores, routing, curves, predictions and references, a config with
    this machine's paths, checkpoints, learning-rate pilots, scoring progress and the run folder's own marks."""
    run = tmp_path_factory.mktemp("results") / "smoke"
    write_scores(run, {"copy_input": 0.2, "moe": 0.5, "promoe": 0.9})
    (run / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": list(TASKS)}))
    for m in ("moe", "promoe"):
        write_routing(run / "routing" / f"{m}.npz")
        write_metrics(run / "train" / m / "metrics.jsonl")
        (run / "predictions").mkdir(exist_ok=True)
        (run / "predictions" / f"{m}.jsonl").write_text("".join(json.dumps({"id": f"{t}-0", "prediction": "yes"}) + "\n"
                                                               for t in TASKS))
        (run / "train" / m / "best.safetensors").write_bytes(b"weights")
        (run / "train" / m / "last").mkdir()
        (run / "train" / m / "last" / "state.json").write_text("{}")
        (run / "train" / m / "lr" / "0.001").mkdir(parents=True)
        (run / "train" / m / "lr" / "0.001" / "metrics.jsonl").write_text("{}\n")
    (run / "references.jsonl").write_text("".join(json.dumps({"id": f"{t}-0", "references": ["yes"]}) + "\n"
                                                  for t in TASKS))
    (run / "progress").mkdir()
    (run / "progress" / "eval.json").write_text("{}")
    (run / ".promoe-run").write_text("claimed")
    (run / ".lock").write_text("")
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "smoke", "output_dir": str(run.parent),
                                                     "data": {"root": str(run.parent / "data"), "source": "offline"},
                                                     "prompt": {"condition": "standard"}}))
    (run / "times.json").write_text(json.dumps({"load": 1.0}))
    analyze(run, n_boot=200)
    return run


def test_published_run_regenerates_its_report_and_leaves_checkpoints_and_paths_behind(smoke_run: Path,
                                                                                      tmp_path: Path) -> None:
    to = tmp_path / "results" / "smoke-2026"  # another name: the regenerated report still names the run
    assert main(["publish", "--run", str(smoke_run), "--to", str(to), "--commit", "abc1234",
                 "--command", "python run_experiment.py --preset smoke"]) == 0
    files = {p.relative_to(to).as_posix() for p in to.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".safetensors", ".pt")) or "/last/" in f or "/lr/" in f]
    assert not [f for f in files if f.startswith(("progress/", ".")) or "/." in f]
    assert {"REPORT.md", "significance.json", "times.json", "config.yaml", "splits.json", "references.jsonl.gz",
            "predictions/promoe.jsonl.gz", "scores/promoe.json", "routing/promoe.npz", "train/promoe/metrics.jsonl",
            "figures/answer.png", "PROVENANCE.md"} <= files
    assert not any(f.endswith(".jsonl") and f.startswith(("predictions/", "likelihood/")) for f in files)
    original = [json.loads(x) for x in (smoke_run / "predictions/promoe.jsonl").read_text().splitlines()]
    assert [json.loads(x) for x in gzip.decompress((to / "predictions/promoe.jsonl.gz").read_bytes())
            .decode().splitlines()] == original
    text = (to / "config.yaml").read_text()
    assert str(smoke_run.parent) not in text
    cfg = yaml.safe_load(text)
    assert cfg["output_dir"] == "runs" and cfg["data"]["root"] is None and cfg["name"] == "smoke"
    provenance = (to / "PROVENANCE.md").read_text()
    assert "abc1234" in provenance and "--preset smoke" in provenance
    # the report comes back from the published files alone, identical to the run's own analysis
    assert main(["analyze", "--run", str(to), "--n-boot", "200"]) == 0
    assert (to / "REPORT.md").read_text() == (smoke_run / "REPORT.md").read_text()
    assert (to / "significance.json").read_text() == (smoke_run / "significance.json").read_text()


def test_publish_refuses_what_it_would_overwrite_or_could_not_commit(smoke_run: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an earlier publish"):
        publish(smoke_run, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="not a finished run folder"):
        publish(mine, tmp_path / "out")
    with pytest.raises(DataError, match="inside it"):
        publish(smoke_run, smoke_run / "published")
    with pytest.raises(DataError, match=r"above the 0\.001 MB"):
        publish(smoke_run, tmp_path / "small", max_mb=0.001)
    assert not (tmp_path / "small").exists()  # nothing half-written
    first = tmp_path / "again"
    publish(smoke_run, first)
    (first / "stale.json").write_text("{}")
    publish(smoke_run, first)  # an earlier publish is replaced whole
    assert not (first / "stale.json").exists() and (first / "scores" / "promoe.json").is_file()
