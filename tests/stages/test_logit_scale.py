"""promoe.stages.logit_scale: the spread of routing logits, split into the static part and the part the
description generates."""

from __future__ import annotations

import math

import torch

from promoe.config import PromptConfig
from promoe.data.examples import build_examples
from promoe.model.prompting import chat_prompt
from promoe.model.task_encoder import HashingEncoder
from promoe.stages.logit_scale import logit_scale, logit_scales
from promoe.stages.lower_cache import LowerCache
from promoe.training.trainer import val_key
from tests.helpers import _models, _tasks


def _setup(backbone):
    """Trained-looking dense, moe and promoe; two examples of each of three tasks; their description embeddings."""
    tok = backbone.tokenizer
    tasks = _tasks()
    examples = build_examples(tasks, tok, per_task=2, max_length=256, max_target_length=8, prompt=PromptConfig(),
                              wrap=lambda s: chat_prompt(tok, s))
    emb = dict(zip([t.name for t in tasks], HashingEncoder(16).encode([t.definition for t in tasks]), strict=True))
    return tok, _models(backbone), examples, emb


def test_generated_part_is_what_the_description_adds(backbone) -> None:
    tok, models, examples, emb = _setup(backbone)
    scales = logit_scales(models, examples, emb, tok.pad_token_id)
    assert set(scales) == {"moe", "promoe"}  # dense has no router
    moe, promoe = scales["moe"], scales["promoe"]
    assert moe["generated"] == 0 and math.isclose(moe["total"], moe["static"]) and moe["total"] > 0
    assert promoe["generated"] > 0 and promoe["examples"] == len(examples)
    assert len(promoe["per_layer"]["generated"]) == len(models["promoe"].moe_layers)
    louder = {t: 10 * e for t, e in emb.items()}  # a larger task embedding moves the generated part only
    again = logit_scale(models["promoe"], examples, louder, tok.pad_token_id)
    assert math.isclose(again["static"], promoe["static"], rel_tol=1e-5)
    assert again["generated"] != promoe["generated"]
    with torch.no_grad():  # a generator whose output layer is zero (as initialised) adds nothing
        for p in models["promoe"].hyper.parameters():
            p.zero_()
    assert logit_scale(models["promoe"], examples, emb, tok.pad_token_id)["generated"] == 0


def test_the_run_s_cached_lower_states_are_read_not_run_again(backbone) -> None:
    tok, models, examples, emb = _setup(backbone)
    plain = logit_scales(models, examples, emb, tok.pad_token_id)
    lower = LowerCache()
    cached = logit_scales(models, examples, emb, tok.pad_token_id, lower)
    assert set(lower.store) == {val_key(k) for k in range(len(examples))}  # validation examples' keys
    for name in plain:
        for part in ("total", "static", "generated"):
            assert math.isclose(cached[name][part], plain[name][part], rel_tol=1e-4, abs_tol=1e-6)
    for k in lower.store:  # what it reads is the cache: other cached states give another spread
        lower.store[k] = lower.store[k] * 2
    assert not math.isclose(logit_scale(models["moe"], examples, emb, tok.pad_token_id, lower)["total"],
                            plain["moe"]["total"], rel_tol=1e-3)
