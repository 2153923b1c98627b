"""promoe.training.fewshot: fine-tuning on a task's demonstrations learns them and every task starts from the
same weights; a killed few-shot pass resumes at its first unfinished task (on the smoke preset's tiny
backbone, the ``tiny`` fixture)."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from promoe.config import load_config
from promoe.evaluation.predict import Variant
from promoe.evaluation.state import PassState
from promoe.model.build import build_model
from promoe.model.prompting import chat_prompt
from promoe.model.stats import RoutingStats
from promoe.training import fewshot as fewshot_module
from promoe.training.fewshot import demonstration_task, finetune, run_fewshot
from promoe.training.trainer import TrainingError, batch_of
from tests.helpers import TASKS


def test_fewshot_finetunes_per_task_and_restores_weights(tiny) -> None:
    cfg_model, bb = tiny
    cfg = load_config("smoke", ["compare.fewshot_steps=3", "compare.fewshot_lr=0.01"])
    tok = bb.tokenizer
    wrap = lambda text: chat_prompt(tok, text)  # noqa: E731
    model = build_model(copy.deepcopy(bb.model), bb.family, cfg_model, "moe", seed=0)
    demo = demonstration_task(TASKS[0], k=1)
    assert [i.input for i in demo.instances] == ["example 0 0"] and demo.instances[0].origin == "positive_example"
    assert len(demonstration_task(TASKS[0], None).instances) == 2
    from promoe.data.examples import build_examples

    ex = build_examples([demo], tok, per_task=1, max_length=256, max_target_length=8, prompt=cfg.prompt, wrap=wrap)
    batch = batch_of(ex, [0], tok.pad_token_id, False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = finetune(copy.deepcopy(model), batch, task_emb=None, lower=None, steps=3, lr=0.01, router_lr=0.1)
    assert losses[-1] < losses[0]  # it learns the demonstration
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.moe_layers[0].experts.w_out.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"few-shot fine-tuning on task task0, step 0: non-finite loss"):
        finetune(broken, batch, task_emb=None, lower=None, steps=3, lr=0.01, router_lr=0.1)
    items = [(t, t.instances[0]) for t in TASKS[:2]]
    preds, nll = run_fewshot({"moe-fewshot": model}, {"moe-fewshot": Variant("moe-fewshot", model)}, items, tok,
                             cfg=cfg, wrap=wrap, task_emb={})
    assert set(preds["moe-fewshot"]) == set(nll["moe-fewshot"]) == {"t0-0", "t1-0"}
    assert all(x > 0 for x in nll["moe-fewshot"].values())
    for n, p in model.named_parameters():  # every task started from (and the model ends at) the same weights
        assert torch.equal(p, before[n]), n


def test_killed_fewshot_pass_resumes_at_its_first_unfinished_task(tiny, tmp_path, monkeypatch) -> None:
    """Few-shot fine-tuning killed after 2 of 4 tasks, run again, fine-tunes on the 2 others only and ends
    with the answers and routing counts of an uninterrupted pass (a task's answers do not depend on the
    tasks before it: each starts from the same weights and random state)."""
    cfg_model, bb = tiny
    cfg = load_config("smoke", ["compare.fewshot_steps=2", "compare.fewshot_lr=0.01", "model.router_noise=0.5"])
    tok = bb.tokenizer
    wrap = lambda text: chat_prompt(tok, text)  # noqa: E731
    models = {f"{k}-fewshot": build_model(copy.deepcopy(bb.model), bb.family, replace(cfg_model, router_noise=0.5),
                                          k, seed=0) for k in ("moe", "promoe")}
    emb = {t.name: torch.randn(cfg_model.d_task) for t in TASKS}
    items = [(t, t.instances[0]) for t in TASKS]

    def rows() -> dict[str, Variant]:
        return {n: Variant(n, m, emb if m.hyper is not None else None, RoutingStats(2, 4)) for n, m in models.items()}

    def fewshot(variants, progress=None):
        return run_fewshot(models, variants, items, tok, cfg=cfg, wrap=wrap, task_emb=emb, progress=progress)

    torch.manual_seed(123)
    reference = rows()
    expected = fewshot(reference)
    path = tmp_path / "fewshot.json"
    save = PassState.save

    def save_then_die(self, rows, out, done, likelihood=None):
        save(self, rows, out, done, likelihood)
        if done == 2:
            raise RuntimeError("killed")

    monkeypatch.setattr(PassState, "save", save_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        fewshot(rows(), path)
    monkeypatch.undo()
    tuned = []
    real = fewshot_module.finetune
    monkeypatch.setattr(fewshot_module, "finetune", lambda *a, **kw: tuned.append(1) or real(*a, **kw))
    torch.manual_seed(456)  # another process, another global random state
    resumed = rows()
    assert fewshot(resumed, path) == expected  # answers and reference NLLs
    assert len(tuned) == 2 * len(models)  # tasks 3 and 4 only
    for name, v in resumed.items():
        assert np.array_equal(v.stats.load, reference[name].stats.load), name
        assert np.array_equal(v.stats.prob_sum, reference[name].stats.prob_sum), name
