"""promoe.model.prompting: the chat template and the first line of an answer."""

from __future__ import annotations

import pytest

from promoe.model.backbone import byte_tokenizer
from promoe.model.prompting import answer_done, chat_prompt, first_line


def test_chat_prompt_uses_the_template_when_there_is_one() -> None:
    llama, t5 = byte_tokenizer("llama"), byte_tokenizer("t5")
    wrapped = chat_prompt(llama, "Say hi")
    assert wrapped == "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n"
    assert chat_prompt(t5, "Say hi") == "Say hi"


@pytest.mark.parametrize("text,expected", [
    ("\nYes\nmore", "Yes"), ("  answer  ", "answer"), ("\n \n\t\nlast ", "last"), ("", ""), ("\n\n", ""),
    ("one\ntwo", "one"),
    # an echoed field label is not the answer: the untrained backbone in context wrote "Output:\nE"
    ("Output:\nE\n", "E"), ("Output: E", "E"), (" answer : yes", "yes"), ("Outputs are fine", "Outputs are fine"),
    ("The output: 3", "The output: 3"),
])
def test_first_line(text: str, expected: str) -> None:
    assert first_line(text) == expected


@pytest.mark.parametrize("text,done", [
    ("", False), ("\n", False), ("Yes", False), ("Yes\n", True), ("Output:\n", False), ("Output:\nE", False),
    ("Output:\nE\n", True), ("\n\nOutput: E\nmore", True),
])
def test_decoding_stops_after_an_answer_line_not_after_a_label(text: str, done: bool) -> None:
    assert answer_done(text) is done
