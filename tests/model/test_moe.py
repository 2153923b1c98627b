"""promoe.model.moe: the MoE layer equals transformers' Mixtral block given the same weights."""

from __future__ import annotations

import pytest
import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from promoe.model.experts import Experts
from promoe.model.moe import MoELayer
from promoe.model.router import TokenRouter
from tests.model.helpers import D_FF, D, E, K

pytestmark = pytest.mark.usefixtures("tiny_tensors")


def test_moe_layer_matches_hf_mixtral() -> None:
    cfg = MixtralConfig(hidden_size=D, intermediate_size=D_FF, num_local_experts=E, num_experts_per_tok=K,
                        router_jitter_noise=0.0)
    hf = MixtralSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(std=D**-0.5)
    router = TokenRouter(d_model=D, n_experts=E, top_k=K)
    experts = Experts(n_experts=E, d_model=D, d_ff=D_FF, act=cfg.hidden_act, gated=True)
    assert hf.experts.gate_up_proj.shape == experts.w_in.shape
    assert hf.experts.down_proj.shape == experts.w_out.shape
    with torch.no_grad():
        router.weight.copy_(hf.gate.weight)
        experts.w_in.copy_(hf.experts.gate_up_proj)  # [gate; up] along dim 1, like ours
        experts.w_out.copy_(hf.experts.down_proj)
    layer = MoELayer(experts=experts, router=router, layer=0).eval()
    x = torch.randn(3, 5, D)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], hf(x.clone()), atol=1e-6, rtol=1e-6)
