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
from promoe.data.collate import encode_pair, encode_target
from promoe.data.prompts import PromptCut, fits_in, fitted_prompt
from promoe.data.schema import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    task: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    cut: bool = False
    """The prompt lost (the start of) its Definition: it did not fit ``max_length`` even without demonstrations and
    with its input cut (:func:`promoe.data.prompts.fit_prompt`'s last resort)."""
    shortened: PromptCut = ""
    """What was cut to make the prompt fit (:data:`~promoe.data.prompts.PromptCut`)."""


def build_examples(tasks: Sequence[Task], tokenizer, *, per_task: int, max_length: int, max_target_length: int,
                   prompt: PromptConfig, wrap=lambda text: text, seq2seq: bool = False) -> list[TrainExample]:
    """The first ``per_task`` instances of every task as tokenised examples (first reference as target).

    ``wrap`` puts the Tk-Instruct prompt into the backbone's chat template. A prompt that would not fit
    ``max_length`` with its target is cut as evaluation cuts it (:func:`promoe.data.prompts.fit_prompt`:
    demonstrations, then the input's end, the Definition's start only as the last resort), not from its start.
    """
    out = []
    for t in tasks:
        for inst in t.instances[:per_task]:
            target = inst.outputs[0]
            room = max_length - (0 if seq2seq else len(encode_target(tokenizer, target,
                                                                      max_target_length=max_target_length)))
            fitted = fitted_prompt(t, inst, prompt, fits_in(tokenizer, wrap, room, add_special_tokens=seq2seq))
            enc = encode_pair(tokenizer, wrap(fitted.text), target, max_length=max_length, seq2seq=seq2seq,
                              max_target_length=max_target_length)
            out.append(TrainExample(t.name, tuple(enc.input_ids), tuple(enc.labels),
                                    fitted.cut == "definition" or enc.truncated > 0, fitted.cut))
    cut = {c: sum(e.shortened == c for e in out) for c in ("demonstrations", "input", "definition")}
    if any(cut.values()):
        log.info("%d of %d training prompts were longer than %d tokens with their target and were cut to fit: %d lost "
                 "demonstrations, %d the end of their input, %d the start of their Definition", sum(cut.values()),
                 len(out), max_length, *cut.values())
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
