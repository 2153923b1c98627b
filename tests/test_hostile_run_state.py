"""Rule 6 of docs/reliability.md's "Bad input" (a run trusts nothing it reads back), the second half of
tests/test_hostile_resources_and_state.py: a damaged checkpoint, optimizer state, training log or progress file
is made again from the last good state (one warning, the results of an undamaged run) or refused with one line
naming the file and a fix that works (followed here); a full disk, an unwritable folder and a symbolic-link loop
are one ``error:`` line, and the run resumes to the same results once the disk has room. Nothing outside the run's
folder changes.

Cross-cutting (every file a run reads back, the whole command line), so at the top level of tests/."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from promoe.cli import main
from promoe.evaluation.state import PassState
from tests.test_hostile_resources_and_state import refused, tree
from tests.training.test_trainer import _trainer

SMALL = ["train.models=[moe]", "compare.routers=[]", "compare.ablations=[]", "compare.icl_models=[]",
         "compare.fewshot_models=[]", "compare.router_only_models=[]", "eval.backbone=false"]
"""The smoke preset cut to one trained model and its zero-shot row: a whole run in seconds."""


def _run(data: Path, out: Path) -> list[str]:
    return ["run", "--preset", "smoke", "--data-root", str(data), "--output-dir", str(out), *SMALL]


@pytest.fixture(scope="module")
def finished(tiny_data_root_module: Path, tmp_path_factory) -> Path:
    """A finished run of :data:`SMALL`."""
    out = tmp_path_factory.mktemp("finished")
    assert main(_run(tiny_data_root_module, out)) == 0
    return out / "smoke"


def _copy(run: Path, tmp: Path) -> Path:
    shutil.copytree(run, tmp / "out" / "smoke")
    return tmp / "out" / "smoke"


def _outside(tmp: Path, run: Path, data: Path) -> dict[str, bytes]:
    """Every file under ``tmp`` but the run folder's, and the data's."""
    return {**{k: v for k, v in tree(tmp).items() if not (tmp / k).is_relative_to(run)},
            **{f"data/{k}": v for k, v in tree(data).items()}}


# -- a training's checkpoint ------------------------------------------------------------------------------------

def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


DAMAGE = {  # file of train/<model>/, what is done to it
    "state.json holds []": ("last/state.json", lambda p: p.write_text("[]")),
    "state.json holds random bytes": ("last/state.json", lambda p: p.write_bytes(os.urandom(200))),
    "state.json names a step past the training": ("last/state.json", lambda p: p.write_text(
        '{"step": 5, "best_val_loss": null, "best_step": null, "bad_validations": 0}')),
    "optim.pt truncated": ("last/optim.pt", _truncate),
    "trainable.safetensors truncated": ("last/trainable.safetensors", _truncate),
    "trainable.safetensors deleted (the fix printed before)": ("last/trainable.safetensors", Path.unlink),
    "best.safetensors damaged": ("best.safetensors", lambda p: p.write_bytes(b"\x00" * 64)),
    "metrics.jsonl broken": ("metrics.jsonl", lambda p: p.write_text('{"step": 1\n{"step": 2}\n')),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished training's folder (train/<model>/): its checkpoint, log and best weights."""
    out = tmp_path_factory.mktemp("undamaged") / "model"
    _trainer(out, steps=4).fit()
    return out


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_checkpoint_is_trained_again_to_the_same_weights(tmp_path: Path, trained: Path, case,
                                                                   caplog) -> None:
    name, damage = DAMAGE[case]
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    damage(out / name)
    with caplog.at_level(logging.WARNING):
        result = _trainer(out, steps=4).fit()  # resumes at its last step, finds the damage
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("promoe")]
    assert len(warned) == 1 and name.split("/")[-1] in warned[0] and "starts again" in warned[0], warned
    again, undamaged = load_file(str(out / "best.safetensors")), load_file(str(trained / "best.safetensors"))
    for k, v in undamaged.items():
        torch.testing.assert_close(again[k], v, msg=k)
    assert [r["step"] for r in result.history] == [1, 2, 3, 4]


def test_a_damaged_progress_file_starts_its_pass_over(tmp_path: Path, caplog) -> None:
    path = tmp_path / "progress" / "eval.json"
    path.parent.mkdir()
    model = SimpleNamespace(set_rng_states=lambda states: pytest.fail("restored from a damaged file"))
    rows = [SimpleNamespace(name="moe", stats=None, model=model)]
    for content in (b"[]", os.urandom(300), b'{"key": "k", "rows": []}', b'{"key": "k", "rows": {"moe": '
                    b'{"done": 2, "answers": {"a-0": 5}, "stats": null, "rng": {}}}}',
                    b'{"key": "k", "rows": {"moe": {"done": 2, "answers": {}, "stats": null, "rng": {"0": "eA=="}}}}'):
        path.write_bytes(content)
        out: dict[str, dict[str, str]] = {"moe": {}}
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert PassState(path, "k").resume(rows, out) == {"moe": 0}
        assert out == {"moe": {}} and "eval.json" in caplog.text and "starting the pass over" in caplog.text


