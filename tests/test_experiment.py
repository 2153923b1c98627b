"""promoe.experiment: the experiment driver end to end (``promoe run`` into tmp_path): every output (the
smoke run's summary.json equals tests/golden/smoke_summary.json), your own task files, finished stages
and finished runs not redone, a bad data folder destroying nothing under --overwrite, several seeds."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from promoe.cli import main
from promoe.config import load_config, to_dict
from promoe.rundir import LOCK, MARKER, claim

MODELS = {"copy_input", "copy_demo", "backbone", "dense", "moe", "promoe"}
ROWS = MODELS | {"knn", "skill", "uniform", "random", "oracle", "backbone-icl", "dense-icl", "moe-icl", "promoe-icl",
                 "dense-fewshot", "moe-fewshot", "promoe-fewshot", "moe-router_only", "promoe-router_only",
                 "uniform-router_only", "oracle-router_only"} | {
    f"promoe-{a}{c}" for a in ("shuffled", "empty", "random_text", "category", "paraphrase")
    for c in ("", "-router_only")}


def test_smoke_run_writes_every_output(tiny_data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(out)]) == 0
    run = out / "smoke"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["root"] == str(tiny_data_root)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == ROWS  # the smoke preset holds every row of the experiment
    for res in summary.values():
        assert 0.0 <= res["rougeL"] <= 100.0 and res["n"] > 0 and "per_category" in res
    refs = [json.loads(line) for line in (run / "references.jsonl").read_text().splitlines()]
    assert all(not r["id"].endswith(("-pos0", "-pos1")) for r in refs)  # demonstrations are never scored
    paraphrased = {"promoe-paraphrase", "promoe-paraphrase-router_only"}
    assert all(summary[row]["n_tasks"] == 1 for row in paraphrased)  # only task901 has paraphrases
    for row in ROWS - paraphrased:
        assert summary[row]["n"] == len(refs), row
    assert {"id", "references", "task_id", "task_category", "track"} <= set(refs[0])
    for model in MODELS:
        preds = [json.loads(line) for line in (run / f"predictions/{model}.jsonl").read_text().splitlines()]
        assert sorted(p["id"] for p in preds) == sorted(r["id"] for r in refs), model
    with (run / "per_task.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == ROWS
    assert len(rows) == (len(ROWS) - 2) * 3 + 2  # three test tasks; the paraphrase rows have one
    for model in ("dense", "moe", "promoe"):
        metrics = [json.loads(line) for line in (run / f"train/{model}/metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == [1, 2, 3, 4] and "val_loss" in metrics[-1]
        assert (run / f"train/{model}/best.safetensors").exists()
        if model == "dense":
            assert not (run / "routing/dense.npz").exists()  # one FFN: nothing to route
            continue
        with np.load(run / f"routing/{model}.npz", allow_pickle=False) as z:
            assert z["load"].shape == (2, 4) and z["tokens"].sum() > 0
    splits = json.loads((run / "splits.json").read_text())
    assert splits["train_collections"] == ["sni"]  # the official protocol: SNI training tasks only
    assert splits["quirks"]["found"][0]["kind"] in {"empty_reference", "multi_definition"}
    times = json.loads((run / "times.json").read_text())
    assert {"train_dense", "eval", "icl", "fewshot", "peak_rss_gib"} <= set(times)
    for row in ("knn", "skill", "uniform", "random", "promoe-shuffled", "moe-fewshot"):
        assert (run / f"routing/{row}.npz").exists(), row
    donors = json.loads((run / "ablations/shuffled.json").read_text())["donors"]  # the control's record
    assert donors and all(d["group"] != d["from_group"] and d["from"] != t for t, d in donors.items())
    with np.load(run / "routing/uniform.npz", allow_pickle=False) as z:
        assert (z["load"] > 0).all()  # every expert is used by uniform routing
    with np.load(run / "routing_profiles/moe.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["routing"].sum(-1), 1.0, rtol=1e-5)  # training tasks' mean routing
    report = (run / "REPORT.md").read_text()
    assert "## Run" in report and "[95% CI]" in report
    for link in report.split("](")[1:]:
        assert (run / link.split(")")[0]).exists()
    assert (run / "significance.json").exists() and (run / "figures/per_category_rougeL.png").exists()
    # The layout may change, the numbers may not: the smoke run's summary.json equals the one the run wrote
    # before its code was split into stages and a row registry (tests/golden; since then only the oracle row
    # and the reference NLL were added, every earlier number unchanged, and the in-context rows' NLLs changed
    # when demonstrations that do not fit eval.max_length were dropped instead of the prompt's start). Scores from generated text are
    # exact; reference NLLs are sums of floats whose last digit depends on the CPU's kernels (AVX-512 and
    # AMX machines differ by 1e-6), so they match to 1e-5 relative.
    golden = json.loads((Path(__file__).parent / "golden" / "smoke_summary.json").read_text())
    got = json.loads((run / "summary.json").read_text())
    nll = {"ref_nll", "ref_nll_task_mean"}
    for row in golden:
        assert set(got[row]) == set(golden[row]), row
        for key, value in golden[row].items():
            if key in nll:
                assert got[row][key] == pytest.approx(value, rel=1e-5), (row, key)
            else:
                assert got[row][key] == value, (row, key)
    assert set(got) == set(golden)


def _write_task_files(folder: Path) -> tuple[list[str], list[str]]:
    """A researcher's own collection: training tasks in a .json, a .jsonl and a .jsonl.gz; test tasks in a
    folder of .json files."""
    def task(name: str, category: str, n: int = 4) -> dict:
        return {"Definition": [f"Do {name}."], "Categories": [category],
                "Positive Examples": [{"input": f"{name} demo", "output": "yes", "explanation": ""}],
                "Instances": [{"id": f"{name}-{i}", "input": f"{name} q{i}", "output": [f"a{i % 2}"]}
                              for i in range(n)]}

    def package(path: Path, tasks: dict[str, dict]) -> None:
        lines = "".join(json.dumps({**t, "_meta": {"task": k}}) + "\n" for k, t in tasks.items())
        if path.suffix == ".gz":
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(lines)
        else:
            path.write_text(lines)

    folder.mkdir()
    (folder / "tasks_test").mkdir()
    (folder / "mine_a.json").write_text(json.dumps(task("mine_a", "Alpha")))
    package(folder / "more.jsonl", {"mine_b": task("mine_b", "Alpha"), "mine_c": task("mine_c", "Beta")})
    package(folder / "rest.jsonl.gz", {"mine_d": task("mine_d", "Beta"), "mine_e": task("mine_e", "Gamma")})
    for name, cat in (("new_x", "Delta"), ("new_y", "Epsilon")):
        (folder / "tasks_test" / f"{name}.json").write_text(json.dumps(task(name, cat, 3)))
    return ([str(folder / f) for f in ("mine_a.json", "more.jsonl", "rest.jsonl.gz")],
            [str(folder / "tasks_test")])


def test_your_own_task_files_run_the_whole_experiment(tmp_path: Path) -> None:
    train, test = _write_task_files(tmp_path / "mine")
    out = tmp_path / "results"
    args = ["run", "--preset", "smoke", "--output-dir", str(out), "data.source=files", "data.val_tasks=1",
            f"data.train_files=[{','.join(train)}]", f"data.test_files=[{','.join(test)}]"]
    assert main(args) == 0
    run = out / "smoke"
    splits = json.loads((run / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"]) == ["mine_a", "mine_b", "mine_c", "mine_d", "mine_e"]
    assert len(splits["val"]) == 1 and splits["test"] == ["new_x", "new_y"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == ROWS - {"promoe-paraphrase", "promoe-paraphrase-router_only"}  # no paraphrases here
    assert all(res["n"] == 2 for res in summary.values())  # smoke scores 1 instance per task
    refs = [json.loads(line)["task_id"] for line in (run / "references.jsonl").read_text().splitlines()]
    assert sorted(refs) == ["new_x", "new_y"]
    assert "mine_a.json" in (run / "REPORT.md").read_text()


def test_headline_rows_score_more_instances_and_pair_on_the_shared_ones(tmp_path: Path) -> None:
    train, test = _write_task_files(tmp_path / "mine")  # 2 test tasks x 3 instances
    out = tmp_path / "results"
    args = ["run", "--preset", "smoke", "--output-dir", str(out), "data.source=files", "data.val_tasks=1",
            f"data.train_files=[{','.join(train)}]", f"data.test_files=[{','.join(test)}]",
            "data.test_max_instances_per_task=3", "data.test_max_per_task=1", "data.headline_max_per_task=3",
            "eval.headline_rows=[promoe,moe,promoe-fewshot]"]
    assert main(args) == 0
    run = out / "smoke"
    summary = json.loads((run / "summary.json").read_text())
    heuristics = {"copy_input", "copy_demo"}  # no model, no cost: every instance
    for row, res in summary.items():
        assert res["n"] == (6 if row in {"promoe", "moe", "promoe-fewshot"} | heuristics else 2), row
    first = {f"{t}-0" for t in ("new_x", "new_y")}  # the other rows score each task's first instance
    assert {json.loads(line)["id"] for line in (run / "predictions/dense.jsonl").read_text().splitlines()} == first
    assert {json.loads(line)["id"] for line in (run / "likelihood/uniform.jsonl").read_text().splitlines()} == first
    assert len((run / "references.jsonl").read_text().splitlines()) == 6
    sig = json.loads((run / "significance.json").read_text())
    assert sig["paired"]["moe"]["rougeL"]["n_instances"] == 6 and sig["paired"]["dense"]["rougeL"]["n_instances"] == 2
    scores = {m: json.loads((run / f"scores/{m}.json").read_text()) for m in ("promoe", "dense")}
    diff = np.mean([scores["promoe"]["per_instance"][i]["rougeL"] - scores["dense"]["per_instance"][i]["rougeL"]
                    for i in first])
    assert sig["paired"]["dense"]["rougeL"]["diff"] == pytest.approx(diff, abs=1e-6)
    report = (run / "REPORT.md").read_text()
    assert "vs `moe`" in report and "2 tasks, 6 instances" in report and "2 tasks, 2 instances" in report


def test_own_files_refuse_a_test_task_that_is_also_trained(tmp_path: Path, capsys) -> None:
    train, test = _write_task_files(tmp_path / "mine")
    code = main(["run", "--preset", "smoke", "--output-dir", str(tmp_path / "r"), "data.source=files",
                 f"data.train_files=[{','.join(train + test)}]", f"data.test_files=[{','.join(test)}]"])
    err = capsys.readouterr().err
    assert code == 2 and "both training and test tasks" in err
    assert not list((tmp_path / "r").rglob("*.json"))  # nothing of a run was written
    code = main(["run", "--preset", "smoke", "--output-dir", str(tmp_path / "r"), "data.source=files"])
    assert code == 2 and "data.train_files" in capsys.readouterr().err


def test_finished_stages_are_not_redone(tiny_data_root: Path, tmp_path: Path) -> None:
    args = ["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path)]
    assert main(args) == 0
    first = json.loads((tmp_path / "smoke/summary.json").read_text())
    stamp = (tmp_path / "smoke/predictions/moe.jsonl").stat().st_mtime_ns
    assert main(args) == 0
    assert json.loads((tmp_path / "smoke/summary.json").read_text()) == first
    assert (tmp_path / "smoke/predictions/moe.jsonl").stat().st_mtime_ns == stamp


def test_finished_run_is_not_redone(tiny_data_root: Path, tmp_path: Path, caplog) -> None:
    args = ["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path)]
    run = tmp_path / "smoke"
    claim(run)
    (run / "scores").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(load_config("smoke", [f"data.root={tiny_data_root}"]))
                                                    | {"output_dir": str(tmp_path)}))
    for name in ("summary.json", "REPORT.md"):
        (run / name).write_text("{}")
    with caplog.at_level("INFO"):
        assert main(args) == 0
    assert "nothing to do" in caplog.text
    assert (run / "summary.json").read_text() == "{}" and not (run / "predictions").exists()  # nothing ran


def test_bad_data_with_overwrite_keeps_the_earlier_run(tiny_data_root: Path, tmp_path: Path, capsys) -> None:
    """--overwrite empties the folder only once the data has loaded: a wrong data folder destroys nothing."""
    run = tmp_path / "smoke"
    claim(run)
    for name in ("summary.json", "REPORT.md"):
        (run / name).write_text("{}")
    missing = tmp_path / "no_data_here"
    args = ["run", "--preset", "smoke", "--data-root", str(missing), "--output-dir", str(tmp_path), "--overwrite"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and str(missing) in err and "not found" in err
    assert sorted(p.name for p in run.iterdir()) == sorted([LOCK, MARKER, "summary.json", "REPORT.md"])


@pytest.mark.slow
def test_several_seeds_aggregate_into_mean_and_ci(tiny_data_root: Path, tmp_path: Path) -> None:
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path),
                 "train.steps=2", "train.eval_every=1", "--seeds", "0", "1"]) == 0
    top = tmp_path / "smoke"
    assert (top / "seeds/0/summary.json").exists() and (top / "seeds/1/summary.json").exists()
    seeds = json.loads((top / "seeds.json").read_text())
    for model in ("dense", "moe", "promoe", "copy_demo"):
        agg = seeds[model]["rougeL"]
        assert agg["n"] == 2 and agg["low"] <= agg["mean"] <= agg["high"]
    assert "## Seeds" in (top / "REPORT.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("per_seed", [False, True])
def test_seeds_share_the_first_seeds_experts_unless_asked_not_to(tiny_data_root: Path, tmp_path: Path,
                                                                  per_seed: bool) -> None:
    assert main(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path),
                 "train.steps=2", "train.eval_every=1", "experts.specialise=true", "model.n_experts=2",
                 "experts.steps=2", "compare.icl_models=[]", "compare.fewshot_models=[]",
                 "compare.router_only_models=[]", "compare.ablations=[shuffled]", "compare.routers=[uniform]",
                 f"experts.per_seed={str(per_seed).lower()}", "--seeds", "0", "1"]) == 0
    top = tmp_path / "smoke"
    experts = [(top / f"seeds/{s}/train/experts/best.safetensors").read_bytes() for s in (0, 1)]
    later = yaml.safe_load((top / "seeds/1/config.yaml").read_text())["experts"]["from_run"]
    if per_seed:  # every seed specialises its own experts
        assert later is None and experts[0] != experts[1]
    else:  # trained once, with the first seed: the second starts from them, and re-seeds what is learned over them
        assert later == str(top / "seeds/0") and experts[0] == experts[1]
        routers = [(top / f"seeds/{s}/train/promoe/best.safetensors").read_bytes() for s in (0, 1)]
        assert routers[0] != routers[1]
    pooled = json.loads((top / "significance.json").read_text())["over_seeds"]
    assert {"moe", "uniform", "promoe-shuffled"} <= set(pooled) and pooled["moe"]["rougeL"]["n_seeds"] == 2
    assert "pooled over the seeds" in (top / "REPORT.md").read_text()


def test_a_run_refuses_experts_it_cannot_start_from(tiny_data_root: Path, tmp_path: Path, capsys) -> None:
    base = ["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(tmp_path),
            "experts.specialise=true", "model.n_experts=2", "experts.steps=2", "compare.icl_models=[]",
            "compare.fewshot_models=[]", "compare.router_only_models=[]", "compare.ablations=[]",
            "compare.routers=[]", "eval.backbone=false", "train.models=[moe]"]
    assert main([*base, "name=a"]) == 0
    assert main([*base, "name=b", f"experts.from_run={tmp_path / 'nothing'}"]) != 0
    assert "experts.from_run" in capsys.readouterr().err and not (tmp_path / "b/train").exists()
    assert main([*base, "name=c", f"experts.from_run={tmp_path / 'a'}", "experts.steps=3"]) != 0
    assert "experts.steps" in capsys.readouterr().err
    assert main([*base, "name=d", f"experts.from_run={tmp_path / 'a'}"]) == 0
    assert (tmp_path / "d/train/experts/best.safetensors").read_bytes() == \
        (tmp_path / "a/train/experts/best.safetensors").read_bytes()
    assert json.loads((tmp_path / "d/experts/matrix.json").read_text()) == \
        json.loads((tmp_path / "a/experts/matrix.json").read_text())
