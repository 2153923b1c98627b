"""promoe.benchmarks.suite (``promoe bench``): every headline ratio reported against its target, in JSON
and Markdown (on fake measurements)."""

from __future__ import annotations

import json
from pathlib import Path

from promoe.benchmarks import generation, moe_layer, suite
from promoe.cli import main


def fake_layer(quick: bool) -> dict:
    return {"moe_vs_dense": 1.1, "moe_vs_hf_mixtral": 1.3,
            "table": [{"label": "E=8, N=4096", "ours": 0.2, "dense": 0.18, "hf_mixtral": 0.26}]}


def fake_generation(quick: bool, preset: str) -> dict:
    return {"export_vs_token_moe": 1.7, "exported_equals_promoe": True,
            "workload": {"backbone": "tiny", "batch_size": 2, "prompt_tokens": 9, "new_tokens": 3, "n_experts": 4,
                         "expert_width": 8, "top_k": 2},
            "tokens_per_s": {"moe": 10.0, "exported": 17.0}, "decode_tokens_per_s": {"moe": 12.0, "exported": 20.0},
            "params": {"exported": 90, "moe_total": 150, "exported_vs_moe_total": 0.6}}


def test_bench_cli_writes_json_and_markdown_with_targets(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(moe_layer, "run", fake_layer)
    monkeypatch.setattr(generation, "run", fake_generation)
    run = tmp_path / "run"
    run.mkdir()
    times = {"data": 2.0, "train_dense": 100.0, "lower_cache": 30.0, "eval": 300.0, "peak_rss_gib": 6.5,
             "peak_rss_gib_by_stage": {"train_dense": 4.0, "eval": 6.5}}
    (run / "times.json").write_text(json.dumps(times))
    out = tmp_path / "b" / "bench.json"
    assert main(["bench", "--quick", "--json", str(out), "--run", str(run)]) == 0
    res = json.loads(out.read_text())
    for key in ("moe_vs_dense", "moe_vs_hf_mixtral", "export_vs_token_moe", "default_peak_rss_gib"):
        assert key in res and key in res["targets"]
    assert res["default_peak_rss_gib"] == 6.5
    assert [res["targets"][k]["met"] for k in suite.TARGETS] == [True, False, True, False]
    d = res["default_experiment"]
    assert d["total_s"] == 402.0 and d["lower_cache_s"] == 30.0  # the cache is part of training, not a stage
    assert res["machine"]["torch"] and res["machine"]["cpu"]
    md = out.with_suffix(".md").read_text()
    assert "| `moe_vs_hf_mixtral`" in md and "| 1.30 | >= 2.0 | no |" in md and "peak RSS 6.50 GiB" in md
    assert "results:" in capsys.readouterr().out


def test_bench_without_a_default_run_says_how_to_make_one(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(moe_layer, "run", fake_layer)
    monkeypatch.setattr(generation, "run", fake_generation)
    res = suite.run_suite(quick=True, run_dir=tmp_path / "none")
    assert res["default_peak_rss_gib"] is None and res["targets"]["default_peak_rss_gib"]["met"] is None
    assert "run_experiment.py" in suite.markdown(res)
