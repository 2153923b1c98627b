"""Tk-Instruct prompt encodings (definition only; definition + k positive examples).

The text layout follows Tk-Instruct's ``ni_collator.py`` (``Definition: …``, ``Positive Example i -``,
``Now complete the following example -``, ``Input: …``, ``Output:``), including its rule of ending
each field with a full stop when it does not end in punctuation. The chat-template wrapping of a
backbone is applied later, by the model code, around this text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

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


PromptCut = Literal["", "demonstrations", "input", "definition"]
"""What :func:`fit_prompt` cut to make a prompt fit, the last part reached: nothing, demonstrations only, the
input's end (after every demonstration), or the Definition's start (the last resort)."""


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt made to fit its length limit, and what was cut (:data:`PromptCut`)."""

    text: str
    cut: PromptCut = ""


def _longest(n: int, fits: Callable[[int], bool]) -> int | None:
    """The largest ``k`` in ``0..n`` with ``fits(k)`` (``fits`` is taken as monotone: true up to some ``k``), or
    None when not even ``fits(0)`` holds. A binary search: a few tokenisations per cut prompt."""
    if not fits(0):
        return None
    lo, hi = 0, n + 1  # fits(lo) holds; hi is past the end or does not fit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _cut_end(text: str, fits: Callable[[str], bool]) -> str | None:
    """The longest start of ``text`` that ``fits``, ending at a word's end (at a character where not even the first
    word fits); None when not even the empty text fits."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    k = _longest(len(ends), lambda k: fits(text[:ends[k - 1]] if k else ""))
    if k is None or k == len(ends):
        return None if k is None else text
    if k == 0:  # not even the first word: as many of its characters as fit
        k = _longest(ends[0], lambda c: fits(text[:c]))
        return text[:k]
    return text[:ends[k - 1]]


def _cut_start(text: str, fits: Callable[[str], bool]) -> str | None:
    """The longest end of ``text`` that ``fits``, starting at a word's start; None when not even the empty text
    fits."""
    text = text.strip()
    starts = [m.start() for m in re.finditer(r"\S+", text)][::-1]  # shortest end first
    k = _longest(len(starts), lambda k: fits(text[starts[k - 1]:] if k else ""))
    return None if k is None else text[starts[k - 1]:] if k else ""


def fit_prompt(
    definition: str,
    instance_input: str,
    examples: Sequence[Example] = (),
    *,
    add_explanation: bool = False,
    fits: Callable[[str], bool] | None = None,
) -> FittedPrompt:
    """The Tk-Instruct source text for one instance, made to fit: the one rule of training and evaluation.

    With ``fits=None`` every demonstration is added and nothing is cut. Otherwise, in this order, only as far as
    needed for ``fits(prompt)`` to hold:

    1. demonstrations are added in order while the prompt fits (Tk-Instruct drops the examples that would push it
       past the maximum source length; the first that does not fit ends the list);
    2. the input loses its end, at a word's end (Tk-Instruct's right-truncated source loses the same part);
    3. last resort, when the Definition does not fit even with an empty input: the Definition loses its start and
       the input is kept whole (an example without its input teaches and tests nothing, and the model's router
       sees the whole Definition anyway), down to no Definition at all; only when the input alone does not fit is
       it cut too.

    A prompt that fits is the same text as with ``fits=None`` (byte for byte). When not even the prompt's frame
    fits (``Definition:``, ``Now complete the following example -``, ``Output:``), the uncut prompt without
    demonstrations is returned with ``cut="definition"``: the caller's token-level cut of its start applies.
    """
    head, query = encode_definition(definition), encode_input(instance_input)
    blocks: list[str] = []
    for i, ex in enumerate(examples, 1):
        block = encode_example(ex, i, add_explanation=add_explanation)
        if fits is not None and not fits(head + "".join(blocks) + block + query):
            break
        blocks.append(block)
    text = head + "".join(blocks) + query
    if fits is None or blocks or fits(text):  # a kept demonstration was checked with the whole prompt
        return FittedPrompt(text, "demonstrations" if len(blocks) < len(examples) else "")
    if fits(head + encode_input("")):
        kept = _cut_end(instance_input, lambda s: fits(head + encode_input(s)))
        return FittedPrompt(head + encode_input(kept), "input")
    kept = _cut_start(definition, lambda d: fits(encode_definition(d) + query))
    if kept is not None:
        return FittedPrompt(encode_definition(kept) + query, "definition")
    kept = _cut_end(instance_input, lambda s: fits(encode_input(s)))
    return FittedPrompt(text if kept is None else encode_input(kept), "definition")


def encode_prompt(
    definition: str,
    instance_input: str,
    examples: Sequence[Example] = (),
    *,
    add_explanation: bool = False,
    fits: Callable[[str], bool] | None = None,
) -> str:
    """The Tk-Instruct source text for one instance; with ``fits``, made to fit as :func:`fit_prompt` says."""
    return fit_prompt(definition, instance_input, examples, add_explanation=add_explanation, fits=fits).text


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


def fitted_prompt(task: Task, instance: Instance, prompt: PromptConfig,
                  fits: Callable[[str], bool] | None = None) -> FittedPrompt:
    """The prompt of ``instance`` as the run's ``prompt`` config asks for it (condition, demonstrations), made to
    fit ``fits`` by :func:`fit_prompt`, with what was cut: training and evaluation both build prompts here."""
    return fit_prompt(task.definition if prompt.with_definition else "", instance.input,
                      demonstrations(task, instance, prompt.n_pos_examples), add_explanation=prompt.add_explanation,
                      fits=fits)


def config_prompt(task: Task, instance: Instance, prompt: PromptConfig,
                  fits: Callable[[str], bool] | None = None) -> str:
    """The text of :func:`fitted_prompt`."""
    return fitted_prompt(task, instance, prompt, fits).text


def fits_in(tokenizer: Callable, wrap: Callable[[str], str], max_tokens: int, *,
            add_special_tokens: bool = False) -> Callable[[str], bool]:
    """``fits`` for :func:`fit_prompt`: the wrapped prompt is at most ``max_tokens`` tokens (``add_special_tokens``
    as the caller tokenizes it). Without it a prompt longer than the limit loses its start — the chat template's
    start and the Definition (in the untrained backbone's in-context row, 9 of 80 prompts lost their Definition;
    at training, 239 of the default preset's 5,320 training prompts at train.max_length=512)."""
    return lambda text: len(tokenizer(wrap(text), add_special_tokens=add_special_tokens)["input_ids"]) <= max_tokens
