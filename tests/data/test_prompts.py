"""promoe.data.prompts: the Tk-Instruct prompt layout, the length check, demonstrations, the router-only
condition."""

from __future__ import annotations

from dataclasses import replace

import pytest

from promoe.config import PromptConfig, load_config
from promoe.data.prompts import (
    FittedPrompt,
    config_prompt,
    demonstrations,
    encode_prompt,
    fits_in,
    fitted_prompt,
    shown_input,
    task_prompt,
)
from promoe.data.schema import Example, Instance
from promoe.data.sources import positive_example_instances
from promoe.errors import ConfigError
from promoe.model.backbone import byte_tokenizer
from tests.data.helpers import _task


def test_prompt_definition_only_layout() -> None:
    assert encode_prompt("Answer yes or no", "Is it?") == (
        "Definition: Answer yes or no.\n\n"
        "Now complete the following example -\n"
        "Input: Is it?\n"
        "Output: "
    )
    assert encode_prompt("  Answer yes or no!  ", "  it is  ") == (
        "Definition: Answer yes or no!\n\nNow complete the following example -\nInput: it is.\nOutput: "
    )
    assert encode_prompt("", "x") == "Now complete the following example -\nInput: x.\nOutput: "


def test_prompt_with_positive_examples_layout() -> None:
    assert encode_prompt("Answer yes or no", "Is it?", [Example("a", "b")]) == (
        "Definition: Answer yes or no.\n\n"
        " Positive Example 1 -\nInput: a.\n Output: b.\n\n"
        "Now complete the following example -\nInput: Is it?\nOutput: "
    )
    two = encode_prompt("D.", "q", [Example("a?", "b!", "c"), Example("x", "y", "because")],
                        add_explanation=True)
    assert two == (
        "Definition: D.\n\n"
        " Positive Example 1 -\nInput: a?\n Output: b!\n Explanation: c.\n\n"
        " Positive Example 2 -\nInput: x.\n Output: y.\n Explanation: because.\n\n"
        "Now complete the following example -\nInput: q.\nOutput: "
    )
    no_expl = encode_prompt("D.", "q", [Example("x", "y", "because")])
    assert "Explanation" not in no_expl


def test_fits_stops_adding_examples() -> None:
    examples = [Example("a", "b"), Example("c", "d"), Example("e", "f")]
    none = encode_prompt("D", "q")
    one = encode_prompt("D", "q", examples[:1])
    seen: list[str] = []

    def fits(prompt: str) -> bool:
        seen.append(prompt)
        return len(prompt) <= len(one)

    assert encode_prompt("D", "q", examples, fits=fits) == one
    assert len(seen) == 2  # checked the 1st (fits) and the 2nd (does not), never the 3rd
    assert encode_prompt("D", "q", examples, fits=lambda p: False) == none
    # the first example that does not fit ends the list, even if a later, shorter one would fit
    long_first = [Example("x" * 100, "y"), Example("a", "b")]
    assert encode_prompt("D", "q", long_first, fits=lambda p: len(p) <= len(one)) == none
    assert encode_prompt("D", "q", examples, fits=lambda p: True) == encode_prompt("D", "q", examples)


def test_demonstrations_never_show_the_scored_example() -> None:
    task = _task("task001_demo", pos=3)
    pos_instances = positive_example_instances(task)
    assert [i.origin for i in pos_instances] == ["positive_example"] * 3
    for j, inst in enumerate(pos_instances):
        demos = demonstrations(task, inst, 5)
        own = task.positive_examples[j]
        assert own not in demos and len(demos) == 2
        prompt = task_prompt(task, inst, n_pos_examples=5)
        assert f"Input: {own.input}.\n Output: {own.output}." not in prompt
        assert prompt.endswith(f"Input: {own.input}.\nOutput: ")
    real = task.instances[0]
    assert demonstrations(task, real, 2) == list(task.positive_examples[:2])
    assert demonstrations(task, real, 0) == [] and demonstrations(task, pos_instances[0], 0) == []
    # same text but a real instance: the example may still be shown
    lookalike = Instance("x", task.positive_examples[0].input, (task.positive_examples[0].output,))
    assert demonstrations(task, lookalike, 1) == [task.positive_examples[0]]


def test_router_only_prompt_holds_the_input_alone() -> None:
    task = _task("task001_demo", pos=2)
    inst = task.instances[0]
    standard = config_prompt(task, inst, PromptConfig())
    router_only = config_prompt(task, inst, PromptConfig(condition="router_only"))
    assert standard.startswith(f"Definition: {task.definition}")
    assert router_only == f"Now complete the following example -\nInput: {inst.input}.\nOutput: "
    assert "Definition" not in router_only and task.definition not in router_only
    assert standard.endswith(router_only)  # the same query, only the Definition is gone


