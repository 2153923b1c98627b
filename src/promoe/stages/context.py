"""What the stages of a run share: the config, splits, run folder, setup, embeddings, trained models.

Row builders (:mod:`promoe.rows`) receive a :class:`RunContext` and take from it what they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor

from promoe.config import ExperimentConfig
from promoe.data.splits import TaskSplits
from promoe.evaluation.predict import Variant
from promoe.io import write_npz
from promoe.model.moe_model import MoEModel
from promoe.setup import Setup
from promoe.stages.evaluation import Evaluation
from promoe.stages.profiles import Profiles


@dataclass
class RunContext:
    """One run in progress. ``trained`` holds each trained model with its best weights once training is
    over; ``rows`` the zero-shot rows scored so far (conditions reuse their models and descriptions)."""

    cfg: ExperimentConfig
    splits: TaskSplits
    run_dir: Path
    acc: Accelerator
    setup: Setup
    times: dict[str, float]
    task_emb: dict[str, Tensor]
    evaluation: Evaluation
    wording_emb: dict[str, Tensor] = field(default_factory=dict)
    """``{training task: (n, d_task)}`` other wordings of its Definition, for the routers' meta-training."""
    trained: dict[str, MoEModel] = field(default_factory=dict)
    profiles: Profiles | None = None
    rows: dict[str, Variant] = field(default_factory=dict)


def save_task_embeddings(path: Path, splits: TaskSplits, task_emb: dict[str, Tensor]) -> None:
    """Description embeddings, categories and split of every task (read by the analysis)."""
    groups = (("train", splits.train), ("val", splits.val), ("test", splits.test))
    tasks = [(s, t) for s, ts in groups for t in ts]
    write_npz(path, task_names=np.array([t.name for _, t in tasks], dtype=str),
              embeddings=torch.stack([task_emb[t.name] for _, t in tasks]).float().numpy(),
              categories=np.array([t.category for _, t in tasks], dtype=str),
              split=np.array([s for s, _ in tasks], dtype=str))
