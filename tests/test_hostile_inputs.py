"""Careless and hostile input, table-driven: every command line below is refused with exit status 2 and one
``error:`` line that says why, with no traceback and no hang (an alarm bounds each case), and a sentinel run
folder and a sentinel user folder are byte-identical afterwards. The rules are docs/reliability.md's "Bad input"."""

from __future__ import annotations

import gzip
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from promoe.cli import main
from promoe.rundir import claim
from tests.data.helpers import _record, _write_json, _write_jsonl
from tests.helpers import write_lines

SECONDS = 60  # per case; every refusal here comes before any model work


class Hang(Exception):
    pass


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _files(tmp: Path, data: Path) -> dict[str, str]:
    """The inputs the cases point at: good ones, broken ones, special ones, and the two sentinels."""
    out = tmp / "out"
    run = out / "sentinel_run"  # a finished run of this project
    claim(run)
    for name, text in {"config.yaml": "name: sentinel_run\n", "summary.json": "{}", "REPORT.md": "# r\n",
                       "scores/promoe.json": '{"rougeL": 30.91}', "predictions/promoe.jsonl":
                       '{"id": "a-0", "prediction": "x"}\n', "references.jsonl":
                       '{"id": "a-0", "references": ["x"], "task_id": "a", "task_category": "c"}\n'}.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    user = out / "smoke"  # the user's own folder, named as the smoke run would be
    (user / "src").mkdir(parents=True)
    (user / "notes.txt").write_text("my notes")
    (user / "src" / "code.py").write_text("print('mine')\n")
    f = {"out": str(out), "run": str(run), "user": str(user), "data": str(data)}
    f["fifo"] = str(tmp / "pipe")
    os.mkfifo(f["fifo"])
    f["tasks"] = str(_write_json(tmp / "task001_good.json", _record("task001_good", n=2)))
    f["empty"] = str(tmp / "empty.jsonl")
    Path(f["empty"]).write_text("")
    f["latin1"] = str(tmp / "latin1.json")
    Path(f["latin1"]).write_bytes(b'{"Definition": ["caf\xe9"]}')
    f["truncated_gz"] = str(tmp / "cut.jsonl.gz")
    Path(f["truncated_gz"]).write_bytes(gzip.compress(json.dumps(_record("task002_cut")).encode())[:40])
    no_inst = _record("task003_none")
    no_inst["Instances"] = []
    f["no_instances"] = str(_write_json(tmp / "task003_none.json", no_inst))
    a, b = _record("task004_a", n=2), _record("task005_b", n=2)
    for rec in (a, b):
        for i, inst in enumerate(rec["Instances"]):
            inst["id"] = str(i)
    f["shared_ids"] = str(_write_jsonl(tmp / "shared.jsonl", [a, b]))
    f["bad_json"] = str(tmp / "bad.json")
    Path(f["bad_json"]).write_text('{"Definition": ["x"]')
    f["preds"] = str(write_lines(tmp / "p.jsonl", [{"id": "a-0", "prediction": "x"}]))
    f["other_preds"] = str(write_lines(tmp / "q.jsonl", [{"id": "zzz", "prediction": "x"}]))
    f["refs"] = str(write_lines(tmp / "r.jsonl", [{"id": "a-0", "references": ["x"], "task_id": "a",
                                                         "task_category": "c"}]))
    f["dup_refs"] = str(write_lines(tmp / "d.jsonl", [{"id": "a-0", "references": ["x"], "task_id": "a",
                                                         "task_category": "c"}] * 2))
    f["broken_preds"] = str(write_lines(tmp / "b.jsonl", ['{"id": "a-0", "prediction": ']))
    stale = tmp / "stale"  # an earlier eval's folder, of another task file
    stale.mkdir()
    write_lines(stale / "references.jsonl", [{"id": "other-0", "references": ["y"], "task_id": "other",
                                              "task_category": "c"}])
    f["stale"] = str(stale)
    f["file"] = str(tmp / "a_file.txt")
    Path(f["file"]).write_text("not a folder")
    f["evil_yaml"] = str(tmp / "evil.yaml")
    Path(f["evil_yaml"]).write_text("name: !!python/object/apply:os.system ['echo owned']\n")
    f["bytes_yaml"] = str(tmp / "bytes.yaml")
    Path(f["bytes_yaml"]).write_bytes(b"name: \xff\xfe\n")
    f["list_yaml"] = str(tmp / "list.yaml")
    Path(f["list_yaml"]).write_text("- a\n- b\n")
    return f


RUN = ["run", "--preset", "smoke", "--data-root", "{data}", "--output-dir", "{out}"]
EVAL = ["eval", "--run", "{run}", "--model", "promoe"]
SCORE = ["score"]

