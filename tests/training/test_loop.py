"""The one optimizer step: meta-training, few-shot fine-tuning and ``promoe model check`` stop on a
non-finite loss with the same error and wording; accumulation over micro-batches is the one-batch step."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from promoe import model_check, setup
from promoe.config import ModelConfig, PromptConfig, TrainConfig, load_config
from promoe.data.examples import build_examples
from promoe.data.schema import Instance, Task
from promoe.model.backbone import load_backbone
from promoe.model.build import build_model
from promoe.model.task_encoder import HashingEncoder
from promoe.training.fewshot import finetune
from promoe.training.loop import MicroBatch, OptimizerStep, TrainingError
from promoe.training.trainer import Trainer, batch_of

pytestmark = pytest.mark.usefixtures("tiny_tensors")

MCFG = ModelConfig(backbone="tiny-llama", n_moe_layers=2, n_experts=4, task_encoder="hashing", d_task=32, d_hyper=16)
TASKS = [Task(name=f"task{t}", definition=f"Task {t}: copy the {w}.",
              instances=tuple(Instance(f"t{t}-{i}", f"{w} {i}", (f"{w}{i}",)) for i in range(4)))
         for t, w in enumerate(["word", "number"])]
# where, step, what, tasks, value, what is kept and what to try: one format for every caller
MESSAGE = re.compile(r"^(?P<where>.+), step 0: non-finite loss on tasks \['task\w+'.*\] \(value nan.*\); "
                     r"the step was not applied; (?P<hint>.+try .+)$")


@pytest.fixture(scope="module")
def tiny():
    bb = load_backbone(MCFG, seed=0)
    examples = build_examples(TASKS, bb.tokenizer, per_task=4, max_length=64, max_target_length=8,
                              prompt=PromptConfig())
    emb = dict(zip([t.name for t in TASKS], HashingEncoder(32).encode([t.definition for t in TASKS]), strict=True))
    return bb, examples, emb


def _model(bb, nan: bool = False, mcfg: ModelConfig = MCFG):
    model = build_model(copy.deepcopy(bb.model), bb.family, mcfg, "promoe", seed=0)
    if nan:
        with torch.no_grad():
            model.moe_layers[0].experts.w_out.fill_(float("nan"))
    return model


def _where(exc: pytest.ExceptionInfo) -> str:
    m = MESSAGE.match(str(exc.value))
    assert m, str(exc.value)
    return m["where"]


def test_non_finite_loss_is_one_error_through_trainer_fewshot_and_model_check(tiny, tmp_path: Path,
                                                                              tiny_data_root: Path, monkeypatch):
    bb, examples, emb = tiny
    cfg = TrainConfig(steps=2, batch_size=4, max_length=64)
    trainer = Trainer(_model(bb, nan=True), cfg=cfg, examples=examples, val_examples=examples[:2], task_emb=emb,
                      pad_id=bb.tokenizer.pad_token_id, out_dir=tmp_path / "train", seed=0)
    with pytest.raises(TrainingError) as meta:
        trainer.fit()
    assert _where(meta) == "meta-training" and "examples [" in str(meta.value)

    batch = batch_of(examples, [0, 1], bb.tokenizer.pad_token_id, False)
    with pytest.raises(TrainingError) as few:
        finetune(_model(bb, nan=True), batch, task_emb=emb["task0"], lower=None, steps=2, lr=1e-3, router_lr=1e-2)
    assert _where(few) == "few-shot fine-tuning on task task0"

    real_build = setup.build_model  # the model check builds its models through promoe.setup

    def broken(*args, **kw):
        model = real_build(*args, **kw)
        with torch.no_grad():
            next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
        return model

    monkeypatch.setattr(setup, "build_model", broken)
    check_cfg = load_config("smoke", [f"data.root={tiny_data_root}"])
    with pytest.raises(TrainingError) as check:
        model_check.check_models(check_cfg, steps=1, batch_size=2, n_test=1)
    assert _where(check) == "model check of dense"


def test_accumulated_micro_batches_give_the_one_batch_step(tiny) -> None:
    """Without aux losses (a load-balancing loss of two halves is not that of the whole batch) the
    token-sum losses of two micro-batches add up to the one-batch gradient."""
    bb, examples, emb = tiny
    mcfg = ModelConfig(**{**MCFG.__dict__, "aux_loss_weight": 0.0, "z_loss_weight": 0.0})
    idx = [0, 1, 4, 5]
    b = batch_of(examples, idx, bb.tokenizer.pad_token_id, False)
    n = int((b.labels[:, 1:] != -100).sum())

    def micro(part):
        mb = batch_of(examples, part, bb.tokenizer.pad_token_id, False)
        return MicroBatch(mb, task_emb=torch.stack([emb[k] for k in mb.task_keys]), num_items=n,
                          global_batch=len(idx), examples=part)

    models = [_model(bb, mcfg=mcfg), _model(bb, mcfg=mcfg)]
    for model, mbs in zip(models, [[micro(idx)], [micro(idx[:2]), micro(idx[2:])]], strict=True):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)  # weights move by -grad
        res = OptimizerStep(model, opt, where="test", hint="try nothing")(0, mbs)
        assert len(res.losses) == len(mbs) and torch.isfinite(torch.tensor(res.grad_norm))
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
