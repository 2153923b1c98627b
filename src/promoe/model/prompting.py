"""The backbone-specific wrapping of a prompt, and the reading of a generated answer.

The data layer builds a plain Tk-Instruct prompt; instruction-tuned backbones (SmolLM2) answer it far
better inside their chat template, and often start the answer with a newline, so evaluation keeps the
first non-empty line of the output.
"""

from __future__ import annotations

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


def first_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped ("" when there is none)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""
