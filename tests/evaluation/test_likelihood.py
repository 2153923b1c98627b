"""promoe.evaluation.likelihood: the reference NLL of evaluation rows is each instance's mean per-token NLL of its best
reference, computed as each row alone would (shared lower layers or not), with each row's own routing."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from promoe.config import PromptConfig
from promoe.data.collate import encode_pair
from promoe.data.prompts import config_prompt
from promoe.data.schema import Instance, Task
from promoe.evaluation.likelihood import reference_nll
from promoe.evaluation.predict import Variant
from promoe.metrics import add_likelihood
from promoe.model.moe_model import TaskRouting
from promoe.model.prompting import chat_prompt
from promoe.model.task_encoder import HashingEncoder
from tests.helpers import _models, _tasks, ref


def _by_hand(model, tok, task: Task, inst: Instance, target: str, wrap, emb) -> float:
    """Mean per-token NLL of ``target`` from the full logits of one unpadded forward pass."""
    enc = encode_pair(tok, wrap(config_prompt(task, inst, PromptConfig())), target, max_length=1024,
                      max_target_length=64)
    ids, labels = torch.tensor([enc.input_ids]), torch.tensor([enc.labels])
    routing = TaskRouting(model, emb).rows([task.name])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), routing=routing).logits
    return float(F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=-100))


def _setup(backbone):
    """Tokenizer, tiny models, three tasks (one instance with two references), items, embeddings, pass kwargs."""
    tok = backbone.tokenizer
    tasks = _tasks()
    tasks[1] = Task(name=tasks[1].name, definition=tasks[1].definition, categories=("C",),
                    instances=(Instance("two-refs", "pick one", ("alpha beta", "a")),) + tasks[1].instances)
    emb = dict(zip([t.name for t in tasks], HashingEncoder(16).encode([t.definition for t in tasks]), strict=True))
    kw = dict(prompt=PromptConfig(), wrap=lambda s: chat_prompt(tok, s), batch_size=3, disable_progress=True)
    return tok, _models(backbone), tasks, [(t, i) for t in tasks for i in t.instances], emb, kw


def test_rows_together_match_each_row_alone_and_the_full_logits(backbone) -> None:
    tok, models, tasks, items, emb, kw = _setup(backbone)
    wrap = kw["wrap"]
    shuffled = {"task0": emb["task1"], "task1": emb["task2"], "task2": emb["task0"]}
    variants = [Variant("dense", models["dense"]), Variant("moe", models["moe"]),
                Variant("promoe", models["promoe"], emb), Variant("promoe-shuffled", models["promoe"], shuffled),
                Variant("promoe-sub", models["promoe"], emb, tasks={"task1"})]
    together = reference_nll(variants, tok, items, **kw)
    for v in variants:
        alone = reference_nll([Variant(v.name, copy.deepcopy(v.model), v.task_emb, tasks=v.tasks)], tok, items,
                              **kw)[v.name]
        assert alone.keys() == together[v.name].keys()
        assert all(math.isclose(alone[k], together[v.name][k], rel_tol=1e-4) for k in alone), v.name
    assert set(together["promoe-sub"]) == {i.id for i in tasks[1].instances}
    assert together["promoe"] != together["promoe-shuffled"]  # the row's own routing is used
    for name, model, e in (("moe", models["moe"], None), ("promoe", models["promoe"], emb)):
        for t, inst in items[:4]:
            best = min(_by_hand(model, tok, t, inst, r, wrap, e) for r in inst.outputs)
            assert math.isclose(together[name][inst.id], best, rel_tol=1e-4), (name, inst.id)


def test_add_likelihood_means_per_task_and_overall() -> None:
    refs = [ref("a", ["x"], task="t1"), ref("b", ["x"], task="t1"), ref("c", ["x"], task="t2")]
    result = {"per_task": {"t1": {}, "t2": {}}}
    out = add_likelihood(result, {"a": 1.0, "b": 3.0, "c": 5.0}, refs)
    assert out["per_task"] == {"t1": {"ref_nll": 2.0}, "t2": {"ref_nll": 5.0}}
    assert out["ref_nll"] == 3.0 and out["ref_nll_task_mean"] == 3.5
    partial = add_likelihood({"per_task": {"t1": {}, "t2": {}}}, {"a": 1.0}, refs)
    assert "ref_nll" not in partial and partial["per_task"]["t1"] == {}  # all instances or nothing


def test_generation_pass_scores_the_same_nll_from_each_prompts_cache(backbone) -> None:
    from promoe.evaluation.decode import supports_shared_prefix
    from promoe.evaluation.predict import predict_variants

    tok, models, tasks, items, emb, kw = _setup(backbone)
    variants = [Variant("moe", models["moe"]), Variant("promoe", models["promoe"], emb),
                Variant("promoe-sub", models["promoe"], emb, ids={"two-refs", tasks[0].instances[0].id})]
    assert all(supports_shared_prefix(v.model) for v in variants)
    fused: dict[str, dict[str, float]] = {v.name: {} for v in variants}
    answers = predict_variants(variants, tok, items, **kw, max_new_tokens=4, likelihood=fused)
    alone = reference_nll(variants, tok, items, **kw)
    for v in variants:
        assert fused[v.name].keys() == alone[v.name].keys(), v.name
        assert all(math.isclose(fused[v.name][k], alone[v.name][k], rel_tol=1e-4) for k in alone[v.name]), v.name
    assert set(fused["promoe-sub"]) == {"two-refs", tasks[0].instances[0].id}
    # scoring before decoding leaves the prompt's cache as it was: the answers are those of a pass without it
    assert answers == predict_variants(variants, tok, items, **kw, max_new_tokens=4)


def test_rows_limited_to_some_instances_get_full_batches_of_them(backbone, monkeypatch) -> None:
    from promoe.evaluation import predict as evaluate
    from promoe.evaluation.decode import prefill

    tok, models, tasks, items, emb, kw = _setup(backbone)
    few = {i.id for _, i in items[::3]}  # a row scoring a third of the instances
    rows = []  # prompts (rows) entering the shared lower layers, per batch
    monkeypatch.setattr(evaluate, "prefill", lambda m, ids, *a, **k: rows.append(ids.shape[0]) or prefill(m, ids, *a, **k))
    out = evaluate.predict_variants([Variant("moe", models["moe"], ids=few)], tok, items, **{**kw, "batch_size": 2},
                                    max_new_tokens=1)
    assert set(out["moe"]) == few and len(few) < len(items)
    assert sum(rows) == len(few) and len(rows) == -(-len(few) // 2)  # full batches of its own prompts only