CASES: list[tuple[str, list[str], str]] = [
    # (case, command line, what the one error line must say)
    ("zero experts", [*RUN, "name=c1", "model.n_experts=0"], "model.n_experts=0"),
    ("top_k above experts", [*RUN, "name=c2", "model.top_k=99"], "model.top_k=99"),
    ("eval_top_k above experts", [*RUN, "name=c3", "model.eval_top_k=99"], "model.eval_top_k"),
    ("MoE layer outside the backbone", [*RUN, "name=c4", "model.moe_layers=[0,999]"], "model.moe_layers"),
    ("MoE layer negative", [*RUN, "name=c5", "model.moe_layers=[-1]"], "model.moe_layers"),
    ("negative steps", [*RUN, "name=c6", "train.steps=-5"], "train.steps=-5"),
    ("NaN learning rate", [*RUN, "name=c7", "train.lr=.nan"], "train.lr"),
    ("infinite learning rate", [*RUN, "name=c8", "train.lr=inf"], "train.lr"),
    ("zero batch", [*RUN, "name=c9", "train.batch_size=0"], "train.batch_size=0"),
    ("every task held out", [*RUN, "name=c10", "data.val_tasks=100000"], "data.val_tasks"),
    ("negative split seed", [*RUN, "name=c14", "data.split_seed=-1"], "data.split_seed=-1"),
    ("negative seed", [*RUN, "name=c15", "--seeds", "-1"], "seed=-1"),
    ("unknown key", [*RUN, "name=c11", "model.n_expertz=4"], "n_expertz"),
    ("wrong type", [*RUN, "name=c12", "model.n_experts=four"], "model.n_experts"),
    ("absolute name", [*RUN, "name=/some/folder/mycode"], "not a plain folder name"),
    ("name that climbs", [*RUN, "name=../escape"], "not a plain folder name"),
    ("blank name", [*RUN, "name= "], "name"),
    ("preset that is not there", ["run", "--preset", "nonexistent"], "not found"),
    ("preset that runs code", ["run", "--preset", "{evil_yaml}"], "python/object"),
    ("preset not UTF-8", ["run", "--preset", "{bytes_yaml}"], "UTF-8"),
    ("preset not a mapping", ["run", "--preset", "{list_yaml}"], "list.yaml"),
    ("preset that is a FIFO", ["run", "--preset", "{fifo}"], "not found"),
    ("missing data folder", ["run", "--preset", "smoke", "--data-root", "{out}/nowhere", "--output-dir", "{out}",
                             "name=c13"], "not found"),
    ("output dir is a file", ["run", "--preset", "smoke", "--data-root", "{data}", "--output-dir", "{file}"],
     "is a file"),
    ("run into the user's folder", RUN, "not a PRo-MoE run folder"),
    ("overwrite the user's folder", [*RUN, "--overwrite"], "not a PRo-MoE run folder"),
    ("eval into the run folder", [*EVAL, "--tasks", "{tasks}", "--output-dir", "{run}"], "lies in the run folder"),
    ("eval into the run's scores", [*EVAL, "--tasks", "{tasks}", "--output-dir", "{run}/scores"],
     "lies in the run folder"),
    ("eval output dir is a file", [*EVAL, "--tasks", "{tasks}", "--output-dir", "{file}"], "is a file"),
    ("eval tasks FIFO", [*EVAL, "--tasks", "{fifo}", "--output-dir", "{out}/e1"], "not a regular file"),
    ("eval tasks missing", [*EVAL, "--tasks", "{out}/none.json", "--output-dir", "{out}/e2"], "not found"),
    ("eval tasks empty file", [*EVAL, "--tasks", "{empty}", "--output-dir", "{out}/e3"], "empty.jsonl"),
    ("eval tasks not UTF-8", [*EVAL, "--tasks", "{latin1}", "--output-dir", "{out}/e4"], "latin1.json"),
    ("eval tasks truncated gzip", [*EVAL, "--tasks", "{truncated_gz}", "--output-dir", "{out}/e5"], "cut.jsonl.gz"),
    ("eval task without instances", [*EVAL, "--tasks", "{no_instances}", "--output-dir", "{out}/e6"],
     "Instances"),
    ("eval tasks sharing ids", [*EVAL, "--tasks", "{shared_ids}", "--output-dir", "{out}/e7"], "task004_a"),
    ("eval tasks malformed JSON", [*EVAL, "--tasks", "{bad_json}", "--output-dir", "{out}/e8"], "bad.json"),
    ("eval into another file's eval folder", [*EVAL, "--tasks", "{tasks}", "--output-dir", "{stale}"],
     "references of another task file"),
    ("eval a run that is not there", ["eval", "--run", "{out}/norun", "--model", "promoe", "--tasks", "{tasks}",
                                      "--output-dir", "{out}/e9"], "config.yaml"),
    ("eval the user's folder as a run", ["eval", "--run", "{user}", "--model", "promoe", "--tasks", "{tasks}",
                                         "--output-dir", "{out}/e10"], "not a run folder"),
    ("score predictions FIFO", [*SCORE, "--predictions", "{fifo}", "--references", "{refs}"], "not a regular file"),
    ("score references FIFO", [*SCORE, "--predictions", "{preds}", "--references", "{fifo}"], "not a regular file"),
    ("score over its own input", [*SCORE, "--predictions", "{preds}", "--references", "{refs}", "--output",
                                  "{preds}"], "would be overwritten"),
    ("score into a run", [*SCORE, "--predictions", "{preds}", "--references", "{refs}", "--output",
                          "{run}/scores/promoe.json"], "lies in the run folder"),
    ("score predictions for other ids", [*SCORE, "--predictions", "{other_preds}", "--references", "{refs}"],
     "none of its 1 prediction ids"),
    ("score empty predictions", [*SCORE, "--predictions", "{empty}", "--references", "{refs}"], "no predictions"),
    ("score duplicate references", [*SCORE, "--predictions", "{preds}", "--references", "{dup_refs}"],
     "duplicate id"),
    ("score broken predictions", [*SCORE, "--predictions", "{broken_preds}", "--references", "{refs}"],
     "not valid JSON"),
    ("score empty references", [*SCORE, "--predictions", "{preds}", "--references", "{empty}"], "no references"),
    ("predict empty definition", ["predict", "--run", "{run}", "--model", "promoe", "--definition", " ", "--input",
                                  "x"], "is empty"),
    ("predict empty input", ["predict", "--run", "{run}", "--model", "promoe", "--definition", "Say x.",
                             "--input", ""], "is empty"),
    ("export empty definition", ["export", "--run", "{run}", "--model", "promoe", "--definition", "", "--out",
                                 "{out}/x1"], "is empty"),
    ("export into the run folder", ["export", "--run", "{run}", "--model", "promoe", "--definition", "Say x.",
                                    "--out", "{run}"], "not empty"),
    ("export into the user's folder", ["export", "--run", "{run}", "--model", "promoe", "--definition", "Say x.",
                                       "--out", "{user}", "--overwrite"], "not an earlier export"),
    ("heuristics into the run folder", ["baseline", "heuristic", "--preset", "smoke", "--data-root", "{data}",
                                        "--output-dir", "{run}"], "lies in the run folder"),
    ("analyze the user's folder", ["analyze", "--run", "{user}"], "scores"),
    ("synth under a file", ["data", "synth", "--out", "{file}/sub"], "Not a directory"),
    ("synth over the user's folder", ["data", "synth", "--out", "{user}"], "smoke"),
]


