"""Builders shared by several test files (no fixtures: those are in tests/conftest.py).

* ``TASKS``: four described tasks with positive examples (the description ablations, few-shot fine-tuning).
* ``DECODE_CFG``, ``_models``, ``_tasks``: dense, moe and promoe models on a tiny llama with weights that
  disagree, and three tasks whose prompts differ in length (decoding, evaluation, resumable passes; the
  backbone is the ``backbone`` fixture).
* ``ref``, ``write_lines``, ``_example``, ``EXAMPLE_EXPECTED``: a hand-scored example in the official SNI
  formats (the metrics, the file formats, ``promoe score``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from promoe.config import ModelConfig
from promoe.data.schema import Example, Instance, Task
from promoe.metrics import Reference
from promoe.model.build import build_model

# -- four described tasks ------------------------------------------------------------------------

def _task(i: int, category: str, n_pos: int = 2) -> Task:
    return Task(name=f"task{i}", definition=f"Definition {i}: classify the sentence as good or bad {i}",
                categories=(category,), instances=(Instance(id=f"t{i}-0", input=f"sentence {i}", outputs=("good",)),),
                positive_examples=tuple(Example(input=f"example {i} {j}", output=f"label{j}") for j in range(n_pos)))


TASKS = [_task(i, c) for i, c in enumerate(["Sentiment_Analysis", "Question_Answering", "Title_Generation",
                                            "Sentiment_Analysis"])]


# -- three disagreeing models on a tiny llama, three tasks -----------------------------------------

DECODE_CFG = ModelConfig(backbone="tiny-llama", n_moe_layers=1, n_experts=4, top_k=2, task_encoder="hashing",
                         d_task=16, d_hyper=16)


def _models(bb):
    models = {}
    for kind in ("dense", "moe", "promoe"):
        m = build_model(copy.deepcopy(bb.model), bb.family, DECODE_CFG, kind, seed=1)
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


# -- a hand-scored example in the official formats -------------------------------------------------

def ref(rid: str, refs: Sequence[str], task: str = "task1_x", cat: str = "Question Answering",
        track: str = "default") -> Reference:
    return Reference(id=rid, references=tuple(refs), task_id=task, task_category=cat, track=track)


def write_lines(path: Path, rows: Sequence[Any]) -> Path:
    """Write JSON Lines; a ``str`` row is written verbatim (to make broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def _example() -> tuple[dict[str, str], list[Reference]]:
    preds = {
        "a1": "Yes!",          # vs "yes": EM 1, RL 1
        "a2": "the cat sat",   # vs "the cat sat on the mat": EM 0, RL 2/3
        # a3 missing -> "" vs "no": EM 0, RL 0
        "b1": "positive",      # EM 1, RL 1
        "zzz": "ignored",      # not in the references
    }
    refs = [
        ref("a1", ["yes"], task="task1_qa", cat="Question Answering"),
        ref("a2", ["the cat sat on the mat"], task="task1_qa", cat="Question Answering"),
        ref("a3", ["no"], task="task1_qa", cat="Question Answering"),
        ref("b1", ["positive"], task="task2_sa", cat="Sentiment  Analysis"),
    ]
    return preds, refs


# Hand-computed for _example():
#   instances (EM, RL): a1 (1, 1), a2 (0, 2/3), a3 (0, 0), b1 (1, 1)
#   overall EM 2/4 = 50; RL (1 + 2/3 + 0 + 1)/4 = 2/3 -> 66.6667
#   task1_qa: EM 1/3 -> 33.3333, RL (5/3)/3 = 5/9 -> 55.5556, n 3; task2_sa: 100, 100, n 1
#   task means: EM (1/3 + 1)/2 = 2/3 -> 66.6667 (instance mean is 50); RL (5/9 + 1)/2 = 7/9 -> 77.7778
EXAMPLE_EXPECTED: dict[str, Any] = {
    "rougeL": 66.6667,
    "exact_match": 50.0,
    "n": 4,
    "rougeL_task_mean": 77.7778,
    "exact_match_task_mean": 66.6667,
    "n_tasks": 2,
    "per_category": {
        "question_answering": {"rougeL": 55.5556, "exact_match": 33.3333, "n": 3},
        "sentiment_analysis": {"rougeL": 100.0, "exact_match": 100.0, "n": 1},
    },
    "per_task": {
        "task1_qa": {"rougeL": 55.5556, "exact_match": 33.3333, "n": 3, "category": "question_answering"},
        "task2_sa": {"rougeL": 100.0, "exact_match": 100.0, "n": 1, "category": "sentiment_analysis"},
    },
    "per_instance": {
        "a1": {"task": "task1_qa", "rougeL": 100.0, "exact_match": 100.0},
        "a2": {"task": "task1_qa", "rougeL": 66.6667, "exact_match": 0.0},
        "a3": {"task": "task1_qa", "rougeL": 0.0, "exact_match": 0.0},
        "b1": {"task": "task2_sa", "rougeL": 100.0, "exact_match": 100.0},
    },
}
