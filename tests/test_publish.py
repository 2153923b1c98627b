"""``promoe publish``: a finished run's small outputs, from which ``promoe analyze`` regenerates its report."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from promoe.cli import main
from promoe.errors import DataError
from promoe.publish import publish


@pytest.fixture(scope="module")
def smoke_run(tiny_data_root_module: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root_module), "--output-dir", str(out),
                 "compare.fewshot_models=[]", "compare.icl_models=[]"]) == 0
    return out / "smoke"


def test_published_run_regenerates_its_report_and_leaves_checkpoints_and_paths_behind(smoke_run: Path,
                                                                                      tmp_path: Path) -> None:
    to = tmp_path / "results" / "smoke"
    assert main(["publish", "--run", str(smoke_run), "--to", str(to), "--commit", "abc1234",
                 "--command", "python run_experiment.py --preset smoke"]) == 0
    files = {p.relative_to(to).as_posix() for p in to.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".safetensors", ".pt")) or "/last/" in f or "/lr/" in f]
    assert {"REPORT.md", "summary.json", "significance.json", "per_task.csv", "times.json", "config.yaml",
            "splits.json", "references.jsonl.gz", "predictions/promoe.jsonl.gz", "scores/promoe.json",
            "train/promoe/metrics.jsonl", "train/promoe/compute.json", "PROVENANCE.md"} <= files
    assert not any(f.endswith(".jsonl") and f.startswith(("predictions/", "likelihood/")) for f in files)
    original = [json.loads(x) for x in (smoke_run / "predictions/promoe.jsonl").read_text().splitlines()]
    assert [json.loads(x) for x in gzip.decompress((to / "predictions/promoe.jsonl.gz").read_bytes())
            .decode().splitlines()] == original
    text = (to / "config.yaml").read_text()
    assert str(smoke_run.parent) not in text and str(tmp_path.anchor + "tmp") not in text
    cfg = yaml.safe_load(text)
    assert cfg["output_dir"] == "runs" and cfg["data"]["root"] is None and cfg["name"] == "smoke"
    provenance = (to / "PROVENANCE.md").read_text()
    assert "abc1234" in provenance and "--preset smoke" in provenance
    # the report comes back from the published files alone, identical to the run's own analysis
    assert main(["analyze", "--run", str(smoke_run), "--n-boot", "200"]) == 0
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
