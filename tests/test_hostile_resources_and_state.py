"""Rule 5 of docs/reliability.md's "Bad input" (bounded resources): every input is read within limits on size, nesting
and alias expansion, every count is range-checked where it is read, memory does not grow with a count before its
work starts. Each case is one clean refusal (exit status 2, one ``error:`` line naming the limit and how to raise
it) in bounded time, and memory where it could grow. Rule 6 (damaged run state, a full disk) is in
tests/test_hostile_run_state.py.

Cross-cutting (the limits of promoe.limits at every place that reads), so at the top level of tests/."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
from pathlib import Path

import pytest

from promoe.cli import main
from promoe.config import load_config
from promoe.errors import ConfigError
from promoe.rundir import claim

RUN = ["run", "--preset", "smoke", "--data-root", "{data}", "--output-dir", "{out}"]


def refused(capsys, argv: list[str], says: list[str], seconds: float = 5.0) -> str:
    """Run ``argv``; it must end with status 2 and one ``error:`` line holding every one of ``says``, within
    ``seconds``. Returns the line."""
    t0 = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    took = time.perf_counter() - t0
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(err) == 1, (code, err)
    assert all(s in err[0] for s in says), err[0]
    assert took < seconds, f"{took:.1f} s"
    return err[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def bomb(levels: int = 9) -> str:
    """A YAML document of a few hundred bytes whose aliases expand to 9^levels values (the billion laughs)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: *l{levels - 1}\n"


def flow_bomb(levels: int = 9) -> str:
    """The same, as one flow value (a ``key=value`` override)."""
    parts = ["&l0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    parts += [f"&l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path, capsys) -> None:
    import promoe.experiment  # noqa: F401 - imported before the clock and the memory count start

    preset = tmp_path / "bomb.yaml"
    preset.write_text(bomb())
    assert preset.stat().st_size < 450
    run = tmp_path / "out" / "r"
    claim(run)
    (run / "config.yaml").write_text(bomb())  # a run's own config, damaged into a bomb
    before = tree(tmp_path)
    tracemalloc.start()
    try:
        for argv, where in ([["config", "--preset", str(preset)], "bomb.yaml"],
                            [["config", "--preset", "smoke", f"data.train_files={flow_bomb()}"], "override"],
                            [["run", "--preset", "smoke", "--output-dir", str(tmp_path / "out"), "name=r"],
                             "config.yaml"]):
            line = refused(capsys, argv, [where, "config_nodes limit", "PROMOE_MAX_CONFIG_NODES"], seconds=1.0)
            assert "lol" not in line  # the expanded value is never printed
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB"
    after = tree(tmp_path)
    assert after.pop("out/r/.lock") and after == before  # only the run's lock, inside its folder


