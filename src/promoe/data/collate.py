"""Turn (prompt, target) pairs into padded model batches.

Causal LMs see ``prompt + target + eos`` with the loss on the target only (labels ``-100`` on the
prompt and padding); seq2seq models see the prompt as encoder input and the target as labels. A
prompt too long for ``max_length`` loses tokens from its *start*, so the query and the generation
prompt at its end survive; every truncation is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100


@dataclass
class Batch:
    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    labels: Tensor  # (B, T) causal, (B, T_out) seq2seq
    task_keys: list[str]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: int  # prompt tokens dropped


def encode_target(tokenizer, target: str, *, max_target_length: int = 64) -> list[int]:
    """A target's token ids as the model learns and is scored on it: its first ``max_target_length - 1`` tokens
    (all of them without an EOS token) and EOS."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return tokenizer(target, add_special_tokens=False)["input_ids"][: max_target_length - len(eos)] + eos


def encode_pair(tokenizer, prompt: str, target: str, *, max_length: int, seq2seq: bool = False,
                max_target_length: int = 64) -> Encoded:
    """Token ids and labels of one training example (see module docstring)."""
    p = tokenizer(prompt, add_special_tokens=seq2seq)["input_ids"]
    t = encode_target(tokenizer, target, max_target_length=max_target_length)
    if seq2seq:
        cut = max(0, len(p) - max_length)
        return Encoded(p[cut:], t, cut)
    cut = max(0, len(p) + len(t) - max_length)
    p = p[cut:]
    return Encoded(p + t, [IGNORE] * len(p) + t, cut)


def pad_batch(encoded: Sequence[Encoded], task_keys: list[str], *, pad_id: int, left: bool = True,
              seq2seq: bool = False) -> Batch:
    """Pad to the longest example (left padding for causal models, as generation needs)."""
    n = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), n), dtype=torch.long)
    n_lab = max(len(e.labels) for e in encoded) if seq2seq else n
    labels = torch.full((len(encoded), n_lab), IGNORE, dtype=torch.long)
    for i, e in enumerate(encoded):
        k = len(e.input_ids)
        sl = slice(n - k, n) if left else slice(0, k)
        ids[i, sl] = torch.tensor(e.input_ids)
        mask[i, sl] = 1
        if seq2seq:
            labels[i, : len(e.labels)] = torch.tensor(e.labels)
        else:
            labels[i, sl] = torch.tensor(e.labels)
    return Batch(ids, mask, labels, task_keys)
