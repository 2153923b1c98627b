"""Tiny models and references shared by the model-layer tests.

Every backbone is a randomly initialised tiny Hugging Face model built in the test (no downloads).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.activations import ACT2FN

from promoe.config import ModelConfig
from promoe.model.build import build_model
from promoe.model.experts import Experts
from promoe.model.moe_model import MoEModel

D, D_FF, E, K, D_TASK, VOCAB = 32, 64, 4, 2, 16, 100


MODES = ("hyper", "prior", "task")


VARIANTS = [("dense", "prior"), ("moe", "prior")] + [("promoe", m) for m in MODES]


# -- tiny backbones -------------------------------------------------------------------------------

def tiny_llama() -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=D_FF, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def tiny_t5(ff: str = "gated-gelu") -> T5ForConditionalGeneration:
    cfg = T5Config(vocab_size=VOCAB, d_model=D, d_ff=D_FF, d_kv=8, num_layers=2, num_decoder_layers=2,
                   num_heads=4, feed_forward_proj=ff, decoder_start_token_id=0, pad_token_id=0)
    return T5ForConditionalGeneration(cfg).eval()


def bert_config(act: str = "gelu") -> BertConfig:
    return BertConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=D_FF, num_hidden_layers=2,
                      num_attention_heads=4, hidden_act=act)


def tiny_bert(act: str = "gelu") -> BertModel:
    return BertModel(bert_config(act)).eval()


def model_cfg(**kw) -> ModelConfig:
    """A tiny MoE config: 2 MoE layers of 4 experts, top-2, small hypernetwork."""
    base = dict(n_moe_layers=2, n_experts=E, top_k=K, d_task=D_TASK, d_hyper=32, d_layer=8, hyper_rank=4)
    return ModelConfig(**{**base, **kw})


def build(base: nn.Module, family: str, kind: str, mode: str = "prior", **kw) -> MoEModel:
    return build_model(copy.deepcopy(base), family, model_cfg(proactive_mode=mode, **kw), kind).eval()


def left_padded(b: int = 3, t: int = 6) -> tuple[Tensor, Tensor]:
    """Random ids and a left-padded attention mask (row i has i padding positions)."""
    ids = torch.randint(1, VOCAB, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    for i in range(b):
        mask[i, :i] = 0
    return ids, mask


# -- references -----------------------------------------------------------------------------------

def ref_experts(ex: Experts, x: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """Naive per-token reference: ``sum_k w_k * expert(indices_k)(x)`` from the raw parameters."""
    act = ACT2FN[ex.act_name]
    rows = []
    for n in range(x.shape[0]):
        y = torch.zeros_like(x[n])
        for j in range(indices.shape[1]):
            e = int(indices[n, j])
            h = F.linear(x[n], ex.w_in[e], None if ex.b_in is None else ex.b_in[e])
            if ex.gated:
                gate, up = h.chunk(2, dim=-1)
                h = act(gate) * up
            else:
                h = act(h)
            y = y + weights[n, j] * F.linear(h, ex.w_out[e], None if ex.b_out is None else ex.b_out[e])
        rows.append(y)
    return torch.stack(rows)


def grads(fn: Callable[[], Tensor], params: list[Tensor]) -> list[Tensor]:
    """Gradients of ``sum(fn()**2)`` with respect to ``params``."""
    for p in params:
        p.grad = None
    fn().pow(2).sum().backward()
    return [p.grad.clone() for p in params]


# -- task-level (row) routing ---------------------------------------------------------------------

def experts(gated: bool = True, bias: bool = False) -> Experts:
    ex = Experts(n_experts=E, d_model=D, d_ff=12, act="silu" if gated else "gelu", gated=gated, bias=bias).double()
    if bias:
        with torch.no_grad():
            ex.b_in.normal_()
            ex.b_out.normal_()
    return ex


def per_token(x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor):
    """Row routing (B, k) repeated for each of the row's T tokens, flattened as the token path takes it."""
    t = x.shape[1]
    return x.reshape(-1, x.shape[-1]), indices.repeat_interleave(t, 0), weights.repeat_interleave(t, 0)
