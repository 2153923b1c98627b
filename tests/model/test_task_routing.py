"""Non-parametric task routing (k-NN and symbolic skills) and its glue into a trained MoE.

Invariants on hand-made training sets: which neighbours / skills are found, which experts win, and
that a task-routed tiny MoE sends every token of a task to exactly the generated top-k experts.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from promoe.config import ModelConfig
from promoe.data.schema import Task
from promoe.model.backbone import load_backbone
from promoe.model.build import build_model
from promoe.model.moe_model import MoEModel, TaskRouting
from promoe.model.router import ProactiveRouter
from promoe.model.task_routing import (
    ClusterRouting,
    KNNRouting,
    SkillRouting,
    TableRouting,
    task_routed,
    task_skills,
)

L, E, D = 2, 4, 8


pytestmark = pytest.mark.usefixtures("tiny_tensors")


def on_experts(*experts: int) -> Tensor:
    """A task-level routing (L, E) putting equal mass on ``experts`` in every layer."""
    r = torch.zeros(L, E)
    r[:, list(experts)] = 1.0 / len(experts)
    return r


def random_routing(n: int) -> Tensor:
    return torch.distributions.Dirichlet(torch.ones(E)).sample((n, L))  # (n, L, E)


# -- k-NN ------------------------------------------------------------------------------------------

def test_knn_k1_returns_the_nearest_tasks_routing() -> None:
    emb, routing = torch.randn(5, D), random_routing(5)
    knn = KNNRouting(emb, routing, k=1)
    out = knn(emb[[2, 4]] + 0.01 * torch.randn(2, D))
    torch.testing.assert_close(out.exp(), routing[[2, 4]])


def test_knn_weights_and_low_temperature() -> None:
    emb, routing = torch.randn(6, D), random_routing(6)
    idx, w = KNNRouting(emb, routing, k=3, temperature=1.0).neighbours(torch.randn(4, D))
    assert idx.shape == (4, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(4))
    assert (w[:, :-1] >= w[:, 1:]).all()  # most similar first

    sharp = KNNRouting(emb, routing, k=3, temperature=1e-3)
    idx, w = sharp.neighbours(3.0 * emb[[1]])  # cosine: the scale does not matter
    assert idx[0, 0] == 1 and w[0, 0] > 0.999
    torch.testing.assert_close(sharp(emb[[1]]).exp(), routing[[1]], atol=1e-3, rtol=0)


def test_knn_is_the_similarity_weighted_mean_of_all_neighbours() -> None:
    emb, routing = torch.randn(4, D), random_routing(4)
    q = torch.randn(1, D)
    w = F.softmax(F.cosine_similarity(q, emb) / 0.5, dim=0)
    out = KNNRouting(emb, routing, k=100, temperature=0.5)(q)  # k clipped to N = 4
    torch.testing.assert_close(out.exp()[0], torch.einsum("n,nle->le", w, routing))


def test_knn_output_is_a_finite_log_distribution() -> None:
    routing = torch.stack([on_experts(0), on_experts(1, 2)])  # zeros everywhere else
    out = KNNRouting(torch.randn(2, D), routing, k=1)(torch.randn(3, D))
    assert out.shape == (3, L, E) and torch.isfinite(out).all()
    torch.testing.assert_close(out.logsumexp(-1), torch.zeros(3, L))


def test_knn_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="tasks"):
        KNNRouting(torch.randn(3, D), random_routing(4))
    knn = KNNRouting(torch.randn(3, D), random_routing(3))
    with pytest.raises(ValueError, match="non-finite"):
        knn(torch.full((1, D), float("nan")))
    with pytest.raises(ValueError, match="task_emb"):
        knn(torch.randn(1, D + 1))


# -- skills ----------------------------------------------------------------------------------------

def skill_data() -> tuple[Tensor, list[list[str]], Tensor]:
    """Six tasks: three with skill A near axis 0 on experts {0, 1}, three with B near axis 1 on {2, 3}."""
    emb = 0.1 * torch.randn(6, D)
    emb[:3, 0] += 1.0
    emb[3:, 1] += 1.0
    skills = [["category:A", "domain:shared"]] * 3 + [["category:B", "domain:shared"]] * 3
    skills[0] = [*skills[0], "reasoning:rare"]
    routing = torch.stack([on_experts(0, 1)] * 3 + [on_experts(2, 3)] * 3)
    return emb, skills, routing


def test_skill_prototype_recruits_the_skills_experts() -> None:
    emb, skills, routing = skill_data()
    sr = SkillRouting(emb, skills, routing, n_skills=1)
    for skill, experts in (("category:A", {0, 1}), ("category:B", {2, 3})):
        s = sr.skills.index(skill)
        assert (sr.lift[s, :, sorted(experts)] > 1).all()  # recruited more than on average
        out = sr(sr.prototypes[[s]])
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.logsumexp(-1), torch.zeros(1, L))
        for layer in range(L):
            assert set(out[0, layer].topk(2).indices.tolist()) == experts


def test_infer_skills_names_the_right_skill() -> None:
    emb, skills, routing = skill_data()
    sr = SkillRouting(emb, skills, routing, n_skills=2)
    query = torch.zeros(2, D)
    query[0, 0] = query[1, 1] = 1.0
    inferred = sr.infer_skills(query)
    assert [row[0][0] for row in inferred] == ["category:A", "category:B"]
    assert all(len(row) == 2 and abs(sum(w for _, w in row) - 1) < 1e-6 for row in inferred)


def test_rare_skills_are_dropped_and_none_left_is_an_error() -> None:
    emb, skills, routing = skill_data()
    assert "reasoning:rare" in SkillRouting(emb, skills, routing).skills
    assert SkillRouting(emb, skills, routing, min_tasks=2).skills == ["category:A", "category:B", "domain:shared"]
    with pytest.raises(ValueError, match="no skill"):
        SkillRouting(emb, skills, routing, min_tasks=7)
    with pytest.raises(ValueError, match="no skill"):
        SkillRouting(emb, [[] for _ in range(6)], routing)


def test_task_skills_are_prefixed_by_field() -> None:
    task = Task(name="t", definition="d", instances=(), categories=("QA",), reasoning=("Logic",), domains=("QA",))
    assert task_skills(task) == ["category:QA", "reasoning:Logic", "domain:QA"]


# -- routing chosen per task: by name ------------------------------------------------------------

def test_cluster_routing_routes_a_known_task_by_name_whatever_its_embedding_and_dtype() -> None:
    centroids = torch.eye(2, D)
    gen = ClusterRouting({"a": 0, "b": 1}, centroids, n_layers=L, n_experts=E)
    emb = torch.stack([centroids[1], centroids[1], 0.9 * centroids[0] + 0.1 * centroids[1]])  # "a" looks like 1
    for autocast in (False, True):  # bf16: a cosine of 1 - 1e-6 rounds to 1.0; names do not round
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            chosen = gen(emb, tasks=["a", "b", "new"]).argmax(-1)  # (3, L)
        assert chosen.tolist() == [[0] * L, [1] * L, [0] * L]  # twins keep their own; "new" by its centroid
    with pytest.raises(ValueError, match="by task name"):
        gen(emb)
    fixed = ClusterRouting({"a": 0}, centroids, n_layers=L, n_experts=E, expert=3)
    assert (fixed(emb, tasks=["a", "b", "c"]).argmax(-1) == 3).all()


def test_a_cluster_routed_model_trains_each_known_task_on_its_own_expert_under_bf16() -> None:
    centroids = torch.eye(2, D)
    model = task_routed(tiny_moe(), ClusterRouting({"a": 0, "b": 1}, centroids, n_layers=L, n_experts=E)).train()
    model.set_top_k(1)
    ids, emb = torch.randint(5, 200, (2, 6)), centroids[[1, 1]]  # identical Definitions, different clusters
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, task_emb=emb, task_keys=["a", "b"], labels=ids)
    assert {int(i) for info in out.routing for i in info.router.indices[0].reshape(-1)} == {0}
    assert {int(i) for info in out.routing for i in info.router.indices[1].reshape(-1)} == {1}


def test_table_routing_gives_twins_their_own_choice() -> None:
    table = TableRouting({"x": on_experts(2), "y": on_experts(0), "z": torch.full((L, E), 1 / E)})
    same = torch.ones(2, D)  # the two tasks share a Definition
    torch.testing.assert_close(table(same, tasks=["y", "x"]).exp(), torch.stack([on_experts(0), on_experts(2)]),
                               atol=1e-6, rtol=0)
    model = task_routed(tiny_moe(), table)
    rows = TaskRouting(model, {"x": same[0], "y": same[1]}).rows(["x", "y"])  # as an evaluation row asks
    assert rows.argmax(-1).tolist() == [[2] * L, [0] * L]
    with pytest.raises(KeyError, match="no routing"):
        table(same[:1], tasks=["unknown"])


# -- a task-routed tiny MoE ------------------------------------------------------------------------

def tiny_moe() -> MoEModel:
    cfg = ModelConfig(backbone="tiny-llama", n_moe_layers=L, n_experts=E, top_k=2, task_encoder="hashing", d_task=D)
    bb = load_backbone(cfg, seed=0)
    return build_model(bb.model, bb.family, cfg, "moe", seed=0).eval()


def knn_on(*experts: tuple[int, ...]) -> KNNRouting:
    """k=1 routing: training task i (embedding = axis i) routes to ``experts[i]``."""
    return KNNRouting(torch.eye(len(experts), D), torch.stack([on_experts(*e) for e in experts]), k=1)


def routed_sets(routing: list, row: int) -> set[frozenset[int]]:
    return {frozenset(ix.tolist()) for info in routing for ix in info.router.indices[row].reshape(-1, 2)}


def test_task_routed_sends_every_token_to_the_neighbours_experts() -> None:
    model = task_routed(tiny_moe(), knn_on((1, 3), (0, 2)))
    assert model.kind == "moe" and isinstance(model.hyper, KNNRouting)
    for m in model.moe_layers:
        assert isinstance(m.router, ProactiveRouter) and m.router.mode == "task" and m.router.top_k == 2
        assert not m.router.bias.any()
    ids = torch.randint(5, 200, (2, 7))
    emb = torch.eye(2, D)
    with torch.no_grad():
        out = model(ids, task_emb=emb, task_keys=["a", "b"])
        again = model(ids, task_emb=emb, task_keys=["a", "b"])
    assert len(out.routing) == L
    assert routed_sets(out.routing, 0) == {frozenset({1, 3})}  # different neighbours, different experts
    assert routed_sets(out.routing, 1) == {frozenset({0, 2})}
    torch.testing.assert_close(out.logits, again.logits, rtol=0, atol=0)

    gen, routing = model.generate(ids, attention_mask=torch.ones_like(ids), task_emb=emb, task_keys=["a", "b"],
                                  max_new_tokens=3, do_sample=False, return_routing=True)
    assert gen.shape == (2, 10) and len(routing) == L * 3  # the prompt pass and two more tokens
    assert routed_sets(routing, 0) == {frozenset({1, 3})} and routed_sets(routing, 1) == {frozenset({0, 2})}
    gen2 = model.generate(ids, attention_mask=torch.ones_like(ids), task_emb=emb, task_keys=["a", "b"],
                          max_new_tokens=3, do_sample=False)
    assert torch.equal(gen, gen2)


def test_task_routed_again_clears_the_cached_routing() -> None:
    model = task_routed(tiny_moe(), knn_on((1, 3)))
    ids, emb = torch.randint(5, 200, (1, 5)), torch.eye(1, D)
    with torch.no_grad():
        model(ids, task_emb=emb, task_keys=["a"])
        task_routed(model, knn_on((0, 2)))
        out = model(ids, task_emb=emb, task_keys=["a"])
    assert routed_sets(out.routing, 0) == {frozenset({0, 2})}


def test_task_routed_rejects_a_generator_of_another_shape() -> None:
    wrong = KNNRouting(torch.randn(2, D), torch.rand(2, L, E + 1))
    with pytest.raises(ValueError, match="n_experts"):
        task_routed(tiny_moe(), wrong)
