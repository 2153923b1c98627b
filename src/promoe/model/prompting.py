"""The backbone-specific wrapping of a prompt, and the reading of a generated answer.

The data layer builds a plain Tk-Instruct prompt; instruction-tuned backbones (SmolLM2) answer it far
better inside their chat template, often start the answer with a newline, and sometimes echo the prompt's
``Output:`` label (in context, after the demonstrations' ``Output: …`` lines, 6 of 80 answers of the
untrained backbone began so), so evaluation keeps the first line with content once such a label is removed.
"""

from __future__ import annotations

import re

from transformers import PreTrainedTokenizerBase


def chat_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """``text`` as one user message in the tokenizer's chat template, ending with the assistant's turn.

    Tokenizers without a chat template (T5, BERT) get ``text`` unchanged. The template already holds
    any special tokens it needs; the llama-family tokenizers used here (SmolLM2, tiny-llama) add none
    when the result is tokenized, so it can be tokenized with the default settings.
    """
    if not getattr(tokenizer, "chat_template", None):
        return text
    out = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=False)
    if not isinstance(out, str):  # some versions return a list for a single conversation
        out = out[0]
    return out


LABEL = re.compile(r"^\s*(?:output|answer)\s*:\s*", re.IGNORECASE)
"""A field label the model echoes from the prompt's ``Output:`` (and the demonstrations' ``Output: …``) before
its answer; it is not part of the answer."""


def _content(line: str) -> str:
    return LABEL.sub("", line, count=1).strip()


def first_line(text: str) -> str:
    """The answer in generated ``text``: its first line with content once a leading ``Output:`` / ``Answer:``
    label is removed, stripped ("" when there is none). A model that writes ``Output:`` on a line of its own
    and the answer on the next is read as answering."""
    for line in text.splitlines():
        if content := _content(line):
            return content
    return ""


def answer_done(text: str) -> bool:
    """True once generated ``text`` holds a finished answer line: a line with content (:func:`first_line`)
    followed by a newline. Decoding of a row stops there."""
    return any(_content(line) for line in text.split("\n")[:-1])
