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


class SamplingPlan(Sequence[list[int]]):
    """Example indices of every step (see module docstring), deterministic in the seed, drawn a window of steps at
    a time when a step is asked for: memory does not grow with ``steps`` (a plan of 10^9 steps costs what a plan
    of 16 does), and asking for the steps in order draws each window once (an earlier step replays from the seed).
    Equal to another sequence (a list, another plan) that holds the same batches."""

    def __init__(self, examples: Sequence[TrainExample], *, steps: int, batch_size: int, temperature: float,
                 seed: int, window: int = 16, task_weight: dict[str, float] | None = None) -> None:
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, ex in enumerate(examples):
            by_task[ex.task].append(i)
        self.tasks = sorted(by_task)
        self.by_task = [by_task[t] for t in self.tasks]
        sizes = np.array([len(b) for b in self.by_task], dtype=float)
        p = sizes ** (1.0 / temperature)
        if task_weight is not None:
            p *= np.array([task_weight[t] for t in self.tasks], dtype=float)
        self.p = p / p.sum()
        self.lengths = [len(ex.input_ids) for ex in examples]
        self.steps, self.batch_size, self.seed, self.window = steps, batch_size, seed, window
        self._rewind()

    def _rewind(self) -> None:
        self._rng, self._start, self._batches = np.random.default_rng(self.seed), 0, []

    def _draw(self, n_steps: int) -> list[list[int]]:
        """The next window of ``n_steps`` steps: their examples sorted by length, cut into batches, shuffled."""
        rng = self._rng
        drawn = rng.choice(len(self.tasks), size=n_steps * self.batch_size, p=self.p)
        idx = [self.by_task[t][rng.integers(len(self.by_task[t]))] for t in drawn]
        idx.sort(key=lambda i: self.lengths[i])
        batches = [idx[b * self.batch_size:(b + 1) * self.batch_size] for b in range(n_steps)]
        return [batches[j] for j in rng.permutation(n_steps)]

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step):
        if isinstance(step, slice):
            return [self[i] for i in range(*step.indices(self.steps))]
        step = step + self.steps if step < 0 else step
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} of a plan of {self.steps}")
        if step < self._start:
            self._rewind()
        while step >= self._start + len(self._batches):
            self._start += len(self._batches)
            self._batches = self._draw(min(self.window, self.steps - self._start))
        return self._batches[step - self._start]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(
            a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


def sampling_plan(examples: Sequence[TrainExample], *, steps: int, batch_size: int, temperature: float,
                  seed: int, window: int = 16, task_weight: dict[str, float] | None = None) -> SamplingPlan:
    """Example indices of every step (:class:`SamplingPlan`; see module docstring); deterministic in ``seed``.
    ``task_weight`` multiplies each task's sampling probability (e.g. 1 / its cluster's size: every cluster equally
    often)."""
    return SamplingPlan(examples, steps=steps, batch_size=batch_size, temperature=temperature, seed=seed,
                        window=window, task_weight=task_weight)
