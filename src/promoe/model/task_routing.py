"""Non-parametric routing generators: a trained MoE's routing for an unseen task, from similar tasks.

Every generator takes the hypernetwork's place in :class:`~promoe.model.moe_model.MoEModel`:
``forward(task_emb (B, d)) -> (B, n_layers, n_experts)`` log-probabilities over experts per layer. Generators of
unseen tasks read the description (``task_emb``); those that route a task chosen beforehand
(:class:`ClusterRouting` for training tasks, :class:`TableRouting` for the oracle's choices) set
``routes_by_name = True`` and are called ``forward(task_emb, tasks=[name] * B)``: they look a task up by its name,
never by its embedding, since two tasks may share a Definition and rounding blurs similarities.
They are built from ``train_routing`` (N, L, E): the task-level routing the trained token-level MoE
used for each training task (its mean router probability per layer and expert).

* :class:`KNNRouting` — the similarity-weighted routing of the k training tasks whose descriptions
  are nearest to the new one.
* :class:`SkillRouting` — symbolic skill routing in the spirit of Symbolic-MoE (Chen et al., 2025):
  infer the skills the task needs from its description, recruit the experts those skills use.

:func:`task_routed` turns a trained MoE into a task-routed one: every router becomes a
``ProactiveRouter(mode="task")`` with zero bias, so its softmax is exactly the generated distribution
and each task's tokens all go to that distribution's top-k experts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from promoe.data.schema import Task
from promoe.model.moe_model import MoEModel
from promoe.model.router import ProactiveRouter

MIN_PROB = 1e-8
"""Floor on generated probabilities, so the log-probabilities the routers receive are finite."""


def task_skills(task: Task) -> list[str]:
    """A task's skills for :class:`SkillRouting`: its SNI Categories, Reasoning and Domains, prefixed
    (``category:``, ``reasoning:``, ``domain:``) so equal strings of different fields stay distinct."""
    fields = (("category", task.categories), ("reasoning", task.reasoning), ("domain", task.domains))
    return [f"{prefix}:{value}" for prefix, values in fields for value in values]


def _log_dist(p: Tensor) -> Tensor:
    """Finite log of nonnegative scores (..., E), renormalised per row after the floor."""
    p = p.clamp_min(MIN_PROB)
    return (p / p.sum(dim=-1, keepdim=True)).log()


def _check_finite(name: str, x: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")


def _check_train(train_emb: Tensor, train_routing: Tensor, temperature: float) -> Tensor:
    """Validate the training data; the routing normalised to a distribution per task and layer."""
    if train_emb.ndim != 2 or train_routing.ndim != 3:
        raise ValueError(f"expected train_emb (N, d) and train_routing (N, L, E), got {tuple(train_emb.shape)} "
                         f"and {tuple(train_routing.shape)}")
    if train_emb.shape[0] != train_routing.shape[0] or train_emb.shape[0] == 0:
        raise ValueError(f"train_emb has {train_emb.shape[0]} tasks but train_routing has {train_routing.shape[0]}")
    _check_finite("train_emb", train_emb)
    _check_finite("train_routing", train_routing)
    if (train_routing < 0).any():
        raise ValueError("train_routing must be nonnegative (router probabilities)")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return train_routing.float() / train_routing.float().sum(dim=-1, keepdim=True).clamp_min(MIN_PROB)


class _Generator(nn.Module):
    """Shared parts: normalised training embeddings and cosine similarity of queries to them."""

    def __init__(self, train_emb: Tensor, n_layers: int, n_experts: int) -> None:
        super().__init__()
        self.n_layers, self.n_experts = n_layers, n_experts
        self.register_buffer("train_emb", F.normalize(train_emb.float(), dim=-1), persistent=False)

    def _query(self, task_emb: Tensor) -> Tensor:
        """Validated, L2-normalised queries (B, d) on the generator's device."""
        if task_emb.ndim != 2 or task_emb.shape[1] != self.train_emb.shape[1]:
            raise ValueError(f"expected task_emb (B, {self.train_emb.shape[1]}), got {tuple(task_emb.shape)}")
        _check_finite("task_emb", task_emb)
        return F.normalize(task_emb.to(self.train_emb), dim=-1)


class KNNRouting(_Generator):
    """Routing of an unseen task = softmax(cosine / temperature)-weighted mean routing of its k
    nearest training tasks by description embedding."""

    def __init__(self, train_emb: Tensor, train_routing: Tensor, k: int = 8, temperature: float = 0.05) -> None:
        routing = _check_train(train_emb, train_routing, temperature)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__(train_emb, n_layers=routing.shape[1], n_experts=routing.shape[2])
        self.k, self.temperature = min(k, routing.shape[0]), temperature
        self.register_buffer("train_routing", routing, persistent=False)

    def neighbours(self, task_emb: Tensor) -> tuple[Tensor, Tensor]:
        """Indices (B, k) of the nearest training tasks, most similar first, and their weights (B, k)."""
        sim = self._query(task_emb) @ self.train_emb.T  # (B, N)
        top, idx = torch.topk(sim, self.k, dim=-1)
        return idx, F.softmax(top / self.temperature, dim=-1)

    def forward(self, task_emb: Tensor) -> Tensor:
        """Log-probabilities (B, L, E) over experts per layer."""
        idx, w = self.neighbours(task_emb)
        return _log_dist(torch.einsum("bk,bkle->ble", w, self.train_routing[idx]))


