"""promoe.model.upcycle: experts carved from a dense FFN, and upcycled models that reproduce their backbone.

Parity checks against the dense FFN or the untouched backbone (llama, t5, bert), never golden floats.
"""

from __future__ import annotations

import pytest
import torch
from transformers import BertForMaskedLM

from promoe.model.experts import Experts
from promoe.model.moe import MoELayer
from promoe.model.moe_model import MODEL_KINDS, ModelOutput
from promoe.model.router import UniformRouter
from promoe.model.upcycle import ADAPTERS, experts_from_ffn
from tests.model.helpers import (
    D_FF,
    D_TASK,
    VARIANTS,
    VOCAB,
    D,
    bert_config,
    build,
    left_padded,
    tiny_bert,
    tiny_llama,
    tiny_t5,
)

pytestmark = pytest.mark.usefixtures("tiny_tensors")


# -- one expert equals the dense FFN -----------------------------------------------------------

def dense_moe(experts: Experts) -> MoELayer:
    return MoELayer(experts=experts, router=UniformRouter(d_model=D, n_experts=experts.n_experts, top_k=1),
                    layer=0)


def test_one_expert_moe_equals_llama_mlp() -> None:
    """A 1-expert MoE and the width-k dense baseline (``mix=k``) both equal the copied LlamaMLP."""
    base = tiny_llama()
    slot = base.model.layers[0]
    ffn = ADAPTERS["llama"].read(slot, base.config)
    x = torch.randn(2, 5, D)
    expected = slot.mlp(x)
    for mix in (1, 2, 3):
        experts = experts_from_ffn(ffn, n_experts=1, mix=mix)
        assert experts.d_ff == mix * D_FF
        y, info = dense_moe(experts)(x)
        torch.testing.assert_close(y, expected)
        assert torch.all(info.router.indices == 0) and torch.all(info.router.weights == 1)


def test_carved_experts_average_to_ffn() -> None:
    """Slices of the FFN: averaging a full carving, or one expert of ``mix`` slices covering d_ff, is the FFN."""
    base = tiny_llama()
    slot = base.model.layers[1]
    ffn = ADAPTERS["llama"].read(slot, base.config)
    x = torch.randn(2, 5, D)
    expected = slot.mlp(x)
    carved = experts_from_ffn(ffn, n_experts=4, width=D_FF // 4)
    torch.testing.assert_close(dense_moe(carved)(x)[0], expected)
    torch.testing.assert_close(dense_moe(experts_from_ffn(ffn, n_experts=1, width=D_FF // 2, mix=2))(x)[0],
                               expected)
    with pytest.raises(ValueError, match="exceeds"):
        experts_from_ffn(ffn, n_experts=2, width=D_FF + 1)


def test_residual_experts_beside_a_shared_expert_start_as_the_ffn_and_then_differ() -> None:
    """``model.shared_expert``: the pretrained FFN kept whole; the routed experts add nothing at first, each
    from its own neurons, so that one gradient step moves them apart."""
    base = tiny_llama()
    model = build(base, "llama", "moe", shared_expert=True, expert_width=D_FF // 4)
    ids, mask = left_padded()
    with torch.no_grad():
        ref = base(input_ids=ids, attention_mask=mask).logits
        out = model(ids, attention_mask=mask)
    torch.testing.assert_close(out.logits[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)
    layer = model.moe_layers[0]
    assert layer.shared.d_ff == D_FF and layer.experts.d_ff == D_FF // 4 and not layer.experts.w_out.any()
    x = torch.randn(5, D)
    torch.testing.assert_close(layer.expert(1, x), layer.shared.expert(0, x))
    assert not torch.equal(layer.experts.w_in[0], layer.experts.w_in[1])  # different neurons: they will differ
    layer.experts.w_out.data.normal_()
    assert not torch.allclose(layer.expert(0, x), layer.expert(1, x))


# -- upcycling reproduces the backbone ---------------------------------------------------------

@pytest.mark.parametrize(("kind", "mode"), VARIANTS)
def test_upcycled_llama_reproduces_backbone(kind: str, mode: str) -> None:
    base = tiny_llama()
    model = build(base, "llama", kind, mode)
    ids, mask = left_padded()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, task_emb=torch.randn(3, D_TASK))
        ref = base(input_ids=ids, attention_mask=mask).logits
    assert isinstance(out, ModelOutput) and len(out.routing) == 2
    keep = mask.bool()
    torch.testing.assert_close(out.logits[keep], ref[keep], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ff", ["gated-gelu", "relu", "gated-silu"])
@pytest.mark.parametrize(("kind", "mode"), VARIANTS)
def test_upcycled_t5_reproduces_backbone(ff: str, kind: str, mode: str) -> None:
    base = tiny_t5(ff)
    model = build(base, "t5", kind, mode, n_moe_layers=3)  # 1 encoder + 2 decoder FFNs
    ids, mask = left_padded()
    labels = torch.randint(1, VOCAB, (3, 4))
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=labels, task_emb=torch.randn(3, D_TASK))
        ref = base(input_ids=ids, attention_mask=mask, labels=labels)
    assert len(out.routing) == 3
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.lm_loss, ref.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("kind", "mode"), VARIANTS)
def test_upcycled_bert_reproduces_backbone(kind: str, mode: str) -> None:
    """BertModel has no logits: compare ``last_hidden_state`` through ``model.backbone`` (static part)."""
    base = tiny_bert()
    model = build(base, "bert", kind, mode)
    ids, mask = left_padded()
    with torch.no_grad():
        model.context.task = model.task_routing(torch.randn(3, D_TASK))
        got = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        model.context.task, model.context.records = None, []
        ref = base(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_upcycled_bert_mlm_reproduces_backbone(kind: str) -> None:
    """Through ``MoEModel.forward`` for a BERT with an LM head (which does return logits)."""
    base = BertForMaskedLM(bert_config()).eval()
    model = build(base, "bert", kind)
    ids, mask = left_padded()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, task_emb=torch.randn(3, D_TASK))
        ref = base(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", ["relu", "silu"])
def test_upcycled_bert_keeps_activation(act: str) -> None:
    """The experts must use the backbone's ``hidden_act``, not a hard-coded GELU (gelu_new is too close to tell)."""
    base = tiny_bert(act)
    model = build(base, "bert", "moe")
    ids, mask = left_padded()
    with torch.no_grad():
        got = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        ref = base(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
