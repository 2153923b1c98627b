"""promoe.benchmarks.suite (``promoe bench``): every headline ratio reported against its target, in JSON
and Markdown (on fake measurements)."""

from __future__ import annotations

import json
from pathlib import Path

from promoe.benchmarks import generation, moe_layer, suite, throughput
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


def fake_throughput(quick: bool, preset: str) -> dict:
    return {"dtype": "fp32", "peak_flop_per_s": {"fp32": 2e11, "bf16": 1e12},
            "train": {"batch_size": 8, "tokens_per_step": 1600, "tokens_per_s": 800.0, "flop_per_s": 2e10},
            "eval": {"batch_size": 16, "new_tokens": 20, "instances_per_s": 3.0, "flop_per_s": 1e10},
            "train_fraction_of_peak": 0.1, "eval_fraction_of_peak": 0.05}


def fakes(monkeypatch) -> None:
    monkeypatch.setattr(moe_layer, "run", fake_layer)
    monkeypatch.setattr(generation, "run", fake_generation)
    monkeypatch.setattr(throughput, "run", fake_throughput)


def test_bench_cli_writes_json_and_markdown_with_targets(monkeypatch, tmp_path: Path, capsys) -> None:
    fakes(monkeypatch)
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
    assert res["machine"]["cpu_detail"]["threads"] >= 1 and isinstance(res["machine"]["cpu_detail"]["flags"], list)
    assert res["train_fraction_of_peak"] == 0.1 and res["eval_fraction_of_peak"] == 0.05
    assert res["peak_flop_per_s"]["fp32"] == 2e11
    md = out.with_suffix(".md").read_text()
    assert "| `moe_vs_hf_mixtral`" in md and "| 1.30 | >= 2.0 | no |" in md and "peak RSS 6.50 GiB" in md
    assert "fp32 200 GFLOP/s, bf16 1000 GFLOP/s" in md and "| 800 tokens/s | 20.0 | 0.100 |" in md
    assert "results:" in capsys.readouterr().out


def test_bench_without_a_default_run_says_how_to_make_one(monkeypatch, tmp_path: Path) -> None:
    fakes(monkeypatch)
    res = suite.run_suite(quick=True, run_dir=tmp_path / "none")
    assert res["default_peak_rss_gib"] is None and res["targets"]["default_peak_rss_gib"]["met"] is None
    assert "run_experiment.py" in suite.markdown(res)