def test_router_only_refuses_demonstrations_and_in_context_rows() -> None:
    with pytest.raises(ConfigError, match="prompt.n_pos_examples"):
        load_config("smoke", ["prompt.condition=router_only", "prompt.n_pos_examples=2"])
    with pytest.raises(ConfigError, match="compare.icl_models"):
        load_config("smoke", ["prompt.condition=router_only", "compare.router_only_models=[]"])
    cfg = load_config("smoke", ["prompt.condition=router_only", "compare.icl_models=[]",
                                "compare.router_only_models=[]"])
    assert not cfg.prompt.with_definition


def test_a_long_in_context_prompt_drops_demonstrations_not_its_definition() -> None:
    # as Tk-Instruct: demonstrations that would push the prompt past the limit are left out; cutting the
    # prompt's start instead would lose the Definition
    tok = byte_tokenizer("llama")
    task = replace(_task("task001_colours"), definition="Answer with the colour.",
                   positive_examples=(Example("x" * 300, "red"), Example("short", "blue")))
    inst = Instance("i", "what colour?", ("red",))
    prompt = PromptConfig(n_pos_examples=2)
    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    full, bare = config_prompt(task, inst, prompt), config_prompt(task, inst, PromptConfig())
    # the first demonstration (300 characters) does not fit: it and every later one are left out
    kept = config_prompt(task, inst, prompt, fits_in(tok, lambda t: t, n(bare) + 50))
    assert kept == bare and kept.startswith("Definition: Answer with the colour.")
    assert config_prompt(task, inst, prompt, fits_in(tok, lambda t: t, n(full))) == full


# --------------------------------------------------------------------------------------------------
# fit_prompt: the one rule of training and evaluation for a prompt too long for its limit

def _long_input_task():
    task = replace(_task("task001_colours"), definition="Answer with the colour of the last thing named.",
                   positive_examples=(Example("a red apple", "red"),))
    return task, Instance("i", " ".join(f"word{j}" for j in range(60)) + " and a blue sky", ("blue",))


def _n_tokens(tok, wrap=lambda t: t):
    return lambda text: len(tok(wrap(text), add_special_tokens=False)["input_ids"])


def test_a_long_input_loses_its_end_not_the_definition() -> None:
    tok = byte_tokenizer("llama")
    n = _n_tokens(tok)
    task, inst = _long_input_task()
    limit = n(config_prompt(task, inst, PromptConfig())) - 40
    fitted = fitted_prompt(task, inst, PromptConfig(n_pos_examples=1), fits_in(tok, lambda t: t, limit))
    assert fitted.cut == "input" and n(fitted.text) <= limit
    assert fitted.text.startswith("Definition: Answer with the colour of the last thing named.\n\n")
    assert "Positive Example" not in fitted.text  # the demonstration went first
    kept = fitted.text.split("Input: ")[1].removesuffix(".\nOutput: ")
    assert inst.input.startswith(kept) and inst.input[len(kept)] == " "  # the input's start, at a word's end
    assert fitted.text.endswith(".\nOutput: ")
    # the same rule through config_prompt (evaluation) and encode_prompt
    assert config_prompt(task, inst, PromptConfig(n_pos_examples=1), fits_in(tok, lambda t: t, limit)) == fitted.text


def test_a_definition_longer_than_the_limit_keeps_its_end_and_the_whole_input() -> None:
    # the last resort: the Definition alone does not fit, so it loses its start; the input stays whole
    tok = byte_tokenizer("llama")
    n = _n_tokens(tok)
    task = replace(_task("task001_long"), definition=" ".join(f"rule{j}" for j in range(80)) + " Answer yes or no.")
    inst = Instance("i", "Is the sky blue?", ("yes",))
    limit = n(encode_prompt(task.definition, "")) - 30
    fitted = fitted_prompt(task, inst, PromptConfig(), fits_in(tok, lambda t: t, limit))
    assert fitted.cut == "definition" and n(fitted.text) <= limit
    assert fitted.text.startswith("Definition: rule") and "Answer yes or no.\n\n" in fitted.text
    assert "rule0 " not in fitted.text
    assert fitted.text.endswith("Input: Is the sky blue?\nOutput: ")
    # nothing fits, not even the frame: the uncut prompt, counted; the caller's token cut applies
    bare = fitted_prompt(task, inst, PromptConfig(), lambda text: False)
    assert bare == FittedPrompt(config_prompt(task, inst, PromptConfig()), "definition")


def test_a_prompt_that_fits_is_byte_identical() -> None:
    tok = byte_tokenizer("llama")
    task, inst = _long_input_task()
    for prompt in (PromptConfig(), PromptConfig(n_pos_examples=1), PromptConfig(condition="router_only")):
        whole = config_prompt(task, inst, prompt)
        fitted = fitted_prompt(task, inst, prompt, fits_in(tok, lambda t: t, _n_tokens(tok)(whole)))
        assert fitted == FittedPrompt(whole, "")


def test_shown_input_is_the_input_as_a_prompt_shows_it() -> None:
    assert shown_input("  How are\n you  ") == shown_input("How are you.") == "Input: How are you."
    assert shown_input("How are you?") != shown_input("How are you")
    assert f"{shown_input('a  b')}\n" in encode_prompt("D", "a b")
