"""Shared-prefix greedy decoding of several variants equals each variant's own ``generate``."""

from __future__ import annotations

import copy
import json
from functools import partial

import numpy as np
import pytest
import torch
from transformers import StoppingCriteriaList

from promoe.config import ModelConfig, PromptConfig, load_config
from promoe.data.schema import Instance, Task
from promoe.data.splits import TaskSplits
from promoe.decode import eos_ids, greedy, prefill, supports_shared_prefix
from promoe.evalstate import PassState
from promoe.evaluate import FirstLineDone, Variant, predict_variants
from promoe.experiment import stage_notes
from promoe.model.backbone import load_backbone
from promoe.model.build import build_model, replace_routers, variant_copy
from promoe.model.prompting import chat_prompt
from promoe.model.stats import RoutingStats
from promoe.model.task_encoder import HashingEncoder
from promoe.resources import record_cut

CFG = ModelConfig(backbone="tiny-llama", n_moe_layers=1, n_experts=4, top_k=2, task_encoder="hashing", d_task=16,
                  d_hyper=16)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone(CFG, seed=0)


def _models(bb):
    models = {}
    for kind in ("dense", "moe", "promoe"):
        m = build_model(copy.deepcopy(bb.model), bb.family, CFG, kind, seed=1)
        with torch.no_grad():  # trained-looking weights so that the models disagree
            for p in m.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.3)
        models[kind] = m.eval()
    return models


def _tasks() -> list[Task]:
    tasks = []
    for t in range(3):
        inst = [Instance(id=f"t{t}-{i}", input="x" * (3 + 7 * i + t) + f" case {i}", outputs=("a",))
                for i in range(3)]
        tasks.append(Task(name=f"task{t}", definition=f"Definition number {t}: do something {'long ' * t}",
                          categories=("C",), instances=tuple(inst)))
    return tasks


def test_prefill_greedy_equals_generate(backbone) -> None:
    tok = backbone.tokenizer
    models = _models(backbone)
    assert all(supports_shared_prefix(m) for m in models.values())
    texts = [chat_prompt(tok, "short"), chat_prompt(tok, "a much longer prompt " * 3), chat_prompt(tok, "mid size")]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    emb = HashingEncoder(16).encode(["d0", "d1", "d2"])
    keys = ["k0", "k1", "k2"]
    prefix = prefill(models["dense"], enc["input_ids"], enc["attention_mask"])
    for kind, m in models.items():
        e = emb if kind == "promoe" else None
        stop = FirstLineDone(tok, enc["input_ids"].shape[1])
        ref = m.generate(enc["input_ids"], attention_mask=enc["attention_mask"], task_emb=e, task_keys=keys,
                         max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                         stopping_criteria=StoppingCriteriaList([stop]))[:, enc["input_ids"].shape[1]:]
        new, _ = m.with_routing(partial(greedy, m, prefix, max_new_tokens=12, stopper=stop, pad_id=tok.pad_token_id,
                                        eos=eos_ids(m)), e, keys, record=False)
        assert new.shape[1] > 0
        torch.testing.assert_close(new, ref[:, :new.shape[1]], rtol=0, atol=0)
        assert (ref[:, new.shape[1]:] == tok.pad_token_id).all()  # generate only padded after every row stopped


