"""promoe.training.trainer: resume from a checkpoint gives the uninterrupted result; sampling plan; NaN stops cleanly;
validation routes as the model is scored; data-parallel training (2 CPU processes, gloo) matches 1-process
training with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from promoe.config import ModelConfig, PromptConfig, TrainConfig
from promoe.data.examples import build_examples, sampling_plan
from promoe.data.schema import Instance, Task
from promoe.errors import PromoeError
from promoe.model.backbone import load_backbone
from promoe.model.build import build_model
from promoe.model.task_encoder import HashingEncoder
from promoe.training.trainer import Trainer, TrainingError, read_metrics, save_trainable

MCFG = ModelConfig(backbone="tiny-llama", n_moe_layers=2, n_experts=4, task_encoder="hashing", d_task=32, d_hyper=16)
TASKS = [Task(name=f"task{t}", definition=f"Task {t}: copy the {w}.",
              instances=tuple(Instance(f"t{t}-{i}", f"{w} {i} {'x' * (i * 3)}", (f"{w}{i}",)) for i in range(6)))
         for t, w in enumerate(["word", "number", "colour"])]


def _trainer(out: Path, mcfg: ModelConfig = MCFG, **kw) -> Trainer:
    bb = load_backbone(mcfg, seed=0)
    examples = build_examples(TASKS, bb.tokenizer, per_task=6, max_length=64, max_target_length=8,
                              prompt=PromptConfig())
    emb = dict(zip([t.name for t in TASKS], HashingEncoder(32).encode([t.definition for t in TASKS]), strict=True))
    extra = {k: kw.pop(k) for k in ("wording_emb", "_targets", "validate_first") if k in kw}
    cfg = TrainConfig(**{"steps": 6, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "eval_every": 3,
                         "checkpoint_every": 2, "max_length": 64, **kw})
    model = build_model(bb.model, bb.family, mcfg, "promoe", seed=0)
    return Trainer(model, cfg=cfg, examples=examples, val_examples=examples[:4], task_emb=emb,
                   pad_id=bb.tokenizer.pad_token_id, out_dir=out, seed=0, wording_emb=extra.get("wording_emb"),
                   route_targets=extra.get("_targets"), validate_first=extra.get("validate_first", False))


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path: Path) -> None:
    full = _trainer(tmp_path / "full")
    full.fit()
    save_trainable(full.raw, tmp_path / "full.safetensors")

    part = _trainer(tmp_path / "part")
    state = {"best_val_loss": None, "best_step": None, "bad_validations": 0}
    for step in range(2):  # two steps, a checkpoint, then the process "dies"
        part.step(step)
    part._save_last(2, {**state, "step": 2})
    resumed = _trainer(tmp_path / "part")
    resumed.fit()
    save_trainable(resumed.raw, tmp_path / "resumed.safetensors")
    a, b = load_file(str(tmp_path / "full.safetensors")), load_file(str(tmp_path / "resumed.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 4, 5, 6]  # the resumed run logs only the steps it ran


def _weights(trainer: Trainer, path: Path) -> dict[str, torch.Tensor]:
    save_trainable(trainer.raw, path)
    return load_file(str(path))


def test_same_seed_twice_gives_identical_training(tmp_path: Path) -> None:
    noisy = ModelConfig(**{**MCFG.__dict__, "router_noise": 0.5, "router_jitter": 0.1})  # draws random numbers
    a, b = _trainer(tmp_path / "a", noisy), _trainer(tmp_path / "b", noisy)
    a.fit()
    b.fit()
    assert (tmp_path / "a/metrics.jsonl").read_text() == (tmp_path / "b/metrics.jsonl").read_text()
    wa, wb = _weights(a, tmp_path / "a.st"), _weights(b, tmp_path / "b.st")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_the_random_stream_and_survives_a_kill_between_renames(tmp_path: Path) -> None:
    """With router noise the random state matters: a resumed run equals the uninterrupted one exactly,
    also when the kill came between the two renames of a checkpoint save (only `.last.old` is left)."""
    noisy = ModelConfig(**{**MCFG.__dict__, "router_noise": 0.5})
    full = _trainer(tmp_path / "full", noisy)
    full.fit()
    part = _trainer(tmp_path / "part", noisy)
    torch.manual_seed(0)  # as `fit` starts
    for step in range(2):
        part.step(step)
    part._save_last(2, {"best_val_loss": None, "best_step": None, "bad_validations": 0, "step": 2})
    torch.manual_seed(1234)  # a new process starts from another random state
    (tmp_path / "part/last").rename(tmp_path / "part/.last.old")
    resumed = _trainer(tmp_path / "part", noisy)
    resumed.fit()
    wa, wb = _weights(full, tmp_path / "a.st"), _weights(resumed, tmp_path / "b.st")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    full_rows = (tmp_path / "full/metrics.jsonl").read_text().splitlines()
    assert (tmp_path / "part/metrics.jsonl").read_text().splitlines()[-4:] == full_rows[-4:]


@pytest.mark.usefixtures("tiny_tensors")
def test_validation_routes_as_scored_and_logs_the_training_regime(tmp_path: Path) -> None:
    """Trained with soft routing over every expert, scored with one: the loss that chooses the checkpoint is
    the one-expert loss, and the soft one is logged next to it."""
    trainer = _trainer(tmp_path / "soft", replace(MCFG, top_k=4, eval_top_k=1))
    model = trainer.raw
    with torch.no_grad():  # experts that compute different things (upcycled copies are all alike)
        for layer in model.moe_layers:
            for p in layer.experts.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * p.std())
    scored = trainer.validate()
    assert model.top_ks == [4, 4]  # training keeps its routing
    model.set_top_k(1)
    one = trainer.validate()
    model.set_top_k(4)
    assert scored == pytest.approx(one, rel=1e-6) and abs(trainer.validate_as_trained() - one) > 1e-3
    result = trainer.fit()
    rows = [r for r in read_metrics(tmp_path / "soft/metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in rows] == [3, 6] and all(r["val_top_k"] == 1 for r in rows)
    assert all(r["val_loss_train_top_k"] != r["val_loss"] for r in rows) and result.val_top_k == 1
    assert result.best_val_loss == min(r["val_loss"] for r in rows)
    plain = _trainer(tmp_path / "plain", steps=3)  # scored as trained: nothing more to log
    assert plain.fit().val_top_k is None and "val_top_k" not in read_metrics(tmp_path / "plain/metrics.jsonl")[-1]


def test_the_router_reads_one_wording_per_task_and_step_and_validation_reads_the_definition(tmp_path: Path) -> None:
    pool = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    trainer = _trainer(tmp_path / "w", wording_emb={"task0": pool})
    definition = trainer.task_emb["task0"]
    options = [definition, *pool]
    drawn = [next(i for i, o in enumerate(options) if torch.equal(trainer.wording("task0", s), o)) for s in range(60)]
    assert set(drawn) == {0, 1, 2, 3}  # the Definition and each wording, drawn uniformly
    again = _trainer(tmp_path / "w2", wording_emb={"task0": pool})
    assert all(torch.equal(again.wording("task0", s), trainer.wording("task0", s)) for s in range(60))
    assert torch.equal(trainer.wording("task0", None), definition)  # validation (no step): the Definition
    assert torch.equal(trainer.wording("task1", 5), trainer.task_emb["task1"])  # a task with no other wording
    idx = list(range(len(trainer.examples)))
    mb = trainer._micro(idx, trainer.examples, 1.0, step=drawn.index(2))
    rows = [r for r, k in enumerate(mb.batch.task_keys) if k == "task0"]
    assert rows and all(torch.equal(mb.task_emb[r], pool[1]) for r in rows)  # one wording per task in a step
    assert mb.route_targets is None  # no targets given


@pytest.mark.parametrize("weight", [0.0, 5.0])
def test_routing_targets_pull_each_training_task_to_its_expert(tmp_path: Path, weight: float) -> None:
    """With the routing-target loss, a task-level router learns to send each task to its target expert at every
    layer; without it, the same training does not (the LM loss alone has nothing to prefer here)."""
    targets = {"task0": 3, "task1": 1, "task2": 2}
    trainer = _trainer(tmp_path / "t", replace(MCFG, proactive_mode="task", top_k=4), route_targets=weight,
                       router_lr=0.05, steps=20, eval_every=0, **{"_targets": targets})
    trainer.fit()
    model = trainer.raw.eval()
    emb = torch.stack([trainer.task_emb[t] for t in targets])
    chosen = model.task_routing(emb, list(targets))
    with torch.no_grad():
        out = model(input_ids=torch.ones(3, 2, dtype=torch.long), task_emb=emb, task_keys=list(targets))
    top = torch.stack([info.router.probs[:, 0].argmax(-1) for info in out.routing], 1)  # (tasks, layers)
    assert chosen.shape[:2] == (3, 2)
    hit = bool((top == torch.tensor(list(targets.values()))[:, None]).all())
    assert hit == (weight > 0), top.tolist()


def test_a_model_given_ready_is_validated_at_step_zero_and_kept_unless_beaten(tmp_path: Path) -> None:
    still = _trainer(tmp_path / "still", lr=1e-12, router_lr=1e-12, validate_first=True)  # training changes nothing
    result = still.fit()
    rows = read_metrics(tmp_path / "still/metrics.jsonl")
    assert rows[0] == {"step": 0, "val_loss": pytest.approx(result.best_val_loss)} and result.best_step == 0
    again = _trainer(tmp_path / "still", lr=1e-12, router_lr=1e-12, validate_first=True).fit()  # a finished run
    assert again.best_step == 0 and read_metrics(tmp_path / "still/metrics.jsonl") == rows  # nothing lost or added
    moving = _trainer(tmp_path / "moving", lr=1e-2, router_lr=1e-2, validate_first=True)
    assert moving.fit().best_step > 0  # a better checkpoint replaces it
    plain = _trainer(tmp_path / "plain", steps=3)
    assert plain.fit().best_step == 3 and read_metrics(tmp_path / "plain/metrics.jsonl")[0]["step"] == 1


def test_sampling_plan_is_deterministic_balanced_and_bucketed() -> None:
    bb = load_backbone(MCFG, seed=0)
    examples = build_examples(TASKS, bb.tokenizer, per_task=6, max_length=1024, max_target_length=8,
                              prompt=PromptConfig())
    plan = sampling_plan(examples, steps=32, batch_size=4, temperature=1.0, seed=3)
    assert plan == sampling_plan(examples, steps=32, batch_size=4, temperature=1.0, seed=3)
    assert plan != sampling_plan(examples, steps=32, batch_size=4, temperature=1.0, seed=4)
    assert len(plan) == 32 and all(len(b) == 4 for b in plan)
    counts = [sum(examples[i].task == t.name for b in plan for i in b) for t in TASKS]
    assert min(counts) > 0.5 * max(counts)  # equal-size tasks are drawn about equally
    spread = [max(len(examples[i].input_ids) for i in b) - min(len(examples[i].input_ids) for i in b) for b in plan]
    overall = max(len(e.input_ids) for e in examples) - min(len(e.input_ids) for e in examples)
    assert sum(spread) / len(spread) < 0.5 * overall  # batches hold examples of similar length


def test_non_finite_loss_stops_with_the_step_and_tasks(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path / "nan")
    with torch.no_grad():
        trainer.raw.moe_layers[0].experts.w_out.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"step 0: non-finite loss .* tasks \['task"):
        trainer.fit()


@pytest.mark.parametrize("clip", [1.0, 0.0])  # checked with and without gradient clipping
def test_non_finite_gradient_stops_with_the_step_batch_and_tasks_and_keeps_the_checkpoint(tmp_path: Path,
                                                                                         clip: float) -> None:
    bad = _trainer(tmp_path / "nan2", steps=4, checkpoint_every=2, max_grad_norm=clip)
    w = bad.raw.moe_layers[0].experts.w_out
    calls = []
    w.register_hook(lambda g: g * float("nan") if calls.append(1) or len(calls) > 2 else g)  # from the 3rd step
    with pytest.raises(TrainingError, match=r"step 2: non-finite gradient norm on tasks \['task.*examples \["):
        bad.fit()
    assert torch.isfinite(w).all()  # the bad step was not applied
    assert '"step": 2' in (tmp_path / "nan2/last/state.json").read_text()  # the last good checkpoint is kept


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path: Path) -> None:
    part = _trainer(tmp_path / "part")
    (tmp_path / "part").mkdir()
    part.step(0)
    part._log({"step": 1, "loss": 1.0})
    part._save_last(1, {"best_val_loss": None, "best_step": None, "bad_validations": 0, "step": 1})
    with (tmp_path / "part/metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "lo')  # killed while appending
    _trainer(tmp_path / "part").fit()
    steps = [json.loads(line)["step"] for line in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    (tmp_path / "bad.jsonl").write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(PromoeError, match="bad.jsonl: line 1 is not JSON"):
        read_metrics(tmp_path / "bad.jsonl")


# -- data-parallel training (2 CPU processes, gloo) --------------------------------------------------

SCRIPT = Path(__file__).parents[1] / "scripts" / "dp_train.py"


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not available")
def test_two_process_training_matches_one_process(tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    _run([sys.executable, str(SCRIPT), str(tmp_path / "one")], tmp_path)
    _run([torchrun, "--standalone", "--nproc-per-node", "2", str(SCRIPT), str(tmp_path / "two")], tmp_path)
    one, two = load_file(str(tmp_path / "one/final.safetensors")), load_file(str(tmp_path / "two/final.safetensors"))
    assert one.keys() == two.keys() and any("hyper" in k for k in one)
    init = load_file(str(tmp_path / "one/init.safetensors"))
    assert all(not torch.equal(init[k], one[k]) for k in one if "hyper" in k or "router" in k)  # it trained
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=2e-5, rtol=1e-4, msg=k)
    m1 = (tmp_path / "one/train/metrics.jsonl").read_text().splitlines()
    m2 = (tmp_path / "two/train/metrics.jsonl").read_text().splitlines()
    assert len(m1) == len(m2) == 4