class SkillRouting(_Generator):
    """Symbolic skill routing: infer the task's skills, recruit the experts those skills use.

    Each skill has a prototype (the L2-normalised mean of the normalised description embeddings of the
    training tasks with that skill) and an expert profile ``lift`` (S, L, E): the skill's tasks' mean
    routing over all training tasks' mean routing (> 1: the expert is recruited more for that skill).
    A new task's skills are the ``n_skills`` prototypes nearest its description, weighted by
    softmax(cosine / temperature); its expert scores are ``sum_s w_s lift[s] * global_mean``, i.e. a
    mixture of the inferred skills' mean routing, normalised per layer.
    """

    def __init__(self, train_emb: Tensor, train_skills: list[list[str]], train_routing: Tensor, n_skills: int = 3,
                 temperature: float = 0.05, min_tasks: int = 1) -> None:
        routing = _check_train(train_emb, train_routing, temperature)
        if len(train_skills) != routing.shape[0]:
            raise ValueError(f"train_skills has {len(train_skills)} tasks but train_routing has {routing.shape[0]}")
        if n_skills < 1:
            raise ValueError(f"n_skills must be >= 1, got {n_skills}")
        super().__init__(train_emb, n_layers=routing.shape[1], n_experts=routing.shape[2])
        sets = [set(skills) for skills in train_skills]
        names = sorted(set().union(*sets))
        member = torch.tensor([[s in task for task in sets] for s in names],
                              dtype=torch.float32).view(len(names), len(sets))  # (S, N)
        keep = member.sum(dim=1) >= max(min_tasks, 1)
        if not keep.any():
            raise ValueError(f"no skill is shared by at least {max(min_tasks, 1)} training tasks")
        self.skills: list[str] = [s for s, k in zip(names, keep.tolist(), strict=True) if k]
        member = member[keep] / member[keep].sum(dim=1, keepdim=True)  # rows: mean over the skill's tasks
        self.n_skills, self.temperature = min(n_skills, len(self.skills)), temperature
        global_mean = routing.mean(dim=0)  # (L, E)
        skill_mean = torch.einsum("sn,nle->sle", member, routing)  # (S, L, E)
        self.register_buffer("prototypes", F.normalize(member @ self.train_emb, dim=-1), persistent=False)
        self.register_buffer("global_mean", global_mean, persistent=False)
        self.register_buffer("lift", skill_mean / global_mean.clamp_min(MIN_PROB), persistent=False)

    def _skill_weights(self, task_emb: Tensor) -> tuple[Tensor, Tensor]:
        """Indices (B, n_skills) of the inferred skills, most similar first, and their weights."""
        sim = self._query(task_emb) @ self.prototypes.T  # (B, S)
        top, idx = torch.topk(sim, self.n_skills, dim=-1)
        return idx, F.softmax(top / self.temperature, dim=-1)

    def infer_skills(self, task_emb: Tensor) -> list[list[tuple[str, float]]]:
        """The skills inferred for each task, with their weights, most similar first."""
        idx, w = self._skill_weights(task_emb)
        return [[(self.skills[i], float(p)) for i, p in zip(row_i.tolist(), row_w, strict=True)]
                for row_i, row_w in zip(idx, w, strict=True)]

    def forward(self, task_emb: Tensor) -> Tensor:
        """Log-probabilities (B, L, E) over experts per layer."""
        idx, w = self._skill_weights(task_emb)
        score = torch.einsum("bs,bsle->ble", w, self.lift[idx]) * self.global_mean  # (B, L, E)
        return _log_dist(score)


def _require_names(generator: str, task_emb: Tensor, tasks: Sequence[str] | None) -> list[str]:
    if tasks is None or len(tasks) != task_emb.shape[0]:
        raise ValueError(f"{generator} routes by task name: pass one name per row (tasks=), got "
                         f"{None if tasks is None else len(tasks)} for {task_emb.shape[0]} rows")
    return list(tasks)


