"""promoe.stages.specialise: experts trained on their clusters are best on their own cluster, and the
models that learn routers over them start from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from promoe.config import load_config
from promoe.data.clusters import Clusters
from promoe.data.examples import TrainExample, build_examples, sampling_plan
from promoe.data.splits import load_splits
from promoe.model.moe_model import MoEModel
from promoe.stages import start
from promoe.stages.lower_cache import LowerCache
from promoe.stages.specialise import (
    OutputDistance,
    balanced,
    expert_matrix,
    make_clusters,
    specialise,
    specialist,
    weight_distance,
)
from promoe.training.trainer import batch_of, load_trainable, val_key

pytestmark = pytest.mark.usefixtures("tiny_tensors")

WORDS = ["cat", "dog", "sun", "map", "cup", "hat", "pen", "box"]
RULES = {  # cluster 0 copies the first word, cluster 1 always answers "zebra"
    "first": ("Copy the first word of the list{}.", lambda w: w[0], "Rule First"),
    "zebra": ("Always answer with the word zebra{}.", lambda w: "zebra", "Rule Zebra"),
}


def _task(rule: str, k: int, n: int) -> dict:
    text, fn, category = RULES[rule]
    lists = [[WORDS[(i + j * 3 + k) % len(WORDS)] for j in range(3)] for i in range(n)]
    name = f"{rule}_{k}"
    return {"Definition": [text.format(" " + "please" * (k % 2))], "Categories": [category],
            "Positive Examples": [{"input": " ".join(lists[0]), "output": fn(lists[0]), "explanation": ""}],
            "Instances": [{"id": f"{name}-{i}", "input": " ".join(w), "output": [fn(w)]} for i, w in enumerate(lists)],
            "_meta": {"task": name}}


@pytest.fixture
def suite(tmp_path: Path) -> list[str]:
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(_task(r, k, 8)) + "\n" for r in RULES for k in range(4)))
    test.write_text("".join(json.dumps(_task(r, 9, 2)) + "\n" for r in RULES))
    given = tmp_path / "clusters.json"
    given.write_text(json.dumps({f"{r}_{k}": c for c, r in enumerate(RULES) for k in range(4)}))
    return ["data.source=files", f"data.train_files=[{train}]", f"data.test_files=[{test}]", "data.val_tasks=2",
            "model.n_experts=2", "experts.specialise=true", "experts.clusters=given", f"experts.cluster_file={given}",
            "experts.steps=40", "train.lr=0.003", "train.eval_every=0", "train.examples_per_task=8",
            "train.max_length=64"]


def test_each_expert_is_best_on_its_own_cluster(suite: list[str], tmp_path: Path) -> None:
    cfg = load_config("smoke", suite)
    ctx = start(cfg, load_splits(cfg.data), tmp_path / "run", {}, Accelerator())
    common = dict(max_length=64, max_target_length=8, prompt=cfg.prompt, wrap=ctx.setup.wrap, seq2seq=False)
    examples = build_examples(ctx.splits.train, ctx.setup.tokenizer, per_task=8, **common)
    val = build_examples(ctx.splits.val, ctx.setup.tokenizer, per_task=2, **common)
    assert {e.task.split("_")[0] for e in val} == set(RULES)  # one validation task per rule
    lower = LowerCache()
    specialise(ctx, examples, val, lower)
    matrix = json.loads((tmp_path / "run/experts/matrix.json").read_text())
    assert {val_key(i) for i in range(len(val))} <= set(lower.store)  # the checkpoint choice cached them
    loss = matrix["loss"]
    assert matrix["clusters_with_data"] == 2 and matrix["best_on_own"] == 2, loss
    assert loss[0][0] < loss[1][0] and loss[1][1] < loss[0][1]
    distance = matrix["weight_distance"]  # the upcycled copies were identical; specialised, they differ
    assert distance[0][0] == 0 and distance[0][1] > 1e-3 and distance[1][0] > 1e-3
    assert max(map(max, weight_distance(ctx.setup.model("moe")))) < 1e-6  # upcycled copies: no distance
    apart = matrix["output_distance"]  # and on the same hidden states they compute different things
    assert apart[0][0] == 0 and min(apart[0][1], apart[1][0]) > 1e-3
    upcycled, b = ctx.setup.model("moe"), batch_of(val, [0], ctx.setup.tokenizer.pad_token_id, False)
    with OutputDistance(upcycled) as hooked, torch.no_grad():
        upcycled(input_ids=b.input_ids, attention_mask=b.attention_mask)
    assert not upcycled.moe_layers[0]._forward_pre_hooks  # unhooked after the block
    assert max(map(max, hooked.result())) == 0 and min(float(n.min()) for n in hooked.sq_norm) > 0  # identical
    clusters = json.loads((tmp_path / "run/experts/clusters.json").read_text())
    assert clusters["method"] == "given" and clusters["sizes"] == [3, 3]

    checkpoint = ctx.setup.experts_of("moe", tmp_path / "run")
    assert checkpoint.exists() and ctx.setup.experts_of("dense", tmp_path / "run") is None
    moe = ctx.setup.model("moe", experts=checkpoint)
    trainable = [n for n, p in moe.named_parameters() if p.requires_grad]
    assert trainable and all("router" in n for n in trainable)  # experts frozen: only the router learns
    state = load_file(str(checkpoint))
    w_in = next(n for n in state if n.endswith("experts.w_in"))
    assert torch.equal(moe.get_parameter(w_in), state[w_in])


def test_balanced_sampling_draws_every_cluster_equally_often() -> None:
    # cluster 0 holds 9 tasks, cluster 1 one task: by task, cluster 1 would get 10% of the draws
    assignment = {f"big{i}": 0 for i in range(9)} | {"small": 1}
    clusters = Clusters("given", assignment, np.zeros((2, 3)))
    examples = [TrainExample(t, (1, 2), (-100, 2)) for t in assignment for _ in range(4)]
    for weight, share in ((None, 0.1), (balanced(clusters), 0.5)):
        plan = sampling_plan(examples, steps=200, batch_size=8, temperature=1.0, seed=0, task_weight=weight)
        drawn = [examples[i].task == "small" for step in plan for i in step]
        assert abs(np.mean(drawn) - share) < 0.03


def test_the_matrix_reads_the_validation_states_the_training_cached(suite: list[str], tmp_path: Path,
                                                                    monkeypatch) -> None:
    cfg = load_config("smoke", [*suite, "experts.steps=4"])
    ctx = start(cfg, load_splits(cfg.data), tmp_path / "run", {}, Accelerator())
    common = dict(max_length=64, max_target_length=8, prompt=cfg.prompt, wrap=ctx.setup.wrap, seq2seq=False)
    examples = build_examples(ctx.splits.train, ctx.setup.tokenizer, per_task=8, **common)
    val = build_examples(ctx.splits.val, ctx.setup.tokenizer, per_task=2, **common)
    lower = LowerCache()
    specialise(ctx, examples, val, lower)
    path = tmp_path / "run/experts/matrix.json"
    first = json.loads(path.read_text())
    path.unlink()
    calls = []
    real = MoEModel.lower_hidden
    monkeypatch.setattr(MoEModel, "lower_hidden", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    specialise(ctx, examples, val, lower)  # resumed: the training is done, the matrix is measured again
    assert not calls  # every validation example's lower states came from the cache
    again = json.loads(path.read_text())
    assert again["loss"] == first["loss"] and again["output_distance"] == first["output_distance"]
    monkeypatch.setattr(MoEModel, "lower_hidden", real)
    clusters = make_clusters(ctx)  # the same experts without the cache: the frozen layers run here
    model = specialist(ctx, clusters)
    load_trainable(model, tmp_path / "run/train/experts/best.safetensors")
    fresh = expert_matrix(model.eval(), clusters, val, ctx)
    np.testing.assert_allclose(fresh["loss"], again["loss"], rtol=1e-5)
    np.testing.assert_allclose(fresh["output_distance"], again["output_distance"], rtol=1e-4, atol=1e-7)
