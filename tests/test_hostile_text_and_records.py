"""Rules 7 and 8 of docs/reliability.md's "Bad input": names and text are normalised once, where they are read, and compared
only in that form ("non-blank": at least one visible character); a resumed run's records are whole, and settings
that cannot mean anything are refused before anything runs. Each case checks one clean refusal (exit status 2, one
``error:`` line naming the file, key or flag and the fix, nothing written outside the run folder) or the correct
recovery."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promoe.benchmarks.resume_check import run_until
from promoe.cli import main
from promoe.data.sources import load_tasks
from promoe.data.splits import load_splits
from promoe.resources import CUT, PEAKS, record_cut, record_stage, resume_times, stage_seconds
from promoe.text import clean, visible
from tests.data.helpers import _record, _write_json, _write_jsonl
from tests.helpers import write_lines

ROOT = Path(__file__).resolve().parents[1]
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(argv: list[str], capsys) -> str:
    """The one ``error:`` line of a command that must be refused with exit status 2."""
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


# -- rule 7: names and text are normalised once, at the edge ------------------------------------------------------


@pytest.mark.parametrize(("text", "cleaned"), [
    ("task_x\n", "task_x"),                        # a trailing newline is no part of a name
    (f"{ZERO_WIDTH} Say yes.\t\x00{ZERO_WIDTH}", "Say yes."),
    ("cafe\u0301", "caf\u00e9"),                   # NFC: one form of the same letters
    ("a\u200bb  c", "a\u200bb  c"),                # nothing inside a text changes
    ("Say \u2764\ufe0f", "Say \u2764\ufe0f"),      # a mark of the last character stays with it
    ("Say x\n\ufe0f", "Say x"),                    # ... but not one after a newline
])
def test_clean_is_nfc_with_invisible_ends_trimmed(text: str, cleaned: str) -> None:
    assert clean(text) == cleaned and clean(cleaned) == cleaned


@pytest.mark.parametrize("text", ["", " \n\t", ZERO_WIDTH, "\u3164\u2800\ufe0f", "\x00\x1f"])
def test_text_of_invisible_characters_is_blank(text: str) -> None:
    assert not visible(text)


@pytest.mark.parametrize("key", ["name", "output_dir"])
def test_a_run_name_or_folder_of_zero_width_characters_is_refused(key: str) -> None:
    from promoe.config import load_config
    from promoe.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{key}.*no visible character"):
        load_config("smoke", [f"{key}={ZERO_WIDTH}"])


@pytest.mark.parametrize(("where", "field"), [("definition", "Definition"), ("id", "Instances[0].id")])
@pytest.mark.parametrize("package", [False, True])
def test_a_definition_or_id_of_zero_width_characters_is_refused(tmp_path: Path, capsys, where: str, field: str,
                                                                package: bool) -> None:
    rec = _record("task010_blank", n=2)
    if where == "definition":
        rec["Definition"] = [ZERO_WIDTH]
    else:
        rec["Instances"][0]["id"] = f" {ZERO_WIDTH}\n"
    path = _write_jsonl(tmp_path / "tasks.jsonl", [rec]) if package else _write_json(tmp_path / "task010_blank.json",
                                                                                       rec)
    before = _tree(tmp_path)
    err = _refused(["data", "summary", "--tasks", str(path)], capsys)
    assert path.name in err and f"field '{field}'" in err and "is empty" in err and "fix:" in err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(("flag", "argv"), [
    ("--definition", ["--definition", ZERO_WIDTH, "--input", "x"]),
    ("--input", ["--definition", "Say x.", "--input", "\ufeff\u2060 \n"]),
])
def test_predict_refuses_zero_width_text(tmp_path: Path, capsys, flag: str, argv: list[str]) -> None:
    err = _refused(["predict", "--run", str(tmp_path / "run"), "--model", "promoe", *argv], capsys)
    assert flag in err and "is empty" in err
    assert not list(tmp_path.iterdir())


def test_a_training_task_named_with_a_trailing_newline_is_the_test_task(tiny_data_root: Path) -> None:
    """The offline packages: ``_meta.task`` "task901_toy_entailment\\n" is the test task, left out of training;
    a split list saved with a byte-order mark and CRLF line ends still names the same tasks."""
    test = "task901_toy_entailment"
    path = tiny_data_root / "sni/train.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows.append(_record(f"{test}\n", n=4))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    split = tiny_data_root / "sni/splits/default"
    for name in ("train_tasks.txt", "test_tasks.txt"):
        lines = (split / name).read_text().split()
        (split / name).write_text("\ufeff" + "\r\n".join(lines) + "\r\n", encoding="utf-8")
    from promoe.config import DataConfig

    splits = load_splits(DataConfig(root=str(tiny_data_root), val_tasks=1))
    assert test in {t.name for t in splits.test}
    assert test not in {t.name for t in splits.train + splits.val}
    assert [d.reason for d in splits.decisions if d.task == test and not d.kept] == [f"is SNI test task {test}"]


def test_a_user_training_file_cannot_hold_a_test_task_under_a_blurred_name(tmp_path: Path, tiny_data_root: Path,
                                                                          capsys) -> None:
    data = tmp_path / "mine"
    data.mkdir()
    train = _write_jsonl(data / "train.jsonl", [_record(f"task_{i}", n=3) for i in range(4)]
                         + [_record("task_x\u200b\n", n=3)])
    test = _write_jsonl(data / "test.jsonl", [_record("task_x", n=2)])
    before = _tree(data)
    err = _refused(["run", "--preset", "smoke", "--output-dir", str(tmp_path / "out"), "data.source=files",
                    f"data.train_files=[{train}]", f"data.test_files=[{test}]", "data.val_tasks=1"], capsys)
    assert "both training and test tasks, e.g. task_x" in err and "fix:" in err
    assert _tree(data) == before
    assert not (tmp_path / "out").exists() or {p.name for p in (tmp_path / "out").rglob("*") if p.is_file()} <= {".lock"}


def test_score_matches_ids_in_one_form_and_refuses_a_blank_reference_id(tmp_path: Path, capsys) -> None:
    refs = write_lines(tmp_path / "refs.jsonl", [
        {"id": "caf\u00e9-0", "references": ["yes"], "task_id": "task_a", "task_category": "c"},
        {"id": "b-1", "references": ["no"], "task_id": "task_a\n", "task_category": "c"}])
    preds = write_lines(tmp_path / "preds.jsonl", [{"id": "cafe\u0301-0", "prediction": "yes"},
                                                   {"id": "\ufeffb-1 ", "prediction": "no"}])
    assert main(["score", "--predictions", str(preds), "--references", str(refs)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ids"] == {"references": 2, "missing_predictions": 0, "unknown_predictions": 0}
    assert result["exact_match"] == 100.0
    blank = write_lines(tmp_path / "blank.jsonl", [{"id": ZERO_WIDTH, "references": ["x"], "task_id": "t",
                                                    "task_category": "c"}])
    err = _refused(["score", "--predictions", str(preds), "--references", str(blank)], capsys)
    assert "blank.jsonl" in err and "id (line 1)" in err and "is empty" in err


def test_duplicate_ids_that_differ_only_in_invisible_characters_are_refused(tmp_path: Path) -> None:
    rec = _record("task011_dup", n=2)
    rec["Instances"][1]["id"] = rec["Instances"][0]["id"] + "\u200b"
    with pytest.raises(Exception, match="duplicate instance id"):
        load_tasks(_write_json(tmp_path / "task011_dup.json", rec))


# -- rule 8: settings that cannot mean anything are refused before anything runs ----------------------------------


@pytest.mark.parametrize(("overrides", "says"), [
    (["model.n_experts=1"], "model.n_experts=1 with train.models=[moe, promoe]"),
    (["model.n_experts=1", "model.top_k=1", "train.models=[dense]"], "compare.router_only_models=[moe, promoe]"),
    (["experts.specialise=true", "experts.clusters=output"], "experts.clusters=output"),
    (["experts.from_run=elsewhere"], "experts.from_run='elsewhere'"),
    (["train.route_targets=1.0"], "train.route_targets=1.0"),
    (["train.patience=2", "train.eval_every=0"], "train.patience=2"),
])
def test_settings_that_cannot_mean_anything_are_refused(tmp_path: Path, tiny_data_root: Path, capsys,
                                                        overrides: list[str], says: str) -> None:
    out = tmp_path / "out"
    err = _refused(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(out),
                    *overrides], capsys)
    assert says in err and ": set " in err  # the keys, then the fix
    assert not out.exists()


def test_one_expert_with_dense_rows_only_is_accepted() -> None:
    from promoe.config import load_config

    cfg = load_config("smoke", ["model.n_experts=1", "model.top_k=1", "train.models=[dense]",
                                "compare.icl_models=[backbone,dense]", "compare.fewshot_models=[dense]",
                                "compare.router_only_models=[dense]"])
    assert cfg.routed() == []


def test_duplicate_seeds_are_refused_before_anything_runs(tmp_path: Path, tiny_data_root: Path, capsys) -> None:
    out = tmp_path / "out"
    err = _refused(["run", "--preset", "smoke", "--data-root", str(tiny_data_root), "--output-dir", str(out),
                    "--seeds", "0", "1", "0"], capsys)
    assert err.startswith("error: --seeds 0 1 0: seed 0 is listed twice") and "list each seed once" in err
    assert not out.exists()


# -- rule 8: a resumed run's records are whole --------------------------------------------------------------------


def test_times_of_an_earlier_start_are_kept_and_a_damaged_record_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "times.json"
    first = resume_times(path, {"data": 1.0})
    record_stage(first, "train_moe", 30.0)
    record_cut(first, "train", 2, 10, 256)
    assert json.loads(path.read_text())["train_moe"] == 30.0  # written at once, before the run ends
    again = resume_times(path, {"data": 2.0})
    record_stage(again, "train_moe", 0.5)  # finished before: only reloaded now
    record_stage(again, "eval", 9.0)
    saved = json.loads(path.read_text())
    assert stage_seconds(saved) == {"data": 1.0, "train_moe": 30.0, "eval": 9.0}
    assert set(saved[PEAKS]) == {"train_moe", "eval"} and saved[CUT] == {"train": [2, 10, 256]}
    path.write_bytes(b"\x00\xffnot json")
    assert dict(resume_times(path, {"data": 3.0})) == {"data": 3.0}
    path.write_text(json.dumps({"load": "fast", PEAKS: [1], CUT: {"eval": [1, 2]}, "eval": 4.0}))
    assert dict(resume_times(path, {})) == {"eval": 4.0, CUT: {}}


RECORD_OVERRIDES = ["compare.icl_models=[]", "compare.fewshot_models=[]", "compare.router_only_models=[]",
                    "compare.routers=[uniform,oracle]", "compare.ablations=[shuffled]"]


def _stage_names(report: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith("Stage times: "))
    return re.findall(r"(?:^Stage times: |, )(.+?) \d+\.\d s", line)


@pytest.mark.slow
def test_a_run_killed_in_its_analysis_resumes_with_every_stage_recorded(tiny_data_root: Path, tmp_path: Path) -> None:
    common = ["--preset", "smoke", "--data-root", str(tiny_data_root), *RECORD_OVERRIDES]
    assert main(["run", "--output-dir", str(tmp_path / "a"), *common]) == 0
    whole = tmp_path / "a" / "smoke"
    run = tmp_path / "b" / "smoke"
    cmd = [sys.executable, str(ROOT / "run_experiment.py"), "--output-dir", str(tmp_path / "b"), *common]
    killed, _ = run_until(cmd, run, "analysis", timeout=300)
    assert killed, "the run ended before its analysis"
    again = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already evaluated, kept" in again.stderr  # resumed, not redone
    a, b = (json.loads((d / "times.json").read_text()) for d in (whole, run))
    assert stage_seconds(b).keys() == stage_seconds(a).keys()
    assert b[PEAKS].keys() == a[PEAKS].keys() and b[CUT] == a[CUT] and b["dtype"] == a["dtype"]
    assert b["peak_rss_gib"] >= max(b[PEAKS].values())
    reports = [(d / "REPORT.md").read_text() for d in (whole, run)]
    assert _stage_names(reports[1]) == _stage_names(reports[0]) and len(_stage_names(reports[0])) >= 8
