"""The stages of a run after the data splits, each in its own module, called in this order by
:func:`run_models`:

1. :mod:`~promoe.stages.context` — load the :class:`~promoe.setup.Setup` (backbone, encoder, prompt
   format) and embed every task Definition once (``task_embeddings.npz``);
2. :mod:`~promoe.stages.train_models` — meta-train the models (resumable), each for its budget at a learning
   rate chosen on the validation tasks (:mod:`~promoe.stages.compute`), the ``moe``'s routing profiles;
3. :mod:`~promoe.stages.score_rows` — score every selected row of :mod:`promoe.registry`
   (:mod:`~promoe.stages.evaluation` writes predictions, scores and routing statistics).

The heuristic floors (:mod:`~promoe.stages.heuristics`) need no model and run before these.
A stage whose outputs exist (``scores/<row>.json``) is not redone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from accelerate import Accelerator
from torch import Tensor

from promoe.config import ExperimentConfig
from promoe.data.paraphrases import package_path, read_paraphrases, router_wordings
from promoe.data.splits import TaskSplits
from promoe.resources import record_stage
from promoe.setup import Setup
from promoe.stages.context import RunContext, save_task_embeddings
from promoe.stages.evaluation import Evaluation
from promoe.stages.score_rows import score_rows
from promoe.stages.train_models import train_models

log = logging.getLogger(__name__)


def start(cfg: ExperimentConfig, splits: TaskSplits, run_dir: Path, times: dict[str, float],
          acc: Accelerator) -> RunContext:
    """Load the setup and embed every task's Definition, and the training tasks' other wordings (stage ``load``)."""
    t0 = time.perf_counter()
    setup = Setup.load(cfg)
    times["dtype"] = {"frozen_lower_layers": setup.lower_dtype, "mixed_precision": cfg.train.mixed_precision}
    task_emb = setup.embed_tasks(splits.train + splits.val + splits.test)
    wording_emb = embed_wordings(cfg, splits, setup)
    if acc.is_main_process:
        save_task_embeddings(run_dir / "task_embeddings.npz", splits, task_emb)
    ev = Evaluation(cfg, splits, run_dir, acc, setup.tokenizer, setup.wrap, times)
    record_stage(times, "load", time.perf_counter() - t0)
    return RunContext(cfg=cfg, splits=splits, run_dir=run_dir, acc=acc, setup=setup, times=times,
                      task_emb=task_emb, evaluation=ev, wording_emb=wording_emb)


def embed_wordings(cfg: ExperimentConfig, splits: TaskSplits, setup: Setup) -> dict[str, Tensor]:
    """``{training task: (n, d_task)}`` embeddings of up to ``train.paraphrases`` other wordings of its Definition
    (:func:`~promoe.data.paraphrases.router_wordings`), for the routers' meta-training."""
    if cfg.train.paraphrases == 0:
        return {}
    path = package_path(cfg.data)
    wordings = router_wordings(splits.train, package=read_paraphrases(path) if path else {},
                               limit=cfg.train.paraphrases)
    texts = [w for ws in wordings.values() for w in ws]
    log.info("router wordings: %d other wordings of %d of %d training tasks", len(texts), len(wordings),
             len(splits.train))
    flat = setup.encoder.encode(texts) if texts else None
    out, at = {}, 0
    for task, ws in wordings.items():
        out[task], at = flat[at:at + len(ws)], at + len(ws)
    return out


def run_models(cfg: ExperimentConfig, splits: TaskSplits, run_dir: Path, times: dict[str, float],
               accelerator: Accelerator | None = None) -> dict[str, dict]:
    """Train the configured models, then score every selected row; returns scores per row.

    With several processes, training is data-parallel and evaluation is sharded; the main process
    writes every file.
    """
    ctx = start(cfg, splits, run_dir, times, accelerator or Accelerator(mixed_precision=cfg.train.mixed_precision))
    train_models(ctx)
    return score_rows(ctx)