def test_deep_nesting_is_one_error_line(tmp_path: Path, capsys) -> None:
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("name: " + "[" * 100_000 + "]" * 100_000 + "\n")
    refused(capsys, ["config", "--preset", str(deep_yaml)], ["deep.yaml", "depth limit", "PROMOE_MAX_DEPTH"])
    nest = "[" * 100_000 + "]" * 100_000
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "a-0", "prediction": "x"}\n{"id": "a-1", "prediction": ' + nest + "}\n")
    refs = tmp_path / "r.jsonl"
    refs.write_text(json.dumps({"id": "a-0", "references": ["x"], "task_id": "a", "task_category": "c"}) + "\n")
    refused(capsys, ["score", "--predictions", str(preds), "--references", str(refs)], ["p.jsonl", "line 2", "nests"])
    task = tmp_path / "task001_deep.json"
    task.write_text('{"Definition": ' + nest + "}")
    refused(capsys, ["data", "summary", "--tasks", str(task)], ["task001_deep.json", "nests"])


def test_a_gzip_that_inflates_to_gigabytes_is_refused_in_seconds(tmp_path: Path, capsys, monkeypatch) -> None:
    member = gzip.compress(b"\n" * 2**24, mtime=0)  # 16 MiB of blank lines in 16 KiB
    path = tmp_path / "tasks.jsonl.gz"
    path.write_bytes(member * 128)  # 2 GiB once inflated, 2 MiB on disk
    monkeypatch.setenv("PROMOE_MAX_INPUT_BYTES", str(2**27))  # 128 MiB: the default 1 GiB takes ~5 s
    tracemalloc.start()
    try:
        refused(capsys, ["data", "summary", "--tasks", str(path)],
                ["tasks.jsonl.gz", "134,217,728 bytes once decompressed", "input_bytes limit",
                 "PROMOE_MAX_INPUT_BYTES"], seconds=3.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB"  # read in chunks, never whole
    monkeypatch.setenv("PROMOE_MAX_INPUT_BYTES", "lots")
    refused(capsys, ["data", "summary", "--tasks", str(path)], ["PROMOE_MAX_INPUT_BYTES='lots'", "whole number"])


COUNTS = [
    # (command line, what the one error line must say)
    ([*RUN, "name=n1", "train.steps=1000000000"], ["train.steps=1000000000", "count limit", "PROMOE_MAX_COUNT"]),
    ([*RUN, "name=n2", "data.test_max_instances_per_task=1000000000"], ["test_max_instances_per_task", "count limit"]),
    ([*RUN, "name=n3", "eval.max_new_tokens=1000000000"], ["eval.max_new_tokens", "tokens limit", "PROMOE_MAX_TOKENS"]),
    ([*RUN, "name=n4", "train.max_length=1000000000"], ["train.max_length", "tokens limit"]),
    ([*RUN, "name=n5", "model.d_hyper=1000000000"], ["model.d_hyper", "size limit", "PROMOE_MAX_SIZE"]),
    ([*RUN, "name=n6", "train.batch_size=1000000000"], ["train.batch_size", "size limit"]),
    ([*RUN, "name=n7", "experts.steps=1000000000"], ["experts.steps", "count limit"]),
    (["analyze", "--run", "{out}/n8", "--n-boot", "1000000000"], ["--n-boot", "size limit", "PROMOE_MAX_SIZE"]),
    (["analyze", "--run", "{out}/n9", "--seed", "-1"], ["--seed", "out of range"]),
    (["model", "check", "--preset", "smoke", "--steps", "1000000000"], ["--steps", "count limit"]),
    (["data", "synth", "--out", "{out}/n10", "--instances", "1000000000"], ["--instances", "count limit"]),
]


def test_every_count_is_range_checked_where_it_is_read(tiny_data_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    for argv, says in COUNTS:
        refused(capsys, [a.format(data=tiny_data_root, out=out) for a in argv], says)
    assert not out.exists()  # refused before anything was written


def test_a_limit_is_raised_by_its_environment_variable(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="PROMOE_MAX_COUNT"):
        load_config("smoke", ["train.steps=1000000000"])
    monkeypatch.setenv("PROMOE_MAX_COUNT", "2_000_000_000")
    assert load_config("smoke", ["train.steps=1000000000"]).train.steps == 10**9


def test_a_billion_steps_take_no_memory_before_the_first(tmp_path: Path, monkeypatch) -> None:
    from promoe.config import TrainConfig
    from promoe.stages.compute import drawn
    from tests.training.test_trainer import _trainer

    monkeypatch.setenv("PROMOE_MAX_COUNT", str(2 * 10**9))
    trainer = _trainer(tmp_path / "t", steps=10**9, eval_every=0)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        first = trainer.plan[0]
        trainer.step(0)
        used = drawn(trainer.examples, TrainConfig(steps=10**9, batch_size=4), 0, [10**9])
        took, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(trainer.plan) == 10**9 and len(first) == 4 and trainer.plan[10**4] is not None
    assert used == set(range(len(trainer.examples)))  # stops once every example is drawn
    assert took < 10 and peak < 64 * 2**20, (took, peak / 2**20)


def test_a_million_word_answer_is_scored_on_its_first_words(tmp_path: Path, capsys, monkeypatch) -> None:
    from promoe.metrics import instance_scores

    words = [f"w{i % 300}" for i in range(1_000_000)]
    ref = " ".join(words[:200])
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "a-0", "prediction": " ".join(words)}) + "\n")
    (tmp_path / "r.jsonl").write_text(json.dumps({"id": "a-0", "references": [ref], "task_id": "a",
                                                  "task_category": "c"}) + "\n")
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        assert main(["score", "--predictions", str(tmp_path / "p.jsonl"), "--references", str(tmp_path / "r.jsonl")]) == 0
        took, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result = json.loads(capsys.readouterr().out)
    first = instance_scores(" ".join(words[:5000]), [ref])  # the answer_words limit: 5,000 words
    assert result["rougeL"] == round(100 * first[0], 4) and result["exact_match"] == 0
    assert took < 10 and peak < 300 * 2**20, (took, peak / 2**20)
    monkeypatch.setenv("PROMOE_MAX_ANSWER_WORDS", "3")  # configurable: "a b c d" is now scored as "a b c"
    assert instance_scores("a b c d", ["a b c"]) == (1.0, 1.0)


def test_yaml_is_read_only_through_the_bounded_loader() -> None:
    root = Path(__file__).resolve().parents[1]
    sources = [*(root / "src").rglob("*.py"), *(root / "benchmarks").rglob("*.py"), root / "run_experiment.py"]
    direct = [str(p.relative_to(root)) for p in sources if p.name != "limits.py"
              and any(call in p.read_text(encoding="utf-8") for call in ("yaml.safe_load(", "yaml.load(",
                                                                          "yaml.full_load(", "SafeLoader("))]
    assert not direct, f"YAML read outside promoe.limits.load_yaml: {direct}"