class ClusterRouting(nn.Module):
    """Every task to the expert of its cluster, in every layer (expert specialisation, Branch-Train-MiX
    style): a task of ``known`` (``{task name: cluster}``: the training tasks, and labelled held-out ones) by its
    name, never by a similarity that rounding could blur (under bf16 autocast a cosine of 1 - 1e-6 is 1.0,
    and two tasks may share a Definition); any other task by the nearest cluster centroid of its description.
    ``expert`` fixed: every task to that one expert (the expert x cluster matrix)."""

    routes_by_name = True

    def __init__(self, known: Mapping[str, int], centroids: Tensor, n_layers: int, n_experts: int,
                 expert: int | None = None) -> None:
        super().__init__()
        if centroids.ndim != 2 or centroids.shape[0] > n_experts:
            raise ValueError(f"{tuple(centroids.shape)} centroids do not fit {n_experts} experts")
        if any(not 0 <= c < centroids.shape[0] for c in known.values()):
            raise ValueError(f"a known task's cluster is outside 0..{centroids.shape[0] - 1}")
        if expert is not None and not 0 <= expert < n_experts:
            raise ValueError(f"expert {expert} does not exist among {n_experts} experts")
        self.n_layers, self.n_experts, self.expert = n_layers, n_experts, expert
        self.known = dict(known)
        self.register_buffer("centroids", F.normalize(centroids.float(), dim=-1), persistent=False)

    def clusters(self, task_emb: Tensor, tasks: Sequence[str] | None) -> Tensor:
        """The cluster (B,) of each task: its own when ``known``, else its description's nearest centroid."""
        names = _require_names("ClusterRouting", task_emb, tasks)
        if task_emb.ndim != 2 or task_emb.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"expected task_emb (B, {self.centroids.shape[1]}), got {tuple(task_emb.shape)}")
        _check_finite("task_emb", task_emb)
        nearest = (F.normalize(task_emb.float().to(self.centroids.device), dim=-1) @ self.centroids.T).argmax(-1)
        own = torch.tensor([self.known.get(t, -1) for t in names], dtype=torch.long, device=nearest.device)
        return torch.where(own >= 0, own, nearest)

    def forward(self, task_emb: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """Log-probabilities (B, L, E): the chosen expert ~1, every other the floor."""
        chosen = self.clusters(task_emb, tasks) if self.expert is None else torch.full(
            (task_emb.shape[0],), self.expert, dtype=torch.long, device=self.centroids.device)
        return _log_dist(F.one_hot(chosen, self.n_experts).float()[:, None, :].expand(-1, self.n_layers, -1))


class TableRouting(nn.Module):
    """A routing chosen for each task by name (``{task: (L, E) probabilities}``), e.g. the oracle's: looked up by
    the task's identity, so two tasks with the same Definition keep their own choices."""

    routes_by_name = True

    def __init__(self, table: Mapping[str, Tensor]) -> None:
        super().__init__()
        if not table:
            raise ValueError("TableRouting needs at least one task")
        shapes = {tuple(v.shape) for v in table.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"every task's routing must be one (n_layers, n_experts) shape, got {sorted(shapes)}")
        self.names = sorted(table)
        self.index = {t: i for i, t in enumerate(self.names)}
        routing = torch.stack([table[t].float() for t in self.names])
        _check_finite("table", routing)
        if (routing < 0).any():
            raise ValueError("table must hold nonnegative probabilities")
        self.n_layers, self.n_experts = routing.shape[1], routing.shape[2]
        self.register_buffer("routing", _log_dist(routing), persistent=False)

    def forward(self, task_emb: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """Log-probabilities (B, L, E) of the listed tasks (``task_emb`` only sets the batch size)."""
        names = _require_names("TableRouting", task_emb, tasks)
        missing = sorted(set(names) - set(self.index))
        if missing:
            raise KeyError(f"TableRouting has no routing for task(s) {missing[:5]}")
        return self.routing[[self.index[t] for t in names]]


def task_routed(model: MoEModel, generator: nn.Module) -> MoEModel:
    """Route ``model`` (in place) by task with ``generator``: every MoE layer gets a zero-bias
    ``ProactiveRouter(mode="task")`` with its old ``top_k`` and ``model.hyper = generator``.

    ``model.kind`` is left as it is: it only switches off the aux loss for ``dense``, and task-level
    routers are balanced per task anyway. The generator must expose ``n_layers`` and ``n_experts``
    matching the model (as :class:`KNNRouting` and :class:`SkillRouting` do).
    """
    layers = model.moe_layers
    shape = (getattr(generator, "n_layers", None), getattr(generator, "n_experts", None))
    if any(shape[1] != m.router.n_experts for m in layers) or shape[0] != len(layers):
        raise ValueError(f"generator makes (n_layers, n_experts) = {shape}, the model has {len(layers)} MoE "
                         f"layers of {sorted({m.router.n_experts for m in layers})} experts")
    device = next(layers[0].experts.parameters()).device
    for m in layers:
        r = m.router
        m.router = ProactiveRouter(mode="task", d_model=r.d_model, n_experts=r.n_experts, top_k=r.top_k).to(device)
    model.hyper = generator.to(device)
    model.clear_routing_cache()
    return model
