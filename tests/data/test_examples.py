"""promoe.data.examples: training examples are cut by the rule evaluation uses (demonstrations, then the input's
end, the Definition's start only as the last resort), and an example that fits is unchanged."""

from __future__ import annotations

from dataclasses import replace

from promoe.config import PromptConfig
from promoe.data.collate import IGNORE, encode_pair, encode_target
from promoe.data.examples import build_examples
from promoe.data.prompts import config_prompt, fits_in
from promoe.data.schema import Example, Instance
from promoe.model.backbone import byte_tokenizer
from promoe.model.prompting import chat_prompt
from tests.data.helpers import _task

DEFINITION = "Answer with the colour of the last thing named."


def _tasks():
    long_input = Instance("long", " ".join(f"word{j}" for j in range(80)) + " and a blue sky", ("blue",))
    short = Instance("short", "a green leaf", ("green",))
    colours = replace(_task("task001_colours"), definition=DEFINITION, instances=(long_input, short),
                      positive_examples=(Example("a red apple", "red"),))
    wordy = replace(_task("task002_wordy"), definition=" ".join(f"rule{j}" for j in range(120)) + " Say yes or no.",
                    instances=(Instance("q", "Is the sky blue?", ("yes",)),))
    return colours, wordy


def _prompt(tok, example) -> str:
    return tok.decode([i for i, label in zip(example.input_ids, example.labels, strict=True) if label == IGNORE])


def test_a_long_training_prompt_keeps_its_definition_and_chat_template() -> None:
    tok = byte_tokenizer("llama")
    wrap = lambda text: chat_prompt(tok, text)  # noqa: E731
    colours, wordy = _tasks()
    max_length = 400  # the long input's prompt is about 800 bytes, the wordy Definition alone about 900
    long, short, definition = build_examples([colours, wordy], tok, per_task=2, max_length=max_length,
                                             max_target_length=8, prompt=PromptConfig(n_pos_examples=1), wrap=wrap)
    for ex in (long, short, definition):
        assert len(ex.input_ids) <= max_length and _prompt(tok, ex).startswith("<|im_start|>")  # template whole
    assert (long.cut, long.shortened) == (False, "input")
    assert f"Definition: {DEFINITION}\n\n" in _prompt(tok, long) and "Positive Example" not in _prompt(tok, long)
    assert _prompt(tok, long).count("word") < 80
    assert [t for t in long.labels if t != IGNORE] == encode_target(tok, "blue", max_target_length=8)
    # the prompt is evaluation's prompt for the same room (one rule, fitted_prompt, for both)
    room = max_length - len(encode_target(tok, "blue", max_target_length=8))
    inst = colours.instances[0]
    assert _prompt(tok, long) == wrap(config_prompt(colours, inst, PromptConfig(n_pos_examples=1),
                                                    fits_in(tok, wrap, room)))
    assert (short.cut, short.shortened) == (False, "")
    # the last resort, counted: a Definition longer than the limit loses its start, the input is whole
    assert (definition.cut, definition.shortened) == (True, "definition")
    assert "rule0 " not in _prompt(tok, definition) and "Say yes or no.\n\n" in _prompt(tok, definition)
    assert "Input: Is the sky blue?\nOutput: " in _prompt(tok, definition)


def test_an_example_that_fits_is_unchanged() -> None:
    tok = byte_tokenizer("llama")
    wrap = lambda text: chat_prompt(tok, text)  # noqa: E731
    tasks = _tasks()
    prompt = PromptConfig(n_pos_examples=1)
    examples = build_examples(tasks, tok, per_task=2, max_length=4096, max_target_length=8, prompt=prompt, wrap=wrap)
    uncut = [encode_pair(tok, wrap(config_prompt(t, i, prompt)), i.outputs[0], max_length=4096, max_target_length=8)
             for t in tasks for i in t.instances]
    assert [(e.input_ids, e.labels) for e in examples] == [(tuple(e.input_ids), tuple(e.labels)) for e in uncut]
    assert not any(e.cut or e.shortened for e in examples)


def test_a_seq2seq_prompt_is_fitted_with_its_special_tokens() -> None:
    tok = byte_tokenizer("t5")  # appends </s> to the prompt
    colours, _ = _tasks()
    full = len(tok(config_prompt(colours, colours.instances[0], PromptConfig()))["input_ids"])
    (ex,) = build_examples([colours], tok, per_task=1, max_length=full - 100, max_target_length=8,
                           prompt=PromptConfig(), seq2seq=True)
    assert (ex.cut, ex.shortened) == (False, "input") and len(ex.input_ids) <= full - 100
    assert tok.decode(ex.input_ids).startswith(f"Definition: {DEFINITION}")
    assert ex.input_ids[-1] == tok.eos_token_id
