"""Tk-Instruct prompt encodings (definition only; definition + k positive examples).

The text layout follows Tk-Instruct's ``ni_collator.py`` (``Definition: …``, ``Positive Example i -``,
``Now complete the following example -``, ``Input: …``, ``Output:``), including its rule of ending
each field with a full stop when it does not end in punctuation. The chat-template wrapping of a
backbone is applied later, by the model code, around this text.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from promoe.data.schema import Example, Instance, Task

if TYPE_CHECKING:
    from promoe.config import PromptConfig


def _end(text: str) -> str:
    return text if text and text[-1] in string.punctuation else text + "."


def encode_definition(definition: str) -> str:
    """``Definition: <text>.`` followed by a blank line (empty string for an empty definition)."""
    definition = definition.strip()
    return f"Definition: {_end(definition)}\n\n" if definition else ""


def encode_example(example: Example, index: int, *, add_explanation: bool = False) -> str:
    """One ``Positive Example i -`` block, as Tk-Instruct writes it."""
    s = f" Positive Example {index} -\n"
    s = _end(s + f"Input: {example.input.strip()}") + "\n"
    s = _end(s + f" Output: {example.output.strip()}") + "\n"
    if add_explanation and example.explanation.strip():
        s = _end(s + f" Explanation: {example.explanation.strip()}") + "\n"
    return s + "\n"


def encode_input(text: str) -> str:
    """The query part: ``Now complete the following example -`` / ``Input: …`` / ``Output: ``."""
    return "Now complete the following example -\n" + _end(f"Input: {text.strip()}") + "\nOutput: "


def shown_input(text: str) -> str:
    """An input as a prompt shows it (stripped, a full stop added when it ends without punctuation), with every run
    of whitespace as one space: two inputs with the same key show a model the same text."""
    return " ".join(_end(f"Input: {text.strip()}").split())


def encode_prompt(
    definition: str,
    instance_input: str,
    examples: Sequence[Example] = (),
    *,
    add_explanation: bool = False,
    fits: Callable[[str], bool] | None = None,
) -> str:
    """The Tk-Instruct source text for one instance.

    ``examples`` are added in order while ``fits(prompt)`` holds (Tk-Instruct drops the examples that
    would push the prompt past the model's maximum source length); with ``fits=None`` all are added.
    """
    head, query = encode_definition(definition), encode_input(instance_input)
    blocks: list[str] = []
    for i, ex in enumerate(examples, 1):
        block = encode_example(ex, i, add_explanation=add_explanation)
        if fits is not None and not fits(head + "".join(blocks) + block + query):
            break
        blocks.append(block)
    return head + "".join(blocks) + query


def demonstrations(task: Task, instance: Instance, k: int) -> list[Example]:
    """The first ``k`` positive examples of ``task`` other than ``instance`` itself.

    A positive example that is being scored must never also be shown as its own demonstration.
    """
    if k <= 0:
        return []
    own = instance.origin == "positive_example"
    demos = [
        ex for ex in task.positive_examples
        if not (own and ex.input == instance.input and (ex.output,) == instance.outputs)
    ]
    return demos[:k]


def task_prompt(task: Task, instance: Instance, *, n_pos_examples: int = 0, add_explanation: bool = False,
                fits: Callable[[str], bool] | None = None, definition: bool = True) -> str:
    """Encode ``instance`` of ``task`` with its definition (unless ``definition=False``: the router-only
    condition, where the prompt holds the instance input alone) and ``n_pos_examples`` demonstrations."""
    return encode_prompt(task.definition if definition else "", instance.input,
                         demonstrations(task, instance, n_pos_examples), add_explanation=add_explanation, fits=fits)


def config_prompt(task: Task, instance: Instance, prompt: PromptConfig,
                  fits: Callable[[str], bool] | None = None) -> str:
    """The prompt of ``instance`` as the run's ``prompt`` config asks for it (condition, demonstrations);
    ``fits`` drops the demonstrations that would not fit (Tk-Instruct's rule, :func:`encode_prompt`)."""
    return task_prompt(task, instance, n_pos_examples=prompt.n_pos_examples, add_explanation=prompt.add_explanation,
                       definition=prompt.with_definition, fits=fits)


def fits_in(tokenizer: Callable, wrap: Callable[[str], str], max_tokens: int) -> Callable[[str], bool]:
    """``fits`` for :func:`config_prompt`: the wrapped prompt is at most ``max_tokens`` tokens. Without it a
    prompt longer than the limit loses its start — the Definition — where Tk-Instruct drops demonstrations
    instead (in the untrained backbone's in-context row, 9 of 80 prompts lost their Definition)."""
    return lambda text: len(tokenizer(wrap(text), add_special_tokens=False)["input_ids"]) <= max_tokens
