"""Few-shot fine-tuning baseline: each trained model, fine-tuned on a test task's positive examples.

For every test task, each model starts from its meta-trained weights, takes ``steps`` AdamW steps on
the task's first ``k`` positive examples (the whole set each step, the same trainable parameters and
optimizer step as meta-training), answers the task's scored instances, and is restored. The positive
examples are demonstrations here, so a run with this baseline never scores them (see ``CompareConfig``).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from promoe.config import ExperimentConfig
from promoe.data.examples import build_examples
from promoe.data.schema import Instance, Task
from promoe.evaluation.likelihood import reference_nll
from promoe.evaluation.predict import Variant, predict_variants
from promoe.evaluation.state import PassState, fingerprint
from promoe.model.moe_model import MoEModel
from promoe.training.loop import MicroBatch, OptimizerStep, adamw
from promoe.training.trainer import batch_of, param_groups

log = logging.getLogger(__name__)


def fewshot_tasks(tasks: Sequence[str], n: int | None) -> list[str]:
    """``n`` of ``tasks`` spread evenly over the list (all with ``n=None``)."""
    if n is None or n >= len(tasks):
        return list(tasks)
    stride = len(tasks) / n
    return [tasks[int(j * stride)] for j in range(n)]


def demonstration_task(task: Task, k: int | None) -> Task:
    """``task`` whose instances are its first ``k`` positive examples (all with ``k=None``)."""
    pos = task.positive_examples if k is None else task.positive_examples[:k]
    return replace(task, instances=tuple(Instance(id=f"{task.name}#pos{i}", input=ex.input, outputs=(ex.output,),
                                                  origin="positive_example") for i, ex in enumerate(pos)))


def finetune(model: MoEModel, batch, *, task_emb: torch.Tensor | None, lower: torch.Tensor | None, steps: int,
             lr: float, router_lr: float, max_grad_norm: float = 1.0) -> list[float]:
    """``steps`` AdamW steps on one batch (constant rate); returns the losses before each step."""
    opt = adamw(param_groups(model, lr, router_lr))
    step = OptimizerStep(model, opt, max_grad_norm=max_grad_norm,
                         where=f"few-shot fine-tuning on task {batch.task_keys[0]}",
                         hint="the meta-trained weights on disk are unchanged; try a lower compare.fewshot_lr")
    emb = None if task_emb is None else task_emb.expand(batch.input_ids.shape[0], -1)
    mb = MicroBatch(batch, task_emb=emb, lower=lower)
    losses = [step(s, [mb]).losses[0] for s in range(steps)]
    model.eval()
    return losses


def run_fewshot(models: dict[str, MoEModel], variants: dict[str, Variant], items: Sequence[tuple[Task, Instance]],
                tokenizer, *, cfg: ExperimentConfig, wrap: Callable[[str], str],
                task_emb: dict[str, torch.Tensor], progress: Path | None = None
                ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, float]]]:
    """Predictions ``{row: {instance id: answer}}`` of every model fine-tuned per test task, and their
    reference NLLs ``{row: {instance id: nll}}`` (:mod:`promoe.evaluation.likelihood`).

    ``models`` maps a row name (``moe-fewshot``) to a trained model, ``variants`` the same names to the
    :class:`Variant` that collects its routing statistics. A task without positive examples is answered
    by the unchanged model (logged). Each task's fine-tuning starts from the same random state (seeded
    by ``cfg.seed`` and the task's name), so a task's answers do not depend on the tasks before it; with
    ``progress`` (a JSON file) the answers are saved after every task and a killed pass resumes at its
    first unfinished task (see :mod:`promoe.evaluation.state`).
    """
    c = cfg.compare
    out: dict[str, dict[str, str]] = {name: {} for name in models}
    nll: dict[str, dict[str, float]] = {name: {} for name in models}
    by_task: dict[str, list[tuple[Task, Instance]]] = {}
    for t, i in items:
        by_task.setdefault(t.name, []).append((t, i))
    desc = f"few-shot {', '.join(models)}"
    state = PassState(progress, fingerprint([i.id for _, i in items], asdict(c), asdict(cfg.eval), asdict(cfg.prompt),
                                            cfg.seed), label=desc, unit="tasks")
    done = state.resume(list(variants.values()), out, nll)

    first = next(iter(models.values()))
    no_demos = []
    for j, (name_t, task_items) in enumerate(tqdm(by_task.items(), desc=desc, dynamic_ncols=True)):
        todo = {name: m for name, m in models.items() if done[name] <= j}
        if not todo:
            continue
        task = task_items[0][0]
        demo = demonstration_task(task, c.fewshot_k)
        saved = {}
        if demo.instances:
            ex = build_examples([demo], tokenizer, per_task=len(demo.instances), max_length=cfg.train.max_length,
                                max_target_length=cfg.train.max_target_length, prompt=cfg.prompt, wrap=wrap,
                                seq2seq=first.is_seq2seq)
            batch = batch_of(ex, range(len(ex)), tokenizer.pad_token_id, first.is_seq2seq)
            lower = first.lower_hidden(batch.input_ids, batch.attention_mask) if first.split is not None else None
            for name, m in todo.items():
                saved[name] = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.seed + zlib.crc32(name_t.encode()))
                    finetune(m, batch, task_emb=task_emb.get(name_t), lower=lower, steps=c.fewshot_steps,
                             lr=c.fewshot_lr, router_lr=10 * c.fewshot_lr)
        else:
            no_demos.append(name_t)
        rows = [variants[name] for name in todo]
        preds = predict_variants(rows, tokenizer, task_items, prompt=cfg.prompt, wrap=wrap,
                                 batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                                 max_length=cfg.eval.max_length, batch_tokens=cfg.eval.batch_tokens,
                                 prefix_cache=cfg.eval.prefix_cache, disable_progress=True)
        lik = reference_nll(rows, tokenizer, task_items, prompt=cfg.prompt, wrap=wrap, batch_size=cfg.eval.batch_size,
                            max_length=cfg.eval.max_length, max_target_length=cfg.train.max_target_length,
                            disable_progress=True)
        for name, p in preds.items():
            out[name].update(p)
            nll[name].update(lik[name])
        with torch.no_grad():
            for name, weights in saved.items():
                for n, p in models[name].named_parameters():
                    if n in weights:
                        p.copy_(weights[n])
            for m in models.values():
                m.clear_routing_cache()
        state.save(rows, out, j + 1, nll)
    if no_demos:
        log.info("few-shot: %d test tasks have no positive examples and keep their meta-trained weights: %s",
                 len(no_demos), ", ".join(no_demos))
    return out, nll
