"""Comparison rows: description ablations, few-shot fine-tuning, weight sharing between variants."""

from __future__ import annotations

import copy
import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from promoe import fewshot as fewshot_module
from promoe.config import load_config
from promoe.data.schema import Example, Instance, Task
from promoe.errors import ConfigError, DataError
from promoe.evalstate import PassState
from promoe.evaluate import Variant
from promoe.fewshot import demonstration_task, finetune, run_fewshot
from promoe.model.backbone import load_backbone
from promoe.model.build import build_model, replace_routers, share_frozen_weights, variant_copy
from promoe.model.prompting import chat_prompt
from promoe.model.stats import RoutingStats
from promoe.rows.ablations import ablated_descriptions, read_paraphrases
from promoe.train import TrainingError, batch_of, param_groups


def _task(i: int, category: str, n_pos: int = 2) -> Task:
    return Task(name=f"task{i}", definition=f"Definition {i}: classify the sentence as good or bad {i}",
                categories=(category,), instances=(Instance(id=f"t{i}-0", input=f"sentence {i}", outputs=("good",)),),
                positive_examples=tuple(Example(input=f"example {i} {j}", output=f"label{j}") for j in range(n_pos)))


TASKS = [_task(i, c) for i, c in enumerate(["Sentiment_Analysis", "Question_Answering", "Title_Generation",
                                            "Sentiment_Analysis"])]


def test_ablations_replace_every_description_with_the_right_text() -> None:
    shuffled = ablated_descriptions("shuffled", TASKS, seed=3)
    own = {t.name: t.definition for t in TASKS}
    assert set(shuffled) == set(own) and sorted(shuffled.values()) == sorted(own.values())
    assert all(shuffled[n] != own[n] for n in own)  # every task gets another task's Definition
    assert shuffled == ablated_descriptions("shuffled", TASKS, seed=3)  # seeded
    assert set(ablated_descriptions("empty", TASKS).values()) == {""}
    rand = ablated_descriptions("random_text", TASKS, seed=0)
    vocab = {w for t in TASKS for w in t.definition.split()}
    for t in TASKS:
        assert len(rand[t.name].split()) == len(t.definition.split()) and set(rand[t.name].split()) <= vocab
        assert rand[t.name] != t.definition
    assert ablated_descriptions("category", TASKS)["task1"] == "Question Answering"
    para = ablated_descriptions("paraphrase", TASKS, paraphrases={"task2": ["p0", "p1"], "other": ["x"]},
                                paraphrase_index=1)
    assert para == {"task2": "p1"}  # only covered tasks
    with pytest.raises(ValueError, match="unknown ablation"):
        ablated_descriptions("nope", TASKS)


def test_read_paraphrases_and_bad_rows(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl.gz"
    with gzip.open(good, "wt") as f:
        f.write(json.dumps({"task": "task1", "descriptions": ["a", " ", "b"]}) + "\n")
    assert read_paraphrases(good) == {"task1": ["a", "b"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task": "task1", "descriptions": "not a list"}) + "\n")
    with pytest.raises(DataError, match="descriptions"):
        read_paraphrases(bad)


def test_icl_or_fewshot_rows_refuse_to_score_positive_examples(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="test_positive_examples=false"):
        load_config("smoke", [f"output_dir={tmp_path}", "data.test_positive_examples=true"])
    assert not (tmp_path / "smoke").exists()  # refused before anything was written


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("smoke").model
    return cfg, load_backbone(cfg, seed=0)


def test_variants_share_weights(tiny) -> None:
    cfg, bb = tiny
    model = build_model(copy.deepcopy(bb.model), bb.family, cfg, "moe", seed=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    n = share_frozen_weights(model, bb.model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable  # sharing freezes nothing new
    assert not model.backbone.model.embed_tokens.weight.requires_grad  # and thaws nothing
    optimized = {id(p) for g in param_groups(model, 1e-4, 1e-3) for p in g["params"]}
    assert not optimized & {id(p) for p in bb.model.parameters()}  # training never touches a shared weight
    assert n > 0 and model.backbone.model.embed_tokens.weight is bb.model.model.embed_tokens.weight
    assert model.backbone.lm_head.weight is bb.model.lm_head.weight  # the tied head too
    lower = model.backbone.model.layers[:model.split]
    src = bb.model.model.layers[:model.split]
    assert len(lower) == 2 and all(p is q for a, b in zip(lower, src, strict=True)
                                   for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert all(p.requires_grad for p in model.backbone.model.layers[model.split].parameters())  # trained: own copy
    copy_ = variant_copy(model)
    replace_routers(copy_, "uniform")
    assert copy_.moe_layers[0].experts.w_in is model.moe_layers[0].experts.w_in  # same expert tensors
    assert type(model.moe_layers[0].router).__name__ == "TokenRouter"  # the original keeps its router


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
    preds = run_fewshot({"moe-fewshot": model}, {"moe-fewshot": Variant("moe-fewshot", model)}, items, tok,
                        cfg=cfg, wrap=wrap, task_emb={})
    assert set(preds["moe-fewshot"]) == {"t0-0", "t1-0"}
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

    def save_then_die(self, rows, out, done):
        save(self, rows, out, done)
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
    assert fewshot(resumed, path) == expected
    assert len(tuned) == 2 * len(models)  # tasks 3 and 4 only
    for name, v in resumed.items():
        assert np.array_equal(v.stats.load, reference[name].stats.load), name
        assert np.array_equal(v.stats.prob_sum, reference[name].stats.prob_sum), name