def _alarm(signum, frame):
    raise Hang


@pytest.fixture
def inputs(tiny_data_root: Path, tmp_path: Path) -> dict[str, str]:
    return _files(tmp_path, tiny_data_root)


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40 and len({c for c, _, _ in CASES}) == len(CASES)


def test_every_careless_or_hostile_input_is_one_clean_refusal(inputs: dict[str, str], capsys) -> None:
    run, user = Path(inputs["run"]), Path(inputs["user"])
    sentinels: dict[Path, dict[str, bytes]] = {run: _tree(run), user: _tree(user)}
    failures: list[str] = []
    old: Callable = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case, argv, says in CASES:
            line = [a.format(**inputs) for a in argv]
            signal.alarm(SECONDS)
            try:
                code = main(line)
            except Hang:
                failures.append(f"{case}: no answer in {SECONDS} s")
                continue
            except SystemExit as e:  # argparse
                code = e.code
            except BaseException as e:  # noqa: BLE001 - a traceback is the failure this test looks for
                failures.append(f"{case}: traceback {type(e).__name__}: {e}")
                continue
            finally:
                signal.alarm(0)
            err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
            if code != 2 or len(err) != 1 or says not in err[0]:
                failures.append(f"{case}: exit {code}, errors {err!r} (expected one saying {says!r})")
            for folder, before in sentinels.items():
                if _tree(folder) != before:
                    failures.append(f"{case}: changed {folder.name}")
                    sentinels[folder] = _tree(folder)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not failures, "\n".join(failures)
    assert not (user / ".lock").exists()