# -- whole runs -------------------------------------------------------------------------------------------------

def test_a_damaged_run_folder_resumes_to_the_results_of_an_undamaged_one(finished: Path, tiny_data_root_module: Path,
                                                                        tmp_path: Path, caplog) -> None:
    run = _copy(finished, tmp_path)
    for name in ("REPORT.md", "summary.json", "scores/moe.json", "predictions/moe.jsonl"):
        (run / name).unlink()  # the zero-shot pass of moe runs again, from a damaged progress file
    (run / "progress").mkdir(exist_ok=True)
    (run / "progress" / "eval.json").write_text("[]")
    (run / "train/moe/last/state.json").write_bytes(os.urandom(100))
    _truncate(run / "train/moe/last/optim.pt")
    outside = _outside(tmp_path, run, tiny_data_root_module)
    with caplog.at_level(logging.WARNING):
        assert main(_run(tiny_data_root_module, tmp_path / "out")) == 0
    assert "state.json" in caplog.text and "eval.json" in caplog.text
    assert (run / "summary.json").read_text() == (finished / "summary.json").read_text()
    assert not list(run.glob("progress/*.json")) and _outside(tmp_path, run, tiny_data_root_module) == outside


def test_the_printed_fix_for_a_damaged_model_file_works(finished: Path, tiny_data_root_module: Path, tmp_path: Path,
                                                        capsys) -> None:
    run = _copy(finished, tmp_path)
    best = run / "train/moe/best.safetensors"
    best.write_bytes(b"\x07" * 100)
    outside = _outside(tmp_path, run, tiny_data_root_module)
    predict = ["predict", "--run", str(run), "--model", "moe", "--definition", "Say x.", "--input", "y"]
    line = refused(capsys, predict, ["best.safetensors", "damaged", "delete it and run the run's command again",
                                     "delete its REPORT.md too"], seconds=60)
    assert "Traceback" not in line
    best.unlink()  # the fix, as printed
    (run / "REPORT.md").unlink()
    assert main(_run(tiny_data_root_module, tmp_path / "out")) == 0
    assert main(predict) == 0 and "answer:" in capsys.readouterr().out
    assert (run / "summary.json").read_text() == (finished / "summary.json").read_text()
    assert load_file(str(best)).keys() == load_file(str(finished / "train/moe/best.safetensors")).keys()
    assert _outside(tmp_path, run, tiny_data_root_module) == outside


def _torch_full(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                       "file write failed")


def _safetensors_full(*args, **kwargs):
    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                          'left on device" })')


def _os_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_full_disk_is_one_error_line_and_the_run_resumes_when_space_is_back(
        finished: Path, tiny_data_root_module: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    run = tmp_path / "out" / "smoke"
    outside = _outside(tmp_path, run, tiny_data_root_module)
    for target, full, file in (("torch.save", _torch_full, "optim.pt"),
                               ("promoe.checkpoint.save_file", _safetensors_full, ".safetensors"),
                               ("os.fsync", _os_full, "No space left on device")):
        with monkeypatch.context() as m:
            m.setattr(target, full)
            refused(capsys, _run(tiny_data_root_module, tmp_path / "out"), ["cannot write", file, "free some disk space",
                                                                     "the same command resumes"], seconds=120)
    assert main(_run(tiny_data_root_module, tmp_path / "out")) == 0  # space is back
    assert (run / "summary.json").read_text() == (finished / "summary.json").read_text()
    assert _outside(tmp_path, run, tiny_data_root_module) == outside


def test_an_unwritable_folder_or_a_link_loop_as_output_dir_is_one_error_line(tiny_data_root_module: Path, tmp_path: Path,
                                                                             capsys) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    refused(capsys, _run(tiny_data_root_module, loop), ["loop", "symbolic link", "choose another path"])
    unwritable = Path("/sys/promoe-unwritable")  # even root may not make a folder there
    if not unwritable.parent.is_dir():
        pytest.skip("no /sys")
    refused(capsys, _run(tiny_data_root_module, unwritable), ["promoe-unwritable", "choose a folder you may write to"])
    assert not unwritable.exists() and loop.is_symlink()
