"""Batched greedy generation of answers with a (MoE) model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from promoe.model.moe_model import MoEModel
from promoe.model.prompting import first_line


@torch.no_grad()
def generate_answers(model: MoEModel, tokenizer, prompts: Sequence[str], *, task_emb: Tensor | None = None,
                     task_keys: list[str] | None = None, max_new_tokens: int = 32,
                     max_length: int = 1024) -> list[str]:
    """Greedy answers (first non-empty line) for already chat-wrapped ``prompts``, one batch.

    ``task_emb`` (B, d_task) / ``task_keys`` give each prompt's task for proactive routing. Prompts
    longer than ``max_length`` tokens keep their end (the query and the generation prompt).
    """
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                    add_special_tokens=False)
    out = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], task_emb=task_emb,
                         task_keys=task_keys, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    return [first_line(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
