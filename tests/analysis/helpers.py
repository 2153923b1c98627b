"""Run folders made up for the analysis tests: scores, routing npz, task embeddings, training curves."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from promoe.io import write_json
from promoe.metrics import Reference, category_key, score
from promoe.model.moe import RoutingInfo
from promoe.model.router import RouterOutput
from promoe.model.stats import RoutingStats

PNG = b"\x89PNG\r\n\x1a\n"

# -- a small run scored from made-up predictions ------------------------------------------------------

TASKS = {f"task{i}_toy": ("Title Generation" if i < 3 else "Textual Entailment") for i in range(6)}


def references() -> list[Reference]:
    return [Reference(id=f"{t}-{j}", references=(f"answer {t} {j}", "yes"), task_id=t, task_category=c)
            for t, c in TASKS.items() for j in range(3)]


def write_scores(run_dir: Path, skill: dict[str, float]) -> dict[str, dict]:
    """Score made-up models: each instance is answered right with probability ``skill`` (fixed rng)."""
    refs, out = references(), {}
    rng = np.random.default_rng(0)
    for model, p in skill.items():
        preds = {r.id: r.references[0] if rng.random() < p else "wrong words here" for r in refs}
        out[model] = score(preds, refs)
        write_json(run_dir / "scores" / f"{model}.json", out[model])
    return out


def write_routing(path: Path, n_layers: int = 2, n_experts: int = 4) -> None:
    stats_ = RoutingStats(n_layers, n_experts)
    g = torch.Generator().manual_seed(0)
    names = list(TASKS)
    for batch in range(3):
        keys = names[2 * batch: 2 * batch + 2]
        routing = []
        for layer in range(n_layers):
            logits = torch.randn(2, 5, n_experts, generator=g)
            probs = logits.softmax(-1)
            weights, indices = probs.topk(2, dim=-1)
            mask = torch.ones(2, 5)
            mask[1, 3:] = 0
            routing.append(RoutingInfo(layer=layer, mask=mask, router=RouterOutput(
                weights=weights / weights.sum(-1, keepdim=True), indices=indices, probs=probs, logits=logits)))
        stats_.update(routing, keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    stats_.save(path)


def write_metrics(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"step": s, "loss": 3.0 / s, "lm_loss": 2.9 / s, "aux_loss": 0.1, "lr": 1e-4} for s in range(1, 21)]
    lines += [{"step": 10, "val_loss": 0.5}, {"step": 20, "val_loss": 0.3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def links(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


# -- every row of the experiment, per-task scores made up directly ---------------------------------

ZERO_SHOT = ("copy_input", "copy_demo", "backbone", "dense", "moe", "promoe")
ROUTERS = ("knn", "skill", "uniform", "random")
ABLATIONS = ("promoe-shuffled", "promoe-empty", "promoe-random_text", "promoe-category", "promoe-paraphrase")
ADAPTED = ("backbone-icl", "dense-icl", "moe-icl", "promoe-icl", "dense-fewshot", "moe-fewshot", "promoe-fewshot")
ALL_ROWS = ZERO_SHOT + ROUTERS + ABLATIONS + ADAPTED
CATS = ("Title Generation", "Textual Entailment", "Keyword Tagging", "Data to Text")
SYN_TASKS = [f"task{i:03d}_syn" for i in range(24)]  # task i is in category CATS[i % len(CATS)]
PARAPHRASED = SYN_TASKS[:10]
N_LAYERS, N_EXPERTS = 2, 6


def category_embeddings(rng: np.random.Generator) -> np.ndarray:
    """Unit vectors clustered by category."""
    centres = rng.normal(size=(len(CATS), 16))
    e = np.stack([centres[i % len(CATS)] + 0.8 * rng.normal(size=16) for i in range(len(SYN_TASKS))])
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def save_routing(path: Path, hist: np.ndarray) -> None:
    """A routing npz as RoutingStats.save writes it, from given task histograms (n_tasks, L, E)."""
    load = hist.sum(0) * 100
    share = load / load.sum(1, keepdims=True)
    probs = np.clip(hist.mean(0), 1e-12, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, load=load, tokens=np.full(N_LAYERS, 500.0), load_cv=share.std(1) / share.mean(1),
             token_entropy=-(probs * np.log(probs)).sum(1), task_names=np.array(SYN_TASKS, dtype=str),
             task_histograms=hist)


def synthetic_run(run: Path, rows: tuple[str, ...] = ALL_ROWS, embeddings: bool = True) -> dict[str, dict]:
    """Per-task scores of every row (promoe-paraphrase on PARAPHRASED only), routing npz for the MoE rows:
    promoe, knn, skill and moe route by the description embedding, random and promoe-shuffled do not."""
    rng = np.random.default_rng(0)
    per_task = {}
    for k, m in enumerate(rows):
        tasks = PARAPHRASED if m == "promoe-paraphrase" else SYN_TASKS
        per_task[m] = {t: {"category": category_key(CATS[SYN_TASKS.index(t) % len(CATS)]), "n": int(rng.integers(2, 6)),
                           "rougeL": float(rng.uniform(0, 60) + k), "exact_match": float(rng.choice([0.0, 50.0, 100.0]))}
                       for t in tasks}
        write_json(run / "scores" / f"{m}.json", {"rougeL": 0.0, "exact_match": 0.0, "per_task": per_task[m]})
    write_json(run / "splits.json", {"train": [], "val": [], "test": SYN_TASKS})
    emb, n = category_embeddings(rng), len(SYN_TASKS)
    if embeddings:
        cats = [CATS[i % len(CATS)] for i in range(n)] + [CATS[0]]
        np.savez(run / "task_embeddings.npz", task_names=np.array(SYN_TASKS + ["task999_train"], dtype=str),
                 embeddings=np.concatenate([emb, emb[:1]]), categories=np.array(cats, dtype=str),
                 split=np.array(["test"] * n + ["train"], dtype=str))
    follow = {}
    for m in ("moe", "promoe", "knn", "skill", "promoe-icl"):
        w = rng.normal(size=(N_LAYERS, N_EXPERTS, emb.shape[1]))
        logits = 4.0 * np.einsum("led,td->tle", w, emb)
        follow[m] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    hists = follow | {"uniform": np.full((n, N_LAYERS, N_EXPERTS), 1 / N_EXPERTS),
                      "random": rng.dirichlet(np.ones(N_EXPERTS), size=(n, N_LAYERS)),
                      "promoe-shuffled": follow["promoe"][rng.permutation(n)]}
    for m, h in hists.items():
        if m in rows:
            save_routing(run / "routing" / f"{m}.npz", h)
    return per_task


def common_diff(a: dict[str, dict], b: dict[str, dict], metric: str) -> tuple[float, int]:
    common = sorted(set(a) & set(b))
    return float(np.mean([a[t][metric] - b[t][metric] for t in common])), len(common)


@dataclass(frozen=True)
class AnalysedRun:
    """A :func:`synthetic_run` folder after :func:`promoe.analysis.analyze`."""

    run: Path
    per_task: dict[str, dict]  # row -> task -> made-up scores
    out: dict  # what analyze() returned


# -- a run with specialised experts: experts/clusters.json and experts/matrix.json -------------------

EXPERT_LOSS = [[1.1, 2.5, 1.9, None],  # cluster 3 has no validation example
               [2.2, 1.4, 2.4, None],
               [2.0, 2.1, 2.05, None],
               [2.6, 2.3, 2.2, None]]
"""Own expert best on clusters 0 and 1; expert 0 beats expert 2 on cluster 2: 2 of 3 clusters with data."""


def expert_files(loss: list[list[float | None]] = EXPERT_LOSS) -> tuple[dict, dict]:
    """clusters.json and matrix.json as :mod:`promoe.stages.specialise` writes them (4 clusters, 4 experts)."""
    train = {f"train{i}": c for i, c in enumerate((0, 0, 0, 1, 1, 2, 2, 3))}
    clusters = {"method": "description", "n": 4, "sizes": [3, 2, 2, 1], "assignment": train,
                "centroids": np.eye(4).tolist(), "val": {"val0": 0, "val1": 0, "val2": 1, "val3": 2},
                "test": {t: i % 3 for i, t in enumerate(SYN_TASKS)}}
    matrix = {"loss": loss, "experts": 4, "clusters": 4, "val_examples": [6, 3, 3, 0], "val_tasks": [2, 1, 1, 0],
              "best_on_own": 2, "clusters_with_data": 3,
              "weight_distance": (0.1 * (1 - np.eye(4))).tolist(), "output_distance": (0.3 * (1 - np.eye(4))).tolist()}
    return clusters, matrix


def write_experts(run: Path, clusters: dict | None = None, matrix: dict | None = None) -> None:
    """Write ``experts/clusters.json`` and ``experts/matrix.json`` (the given ones, else :func:`expert_files`);
    ``json.dumps`` so that a test can write NaN."""
    default = expert_files()
    (run / "experts").mkdir(parents=True, exist_ok=True)
    for name, d in (("clusters", clusters or default[0]), ("matrix", matrix or default[1])):
        (run / "experts" / f"{name}.json").write_text(json.dumps(d))
