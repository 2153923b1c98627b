"""The oracle rows: for each test task, the one expert (the same in every MoE layer) whose reference
likelihood on some of the task's examples is highest, then scored on the task's instances.

* ``oracle`` chooses on the task's labelled *positive examples* (demonstrations): scored instances never
  enter it, and the row refuses to run when the positive examples are scored too
  (``data.test_positive_examples``) — the most a task-level description router could recover over these
  experts, as a result. Tasks without positive examples get uniform routing.
* ``oracle_insample`` chooses on the very instances it scores: a ceiling, never a result. Beside ``oracle``
  it separates the two reasons a headroom can be small: a high ceiling with a low ``oracle`` means two
  demonstrations do not find the best expert; both low mean the experts differ too little. It is the
  ceiling of the reference NLL it chooses by; ROUGE-L and exact match of a greedy generation need not follow
  the likelihood of the reference (on SNI it scored below ``oracle`` in ROUGE-L: docs/expert-designs.md).

Each task's choice and the per-expert NLLs (the expert x task matrix the choice reads) are written to
``<row>.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from promoe.data.collate import encode_pair, pad_batch
from promoe.data.prompts import config_prompt
from promoe.data.schema import Instance, Task
from promoe.evaluation.predict import Variant
from promoe.io import write_json
from promoe.model.build import variant_copy
from promoe.model.moe_model import MoEModel
from promoe.model.task_routing import TableRouting, task_routed
from promoe.registry import Row
from promoe.resources import record_stage
from promoe.stages.context import RunContext
from promoe.training.fewshot import demonstration_task

log = logging.getLogger(__name__)


def demonstrations(task: Task) -> list[Instance]:
    """What ``oracle`` may look at: the task's positive examples."""
    return list(demonstration_task(task, None).instances)


def choose(tasks: Sequence[Task], n_experts: int, nll: Callable[[int, list[Instance], Task], float],
           examples: Callable[[Task], list[Instance]] = demonstrations, desc: str = "the demonstrations") -> dict[str, dict]:
    """Per task with ``examples``: ``{"expert": e, "nll": [per expert], "examples": n}``, the expert of lowest
    ``nll(expert, examples, task)`` (the first on ties)."""
    out = {}
    for t in tqdm(tasks, desc=f"oracle: each expert's NLL on {desc}", dynamic_ncols=True):
        if seen := examples(t):
            losses = [nll(e, seen, t) for e in range(n_experts)]
            out[t.name] = {"expert": min(range(n_experts), key=losses.__getitem__), "nll": losses,
                           "examples": len(seen)}
    return out


def one_hot(n_layers: int, n_experts: int, e: int | None) -> torch.Tensor:
    """Task-level routing (n_layers, n_experts) probabilities: expert ``e`` (None: uniform)."""
    if e is None:
        return torch.full((n_layers, n_experts), 1.0 / n_experts)
    return torch.nn.functional.one_hot(torch.full((n_layers,), e), n_experts).float()


class _TaskNLL:
    """Mean per-token NLL of a task's examples with every token routed to one expert; the batch and its
    pass through the frozen lower layers are made once per task and reused for every expert."""

    def __init__(self, model: MoEModel, ctx: RunContext) -> None:
        self.model, self.ctx, self.task, self.batch, self.lower = model, ctx, None, None, None

    @torch.no_grad()
    def __call__(self, expert: int, demos: list[Instance], task: Task) -> float:
        model, cfg, tok = self.model, self.ctx.cfg, self.ctx.setup.tokenizer
        if self.task != task.name:
            enc = [encode_pair(tok, self.ctx.setup.wrap(config_prompt(task, d, cfg.prompt)), d.outputs[0],
                               max_length=cfg.eval.max_length, seq2seq=model.is_seq2seq,
                               max_target_length=cfg.train.max_target_length) for d in demos]
            self.batch = pad_batch(enc, [task.name] * len(enc), pad_id=tok.pad_token_id, left=False,
                                   seq2seq=model.is_seq2seq)
            self.lower = model.lower_hidden(self.batch.input_ids, self.batch.attention_mask) \
                if model.split is not None else None
            self.task = task.name
        b = self.batch
        n_layers, n_experts = len(model.moe_layers), model.moe_layers[0].experts.n_experts
        routing = one_hot(n_layers, n_experts, expert).clamp_min(1e-8).log()[None].expand(len(b.labels), -1, -1)
        targets = int((b.labels != -100).sum())
        out = model(input_ids=None if self.lower is not None else b.input_ids, attention_mask=b.attention_mask,
                    labels=b.labels, lower=self.lower, routing=routing, num_items=max(targets, 1))
        return float(out.lm_loss)


def oracle(ctx: RunContext, row: Row) -> Variant | None:
    if ctx.cfg.data.test_positive_examples:
        log.warning("%s skipped: it chooses on the test tasks' positive examples, which this run also scores "
                    "(set data.test_positive_examples=false)", row.name)
        return None
    return _chosen(ctx, row, demonstrations, "the demonstrations")


def oracle_insample(ctx: RunContext, row: Row) -> Variant:
    return _chosen(ctx, row, lambda t: ctx.evaluation.instances_of(row.name, t), "the scored instances (ceiling)")


def _chosen(ctx: RunContext, row: Row, examples: Callable[[Task], list[Instance]], desc: str) -> Variant:
    """``ctx.trained["moe"]``'s experts, each test task routed to the one of lowest NLL on ``examples(task)``."""
    model = variant_copy(ctx.trained["moe"])
    n_layers, n_experts = len(model.moe_layers), model.moe_layers[0].experts.n_experts
    names = [t.name for t in ctx.splits.test]
    uniform = TableRouting({t: one_hot(n_layers, n_experts, None) for t in names})
    task_routed(model, uniform).eval()  # task-level routers; each candidate is passed as explicit routing
    t0 = time.perf_counter()
    choices = choose(ctx.splits.test, n_experts, _TaskNLL(model, ctx), examples, desc)
    record_stage(ctx.times, f"{row.name} choice", time.perf_counter() - t0)
    table = {t: one_hot(n_layers, n_experts, choices[t]["expert"] if t in choices else None) for t in names}
    task_routed(model, TableRouting(table)).eval()  # by task name: twins with one Definition keep their own choice
    if ctx.acc.is_main_process:
        write_json(ctx.run_dir / f"{row.name}.json", {"choices": choices, "uniform": sorted(set(names) - set(choices))})
    log.info("%s: chose an expert for %d of %d test tasks on %s", row.name, len(choices), len(names), desc)
    return Variant(row.name, model, ctx.task_emb)