def test_predict_variants_shares_prefill_and_matches_single(backbone) -> None:
    tok = backbone.tokenizer
    models = _models(backbone)
    tasks = _tasks()
    items = [(t, i) for t in tasks for i in t.instances]
    emb = dict(zip([t.name for t in tasks], HashingEncoder(16).encode([t.definition for t in tasks]), strict=True))
    shuffled = {"task0": emb["task1"], "task1": emb["task2"], "task2": emb["task0"]}
    kw = dict(prompt=PromptConfig(), wrap=lambda s: chat_prompt(tok, s), batch_size=4, max_new_tokens=8)
    variants = [Variant("dense", models["dense"]), Variant("moe", models["moe"]),
                Variant("promoe", models["promoe"], emb), Variant("promoe-shuffled", models["promoe"], shuffled),
                Variant("promoe-sub", models["promoe"], emb, tasks={"task1"})]
    prompt_passes = []
    hooks = [m.backbone.model.layers[0].register_forward_hook(
        lambda mod, args, out: prompt_passes.append(1) if args[0].shape[1] > 1 else None) for m in models.values()]
    together = predict_variants(variants, tok, items, **kw)
    for h in hooks:
        h.remove()
    assert len(prompt_passes) == -(-len(items) // 4)  # the lower layers saw each batch's prompts once
    for v in variants:
        alone = predict_variants([Variant(v.name, copy.deepcopy(v.model), v.task_emb, tasks=v.tasks)], tok, items,
                                 **kw)[v.name]
        assert alone == together[v.name], v.name
    assert set(together["promoe-sub"]) == {i.id for i in tasks[1].instances}
    assert set(together["moe"]) == {i.id for _, i in items}


def test_prompts_over_the_length_limit_are_cut_counted_and_reported(backbone, caplog) -> None:
    tok = backbone.tokenizer
    models = _models(backbone)
    items = [(t, i) for t in _tasks() for i in t.instances][:3]
    kw = dict(prompt=PromptConfig(), wrap=lambda s: chat_prompt(tok, s), batch_size=4, max_new_tokens=2)
    counts: dict[str, int] = {}
    with caplog.at_level("WARNING"):
        short = predict_variants([Variant("dense", models["dense"])], tok, items, max_length=8, counts=counts, **kw)
    assert "3 of 3 prompts are longer than 8 tokens and lose their start (eval.max_length)" in caplog.text
    assert counts == {"prompts": 3, "cut": 3}
    times: dict = {}
    record_cut(times, "eval", counts["cut"], counts["prompts"], 8)
    record_cut(times, "train", 0, 5, 256)
    note = stage_notes(load_config("smoke"), TaskSplits([], [], _tasks(), [], {}), times)
    assert "Prompts longer than their limit lost their start" in note and "eval 3 of 3 (over 8 tokens)" in note
    assert "train" not in note.split("Prompts longer")[1]  # stages with none cut are not listed
    assert set(short["dense"]) == {i.id for _, i in items}  # still answered, from the prompts' ends


class Killed(Exception):
    """Stands for a SIGKILL right after a progress save."""


def _die_after(monkeypatch, units: int) -> None:
    save = PassState.save

    def save_then_die(self, rows, out, done):
        save(self, rows, out, done)
        if done == units:
            raise Killed

    monkeypatch.setattr(PassState, "save", save_then_die)


def test_killed_pass_resumes_at_its_first_unsaved_batch(backbone, tmp_path, monkeypatch, caplog) -> None:
    """A pass killed after 2 of its 5 batches, run again, runs the 3 others only and ends with the answers and
    routing counts of an uninterrupted pass, exactly."""
    tok = backbone.tokenizer
    models = _models(backbone)
    tasks = _tasks()
    items = [(t, i) for t in tasks for i in t.instances]
    emb = dict(zip([t.name for t in tasks], HashingEncoder(16).encode([t.definition for t in tasks]), strict=True))
    kw = dict(prompt=PromptConfig(), wrap=lambda s: chat_prompt(tok, s), batch_size=2, max_new_tokens=6)

    def rows() -> list[Variant]:
        for m in models.values():
            m.clear_routing_cache()  # as in a new process
        for layer in random.moe_layers:
            layer.router.reset()
        return [Variant("dense", models["dense"]), Variant("moe", models["moe"], stats=RoutingStats(1, 4)),
                Variant("promoe", models["promoe"], emb, stats=RoutingStats(1, 4)),
                Variant("promoe-sub", models["promoe"], emb, stats=RoutingStats(1, 4), tasks={"task1"}),
                Variant("random", random, stats=RoutingStats(1, 4))]  # draws a sequence: saved and restored

    random = variant_copy(models["moe"])
    replace_routers(random, "random", seed=0)

    reference = rows()
    expected = predict_variants(reference, tok, items, **kw)
    path = tmp_path / "progress" / "eval.json"
    _die_after(monkeypatch, 2)
    with pytest.raises(Killed):
        predict_variants(rows(), tok, items, progress=path, **kw)
    monkeypatch.undo()
    assert {r["done"] for r in json.loads(path.read_text())["rows"].values()} == {2}
    passes = []
    hook = models["dense"].backbone.model.layers[0].register_forward_hook(
        lambda mod, args, out: passes.append(1) if args[0].shape[1] > 1 else None)
    resumed = rows()
    with caplog.at_level("INFO"):
        got = predict_variants(resumed, tok, items, progress=path, **kw)
    hook.remove()
    assert "resumed at 2 batches done" in caplog.text
    assert len(passes) == 3 and got == expected
    for a, b in zip(reference, resumed, strict=True):
        if a.stats is None:
            continue
        sa, sb = a.stats.state(), b.stats.state()
        for key in ("load", "prob_sum", "entropy_sum", "tokens"):
            assert np.array_equal(sa[key], sb[key]), (a.name, key)
        assert sa["task_load"].keys() == sb["task_load"].keys()
        assert all(np.array_equal(sa["task_load"][k], sb["task_load"][k]) for k in sa["task_load"]), a.name
    # a row the file holds in full is not run again; another pass's file is not used
    passes.clear()
    subset = predict_variants(rows()[1:2], tok, items, progress=path, **kw)
    assert subset["moe"] == expected["moe"] and not passes
    with caplog.at_level("WARNING"):
        other = predict_variants(rows(), tok, items, progress=path, **{**kw, "batch_size": 3})
    assert "belongs to another pass" in caplog.text
    assert other == predict_variants(rows(), tok, items, **{**kw, "batch_size": 3})
