"""The frozen lower layers in bf16 (``model.dtype``): what they store and compute, what they leave alone."""

from __future__ import annotations

import copy

import pytest
import torch

from promoe.config import ExperimentConfig, ModelConfig
from promoe.errors import ConfigError
from promoe.model.precision import layers_in_bf16, resolve
from promoe.setup import Setup
from tests.model.helpers import VOCAB, tiny_llama


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(5, VOCAB, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding: the additive mask holds the dtype's most negative value
    mask[2, :11] = 0
    return ids, mask


def test_lower_layers_store_bf16_and_hand_fp32_on_close_to_the_fp32_model() -> None:
    torch.manual_seed(0)
    model = tiny_llama()
    ref = copy.deepcopy(model)
    names = [n for n, _ in model.named_parameters()]
    assert layers_in_bf16(list(model.model.layers[:2])) == 2
    assert layers_in_bf16(list(model.model.layers[:2])) == 0  # idempotent
    assert [n for n, _ in model.named_parameters()] == names  # hooks, not wrappers: same names
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(dtypes[n] == torch.bfloat16 for n in names if n.startswith(("model.layers.0.", "model.layers.1.")))
    assert all(dtypes[n] == torch.float32 for n in names if not n.startswith(("model.layers.0.", "model.layers.1.")))
    assert not any(p.requires_grad for p in model.model.layers[0].parameters())
    ids, mask = _batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
        got = model(input_ids=ids, attention_mask=mask).logits
        hidden = model.model.layers[0](model.model.embed_tokens(ids), position_embeddings=model.model.rotary_emb(
            model.model.embed_tokens(ids), torch.arange(12)[None]))
    assert got.dtype == torch.float32 and (hidden if torch.is_tensor(hidden) else hidden[0]).dtype == torch.float32
    assert torch.isfinite(got).all()  # a fully masked padding row stays finite
    keep = mask.bool()
    rel = (got - want)[keep].norm(dim=-1) / want[keep].norm(dim=-1)
    assert 0 < rel.max() < 0.05  # rounded, not broken
    twin = copy.deepcopy(model)  # a copy keeps the hooks
    with torch.no_grad():
        assert torch.equal(twin(input_ids=ids, attention_mask=mask).logits, got)


def test_generation_runs_with_a_bf16_attention_cache_below_fp32_layers() -> None:
    torch.manual_seed(0)
    model = tiny_llama()
    layers_in_bf16(list(model.model.layers[:3]))
    ids, mask = _batch()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (3, 16)


def test_auto_is_bf16_only_where_it_is_native(monkeypatch) -> None:
    import promoe.model.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert resolve("auto") == torch.float32 and resolve("bf16") == torch.bfloat16
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert resolve("auto") == torch.bfloat16 and resolve("fp32") == torch.float32


def test_setup_converts_the_frozen_part_below_the_first_moe_layer_only() -> None:
    cfg = ExperimentConfig(model=ModelConfig(backbone="tiny-llama", n_moe_layers=1, n_experts=2, top_k=1,
                                             task_encoder="hashing", d_task=16, d_hyper=8, dtype="bf16"))
    setup = Setup.load(cfg)
    assert setup.lower_dtype == "bf16"
    layers = setup.backbone.model.model.layers
    assert all(p.dtype == torch.bfloat16 for layer in layers[:-1] for p in layer.parameters())
    assert all(p.dtype == torch.float32 for p in layers[-1].parameters())
    model = setup.model("promoe")  # built on a copy that shares the bf16 tensors
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    ids, mask = _batch()
    assert model.lower_hidden(ids, mask).dtype == torch.float32
    fp32 = Setup.load(ExperimentConfig(model=ModelConfig(backbone="tiny-llama", n_moe_layers=1, dtype="fp32")))
    assert fp32.lower_dtype == "fp32"
    assert all(p.dtype == torch.float32 for p in fp32.backbone.model.parameters())


def test_bf16_needs_a_frozen_lower_part() -> None:
    with pytest.raises(ConfigError, match="model.dtype"):
        ExperimentConfig(model=ModelConfig(backbone="tiny-llama", dtype="bf16", freeze_lower=False)).validate()
