"""promoe.evaluation.predict: ``predict_variants`` passes each batch's prompts through the lower layers once for all
variants and answers as each variant alone; prompts over the length limit are cut, counted and reported."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from promoe.config import PromptConfig, load_config
from promoe.data.schema import Instance, Task
from promoe.data.splits import TaskSplits
from promoe.evaluation.predict import Variant, batches_of, predict_variants
from promoe.experiment import stage_notes
from promoe.model.prompting import chat_prompt
from promoe.model.task_encoder import HashingEncoder
from promoe.resources import record_cut
from promoe.stages.evaluation import Evaluation
from tests.evaluation import test_decode
from tests.helpers import _models, _tasks


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
    together = predict_variants(variants, tok, items, prefix_cache=False, **kw)  # (the shared starts: below)
    for h in hooks:
        h.remove()
    assert len(prompt_passes) == -(-len(items) // 4)  # the lower layers saw each batch's prompts once
    for v in variants:
        alone = predict_variants([Variant(v.name, copy.deepcopy(v.model), v.task_emb, tasks=v.tasks)], tok, items,
                                 **kw)[v.name]
        assert alone == together[v.name], v.name
    assert set(together["promoe-sub"]) == {i.id for i in tasks[1].instances}
    assert set(together["moe"]) == {i.id for _, i in items}


def test_batches_hold_at_most_the_prompts_and_the_padded_tokens_allowed() -> None:
    lengths = {0: 10, 1: 20, 2: 30, 3: 200, 4: 210, 5: 900}
    order = [0, 1, 2, 3, 4, 5]
    assert batches_of(order, lengths, 4) == [[0, 1, 2, 3], [4, 5]]
    assert batches_of(order, lengths, 4, batch_tokens=450) == [[0, 1, 2], [3, 4], [5]]  # a prompt over it: alone
    for batch in batches_of(order, lengths, 4, batch_tokens=450):
        assert len(batch) == 1 or len(batch) * max(lengths[j] for j in batch) <= 450


def test_a_token_cap_gives_the_same_answers_in_smaller_batches(backbone) -> None:
    tok = backbone.tokenizer
    models = _models(backbone)
    items = [(t, i) for t in _tasks() for i in t.instances]
    kw = dict(prompt=PromptConfig(), wrap=lambda s: chat_prompt(tok, s), batch_size=4, max_new_tokens=8)
    passes = []
    hook = models["moe"].backbone.model.layers[0].register_forward_hook(
        lambda mod, args, out: passes.append(args[0].shape) if args[0].shape[1] > 1 else None)
    capped = predict_variants([Variant("moe", models["moe"])], tok, items, batch_tokens=60, **kw)["moe"]
    hook.remove()
    assert len(passes) > -(-len(items) // 4) and all(s[0] == 1 or s[0] * s[1] <= 60 for s in passes)
    assert capped == predict_variants([Variant("moe", models["moe"])], tok, items, **kw)["moe"]


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


def _shared_start_tasks() -> list[Task]:
    """Tasks with long Definitions: four instances (two inputs alike), two, and one (a short prompt, no shared start)."""
    inputs = {"A": ["apple pear fig", "kiwi", "apple pear fig", "a much longer list of words to sort " * 2],
              "B": ["The cat sat", "Dogs bark loudly at night"], "C": ["maybe"]}
    definitions = {"A": "Copy the word list and sort it by length, longest first. " * 2,
                   "B": "Answer with the last word of the sentence, lower cased. " * 2, "C": "Say yes."}
    return [Task(name=f"task{t}", definition=definitions[t], categories=("C",),
                 instances=tuple(Instance(id=f"{t}-{i}", input=x, outputs=("a b", "c")) for i, x in enumerate(xs)))
            for t, xs in inputs.items()]


def test_a_task_s_shared_prompt_start_gives_the_same_answers_likelihoods_and_routing(backbone) -> None:
    tok = backbone.tokenizer
    models = _models(backbone)
    tasks = _shared_start_tasks()
    items = [(t, i) for t in tasks for i in t.instances]
    emb = dict(zip([t.name for t in tasks], HashingEncoder(16).encode([t.definition for t in tasks]), strict=True))
    task_model = test_decode._task_model(backbone)
    kw = dict(prompt=PromptConfig(), wrap=lambda s: chat_prompt(tok, s), max_new_tokens=8)
    for batch_size in (8, 3):
        for group in (list(models.items()), [("promoe-task", task_model)]):
            runs, positions = [], []
            for cache in (False, True):
                variants = [Variant(k, m, emb if k.startswith("promoe") else None, Evaluation.stats_for(m))
                            for k, m in group]
                variants.append(Variant("sub", group[-1][1], emb, Evaluation.stats_for(group[-1][1]),
                                        tasks={"taskA", "taskC"}))
                top = group[0][1].backbone.model.layers[-1]  # the top layer: every variant's own
                seen = []
                hook = top.register_forward_hook(lambda mod, args, out, seen=seen: seen.append(args[0].shape[:2]))
                nll = {v.name: {} for v in variants}
                answers = predict_variants(variants, tok, items, batch_size=batch_size, likelihood=nll,
                                           prefix_cache=cache, **kw)
                hook.remove()
                runs.append((answers, nll, {v.name: v.stats for v in variants}))
                positions.append(sum(b * t for b, t in seen if t > 1))  # prompts' and references' positions
            (plain, plain_nll, plain_stats), (cached, cached_nll, cached_stats) = runs
            assert positions[1] < positions[0], (batch_size, positions)  # the shared starts ran once
            assert cached == plain
            for name, stats in plain_stats.items():
                assert cached_nll[name] == pytest.approx(plain_nll[name], rel=1e-5), name
                # in other batches (the cache puts a task's instances together), the decoding steps a finished row
                # still takes (padding, counted as in generate) differ: routing counts compare in the same batch
                if stats is None or batch_size < len(items):  # (dense: nothing routed)
                    continue
                assert stats.tokens.tolist() == cached_stats[name].tokens.tolist(), name
                assert stats.load.tolist() == cached_stats[name].load.tolist(), name
                assert dict(stats.task_load).keys() == dict(cached_stats[name].task_load).keys()
                for t, load in stats.task_load.items():
                    assert load.tolist() == cached_stats[name].task_load[t].tolist(), (name, t)
                np.testing.assert_allclose(cached_stats[name].prob_sum, stats.prob_sum, rtol=1e-5)
                np.testing.assert_allclose(cached_stats[name].entropy_sum, stats.entropy_sum, rtol=1e-5)
