"""promoe.stages.compute: the matched budget gives the models that do not start from the specialised experts the
specialisation's examples too; the learning rate is the candidate with the lowest validation loss, chosen on the
validation tasks only, and a resumed choice does not train its finished candidates again."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from accelerate import Accelerator

from promoe.config import load_config
from promoe.data.splits import load_splits
from promoe.stages import start
from promoe.stages.compute import choose_lr, own_steps, pilot_config
from promoe.stages.lower_cache import LowerCache
from promoe.stages.train_models import train_model, training_examples
from promoe.training.loop import TrainingError
from promoe.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("tiny_tensors")


def test_matched_budget_gives_dense_and_upcycled_the_specialisations_steps() -> None:
    cfg = load_config("smoke", ["experts.specialise=true", "experts.steps=6", "train.steps=4"])
    assert cfg.train.budget == "matched"  # the default
    assert own_steps(cfg, over_experts=False) == 10 and own_steps(cfg, over_experts=True) == 4
    assert own_steps(load_config("smoke", ["experts.specialise=true", "experts.steps=6", "train.budget=own"]),
                     over_experts=False) == cfg.train.steps
    assert own_steps(load_config("smoke", ["experts.steps=6"]), over_experts=False) == cfg.train.steps  # none


def test_pilot_is_a_share_of_the_steps_validated_at_its_end() -> None:
    t = load_config("smoke", ["train.steps=40", "train.warmup_steps=10", "train.lr_pilot=0.25"]).train
    p = pilot_config(t, "router_lr", 0.01)
    assert (p.steps, p.warmup_steps, p.eval_every, p.router_lr, p.lr) == (10, 5, 0, 0.01, t.lr)
    whole = load_config("smoke", ["train.lr_pilot=1"]).train
    assert pilot_config(whole, "lr", 3e-4) == replace(whole, lr=3e-4)  # each candidate the full training


def test_lowest_validation_loss_wins_and_finished_candidates_are_not_trained_again(tmp_path: Path) -> None:
    loss = {1e-4: 2.5, 3e-4: 2.3, 1e-3: 2.4, 1e-2: None}
    trained = []

    def train(lr: float) -> float:
        trained.append(lr)
        if loss[lr] is None:
            raise TrainingError("non-finite loss")  # a rate too high: recorded, never chosen
        if lr == 1e-3 and trained.count(lr) == 1:
            raise KeyboardInterrupt  # the run is killed during this candidate
        return loss[lr]

    path = tmp_path / "lr_choice.json"
    with pytest.raises(KeyboardInterrupt):
        choose_lr(list(loss), "lr", 5, path, train)
    assert json.loads(path.read_text())["val_loss"] == {"0.0001": 2.5, "0.0003": 2.3}  # recorded as they finished
    choice = choose_lr(list(loss), "lr", 5, path, train)
    assert trained == [1e-4, 3e-4, 1e-3, 1e-3, 1e-2]  # the resumed choice trained only the unfinished ones
    assert choice["chosen"] == 3e-4 and choice["val_loss"] == {"0.0001": 2.5, "0.0003": 2.3, "0.001": 2.4, "0.01": None}
    assert json.loads(path.read_text()) == choice
    with pytest.raises(TrainingError, match="every candidate"):
        choose_lr([1e-2], "lr", 5, tmp_path / "all_diverge.json", train)


def test_a_model_trains_at_the_candidate_chosen_on_the_validation_tasks(tiny_data_root: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    cfg = load_config("smoke", [f"data.root={tiny_data_root}", "train.steps=2", "train.lr_pilot=0.5",
                                "train.lr_candidates=[1.0e-5, 3.0e-3]"])
    ctx = start(cfg, load_splits(cfg.data), tmp_path / "run", {}, Accelerator())
    examples, val = training_examples(ctx, cfg.prompt)
    seen = []  # (where, lr, steps, tasks its examples and validation examples come from)
    real_init = Trainer.__init__

    def init(self, model, **kw):
        real_init(self, model, **kw)
        seen.append((kw["out_dir"].relative_to(tmp_path / "run"), kw["cfg"].lr, kw["cfg"].steps,
                     {e.task for e in kw["examples"]}, {e.task for e in kw["val_examples"]}))

    monkeypatch.setattr(Trainer, "__init__", init)
    monkeypatch.setattr(importlib.import_module("promoe.stages.train_models"), "release_memory", lambda: None)  # a full gc per training: slow, not tested here
    train_model(ctx, "dense", "dense", examples, val, LowerCache())
    choice = json.loads((tmp_path / "run/train/dense/lr_choice.json").read_text())
    losses = choice["val_loss"]
    assert set(losses) == {"1e-05", "0.003"} and choice["chosen"] == min((v, float(k)) for k, v in losses.items())[1]
    assert [(str(w), lr, n) for w, lr, n, _, _ in seen] == [("train/dense/lr/1e-05", 1e-5, 1), ("train/dense/lr/0.003", 3e-3, 1),
                                                           ("train/dense", choice["chosen"], 2)]
    test = {t.name for t in ctx.splits.test}
    assert all(not (tasks | val_tasks) & test for _, _, _, tasks, val_tasks in seen)  # never a test task
    assert all(val_tasks == {t.name for t in ctx.splits.val} for *_, val_tasks in seen)
    compute = json.loads((tmp_path / "run/train/dense/compute.json").read_text())
    assert compute["lr"] == choice["chosen"] and compute["router_lr"] is None and compute["examples"] == 2 * 4
    assert compute["lr_choice"]["examples"] == 2 * 1 * 4  # two pilots of 1 step of 4 examples
    seen.clear()
    train_model(ctx, "dense", "dense", examples, val, LowerCache())  # resumed: no pilot again
    assert [str(w) for w, *_ in seen] == ["train/dense"]
    # lr_pilot=1: each candidate is the full training, and the winner's is kept, not trained again
    whole = replace(ctx, cfg=replace(cfg, train=replace(cfg.train, lr_pilot=1.0)))
    steps = []
    monkeypatch.setattr(Trainer, "step", lambda self, step, real=Trainer.step: steps.append(self.out_dir) or real(self, step))
    seen.clear()
    train_model(whole, "dense", "whole", examples, val, LowerCache())
    chosen = json.loads((tmp_path / "run/train/whole/lr_choice.json").read_text())["chosen"]
    assert [str(w) for w, *_ in seen] == ["train/whole/lr/1e-05", "train/whole/lr/0.003", "train/whole"]
    assert tmp_path / "run/train/whole" not in steps and len(steps) == 2 * 2  # two candidates of 2 steps
    assert (tmp_path / f"run/train/whole/lr/{chosen:g}/metrics.jsonl").read_text() == \
        (tmp_path / "run/train/whole/metrics.jsonl").read_text()
