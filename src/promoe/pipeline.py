"""Training and zero-shot evaluation of the models of the experiment, stage by stage.

Shared work is done once per run: the backbone is loaded once, every task Definition is embedded
once, the frozen lower layers are computed once per training example and reused by every model.
A stage whose outputs exist (``scores/<model>.json``) is not redone; an interrupted training resumes
from its last checkpoint.
"""

from __future__ import annotations

import copy
import gc
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import Tensor

from promoe.config import ExperimentConfig
from promoe.data.examples import TrainExample, build_examples
from promoe.data.splits import TaskSplits
from promoe.evaluate import eval_items, predict, write_predictions
from promoe.io import read_predictions, read_references, references_of
from promoe.metrics import score
from promoe.model.backbone import load_backbone
from promoe.model.moe_model import MoEModel, build_model
from promoe.model.prompting import chat_prompt
from promoe.model.stats import RoutingStats
from promoe.model.task_encoder import build_task_encoder
from promoe.train import Trainer

log = logging.getLogger(__name__)


class LowerCache:
    """Lower hidden states per training example, computed on first use and shared by all models."""

    def __init__(self) -> None:
        self.store: dict[int, Tensor] = {}
        self.seconds = 0.0

    def __call__(self, model: MoEModel, idx: Sequence[int], input_ids: Tensor, mask: Tensor) -> Tensor:
        missing = [j for j, i in enumerate(idx) if i not in self.store]
        if missing:
            t0 = time.perf_counter()
            rows = torch.tensor(missing)
            sub_mask = mask[rows]
            width = int(sub_mask.sum(1).max())
            hidden = model.lower_hidden(input_ids[rows, :width], sub_mask[:, :width])  # right padded
            for r, j in enumerate(missing):
                self.store[idx[j]] = hidden[r, : int(sub_mask[r].sum())].clone()
            self.seconds += time.perf_counter() - t0
        out = torch.zeros(len(idx), input_ids.shape[1], next(iter(self.store.values())).shape[-1])
        for j, i in enumerate(idx):
            h = self.store[i]
            out[j, : h.shape[0]] = h
        return out


def run_models(cfg: ExperimentConfig, splits: TaskSplits, run_dir: Path, times: dict[str, float],
               accelerator: Accelerator | None = None) -> dict[str, dict]:
    """Evaluate the untrained backbone and train + evaluate every configured model; returns scores.

    With several processes, training is data-parallel and evaluation is sharded (each process
    generates for every n-th test instance); the main process writes every file.
    """
    acc = accelerator or Accelerator(mixed_precision=cfg.train.mixed_precision)
    t0 = time.perf_counter()
    bb = load_backbone(cfg.model, seed=cfg.seed)
    tok = bb.tokenizer
    encoder = build_task_encoder(cfg.model)
    tasks = splits.train + splits.val + splits.test
    task_emb = dict(zip([t.name for t in tasks], encoder.encode([t.definition for t in tasks]), strict=True))
    wrap = (lambda text: chat_prompt(tok, text)) if not bb.is_seq2seq else (lambda text: text)
    items = eval_items(splits.test)
    times["load"] = time.perf_counter() - t0
    results: dict[str, dict] = {}

    def evaluate(name: str, model: MoEModel) -> None:
        t1 = time.perf_counter()
        stats = RoutingStats(len(model.moe_layers), model.moe_layers[0].experts.n_experts)
        model.to(acc.device)
        with acc.autocast():
            preds = predict(model, tok, items[acc.process_index::acc.num_processes], task_emb=task_emb,
                            prompt=cfg.prompt, wrap=wrap, batch_size=cfg.eval.batch_size,
                            max_new_tokens=cfg.eval.max_new_tokens, max_length=cfg.eval.max_length, stats=stats,
                            desc=f"eval {name}", disable_progress=not acc.is_main_process)
        if acc.num_processes > 1:
            shares = gather_object([(preds, stats.state())])
            preds = {k: v for p, _ in shares for k, v in p.items()}
            stats = RoutingStats(stats.n_layers, stats.n_experts)
            for _, state in shares:
                stats.merge(state)
        if acc.is_main_process:
            if stats.n_experts > 1:  # the dense FFN has nothing to route
                (run_dir / "routing").mkdir(parents=True, exist_ok=True)
                stats.save(run_dir / "routing" / f"{name}.npz")
            write_predictions(run_dir, name, items, preds, splits.test)
        acc.wait_for_everyone()
        results[name] = score(preds, references_of(splits.test))
        times[f"eval_{name}"] = time.perf_counter() - t1
        log.info("%s: ROUGE-L %.2f, EM %.2f (%d instances)", name, results[name]["rougeL"],
                 results[name]["exact_match"], results[name]["n"])

    def done(name: str) -> bool:
        if (run_dir / "scores" / f"{name}.json").exists() and (run_dir / "predictions" / f"{name}.jsonl").exists():
            results[name] = score(read_predictions(run_dir / "predictions" / f"{name}.jsonl"),
                                  read_references(run_dir / "references.jsonl"))
            log.info("%s: already evaluated, kept", name)
            return True
        return False

    if cfg.eval.backbone and not done("backbone"):
        evaluate("backbone", build_model(copy.deepcopy(bb.model), bb.family, cfg.model, "dense", seed=cfg.seed))
    lower = LowerCache()
    seq2seq = bb.is_seq2seq
    examples: list[TrainExample] | None = None
    for kind in cfg.train.models:
        if done(kind):
            continue
        if examples is None:
            common = dict(max_length=cfg.train.max_length, max_target_length=cfg.train.max_target_length,
                          prompt=cfg.prompt, wrap=wrap, seq2seq=seq2seq)
            examples = build_examples(splits.train, tok, per_task=cfg.train.examples_per_task, **common)
            val_examples = build_examples(splits.val, tok, per_task=cfg.train.val_examples_per_task, **common)
            log.info("training examples: %d from %d tasks; validation: %d from %d tasks", len(examples),
                     len(splits.train), len(val_examples), len(splits.val))
        t1 = time.perf_counter()
        model = build_model(copy.deepcopy(bb.model), bb.family, cfg.model, kind, seed=cfg.seed)
        trainer = Trainer(model, cfg=cfg.train, examples=examples, val_examples=val_examples, task_emb=task_emb,
                          pad_id=tok.pad_token_id, out_dir=run_dir / "train" / kind, seed=cfg.seed,
                          lower=lower if model.split is not None else None, accelerator=acc)
        result = trainer.fit(desc=f"train {kind}")
        times[f"train_{kind}"] = time.perf_counter() - t1
        log.info("%s: trained %d steps, best validation loss %s at step %s", kind, result.steps,
                 result.best_val_loss, result.best_step)
        evaluate(kind, trainer.acc.unwrap_model(trainer.model))
        del model, trainer
        acc.free_memory()  # Accelerate keeps references to prepared models and optimizers
        gc.collect()
    times["lower_cache"] = lower.seconds
    return results
