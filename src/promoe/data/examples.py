"""Training examples: tokenised (prompt, target) pairs of the training tasks, and the sampling plan.

The plan fixes, from the seed alone, which examples every optimizer step uses: tasks are drawn with
probability ∝ n_examples^(1/temperature) (temperature 1: proportional; large: uniform over tasks),
an example uniformly within the task, and the examples of a window of steps are sorted by length
before being cut into batches, so a batch holds examples of similar length (little padding). A
resumed run replays the same plan from its step.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from promoe.config import PromptConfig
from promoe.data.collate import encode_pair
from promoe.data.prompts import config_prompt
from promoe.data.schema import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    task: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    cut: bool = False  # the prompt was longer than max_length and lost its start


def build_examples(tasks: Sequence[Task], tokenizer, *, per_task: int, max_length: int, max_target_length: int,
                   prompt: PromptConfig, wrap=lambda text: text, seq2seq: bool = False) -> list[TrainExample]:
    """The first ``per_task`` instances of every task as tokenised examples (first reference as target).

    ``wrap`` puts the Tk-Instruct prompt into the backbone's chat template.
    """
    out = []
    for t in tasks:
        for inst in t.instances[:per_task]:
            text = wrap(config_prompt(t, inst, prompt))
            enc = encode_pair(tokenizer, text, inst.outputs[0], max_length=max_length, seq2seq=seq2seq,
                              max_target_length=max_target_length)
            out.append(TrainExample(t.name, tuple(enc.input_ids), tuple(enc.labels), enc.truncated > 0))
    truncated = sum(e.cut for e in out)
    if truncated:
        log.info("%d of %d training prompts were longer than %d tokens and lost their start", truncated,
                 len(out), max_length)
    return out


def sampling_plan(examples: Sequence[TrainExample], *, steps: int, batch_size: int, temperature: float,
                  seed: int, window: int = 16, task_weight: dict[str, float] | None = None) -> list[list[int]]:
    """Example indices of every step (see module docstring); deterministic in ``seed``. ``task_weight``
    multiplies each task's sampling probability (e.g. 1 / its cluster's size: every cluster equally often)."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_task[ex.task].append(i)
    tasks = sorted(by_task)
    sizes = np.array([len(by_task[t]) for t in tasks], dtype=float)
    p = sizes ** (1.0 / temperature)
    if task_weight is not None:
        p *= np.array([task_weight[t] for t in tasks], dtype=float)
    p /= p.sum()
    rng = np.random.default_rng(seed)
    plan: list[list[int]] = []
    while len(plan) < steps:
        n_steps = min(window, steps - len(plan))
        drawn = rng.choice(len(tasks), size=n_steps * batch_size, p=p)
        idx = [by_task[tasks[t]][rng.integers(len(by_task[tasks[t]]))] for t in drawn]
        idx.sort(key=lambda i: len(examples[i].input_ids))
        batches = [idx[b * batch_size:(b + 1) * batch_size] for b in range(n_steps)]
        plan += [batches[j] for j in rng.permutation(n_steps)]
    return plan
