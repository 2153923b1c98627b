"""promoe.setup: one object wires backbone -> models -> prompt format -> description embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from promoe.config import load_config
from promoe.data.schema import Task
from promoe.errors import ConfigError
from promoe.model.prompting import chat_prompt
from promoe.setup import Setup
from promoe.training.trainer import save_trainable

pytestmark = pytest.mark.usefixtures("tiny_tensors")


@pytest.fixture(scope="module")
def setup() -> Setup:
    return Setup.load(load_config("smoke"))


def test_models_share_the_frozen_backbone_and_leave_it_unchanged(setup: Setup) -> None:
    before = {k: v.clone() for k, v in setup.backbone.model.state_dict().items()}
    moe, promoe = setup.model("moe"), setup.model("promoe")
    frozen = [n for n, p in moe.backbone.named_parameters() if not p.requires_grad]
    assert frozen
    source = dict(setup.backbone.model.named_parameters())
    shared = [n for n in frozen if n in source and moe.backbone.get_parameter(n) is source[n]]
    assert shared and all(promoe.backbone.get_parameter(n) is source[n] for n in shared)
    assert all(torch.equal(before[k], v) for k, v in setup.backbone.model.state_dict().items())
    assert promoe.hyper is not None and moe.hyper is None


def test_trained_weights_are_loaded_and_the_model_is_in_eval_mode(setup: Setup, tmp_path: Path) -> None:
    trained = setup.model("moe")
    with torch.no_grad():
        trained.moe_layers[0].router.weight.add_(1.0)
    save_trainable(trained, tmp_path / "best.safetensors")
    loaded = setup.model("moe", tmp_path / "best.safetensors")
    assert not loaded.training
    assert torch.equal(loaded.moe_layers[0].router.weight, trained.moe_layers[0].router.weight)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_specialised_experts_are_one_copy_in_memory(tmp_path: Path, freeze: bool) -> None:
    """Models over frozen specialised experts hold the same tensors; experts fine-tuned jointly get their own."""
    setup = Setup.load(load_config("smoke", ["experts.specialise=true", f"experts.freeze={str(freeze).lower()}"]))
    experts = setup.model("moe")
    with torch.no_grad():
        experts.moe_layers[0].experts.w_in.add_(1.0)
    save_trainable(experts, tmp_path / "experts.safetensors")
    moe, promoe = (setup.model(k, experts=tmp_path / "experts.safetensors") for k in ("moe", "promoe"))
    a, b = moe.moe_layers[0].experts.w_in, promoe.moe_layers[0].experts.w_in
    assert torch.equal(a, experts.moe_layers[0].experts.w_in) and torch.equal(b, a)
    assert (a.data_ptr() == b.data_ptr()) is freeze
    assert a.requires_grad is not freeze and moe.moe_layers[0].router.weight.requires_grad


def test_trained_models_score_with_eval_top_k(tmp_path: Path) -> None:
    """Trained with soft routing over every expert, scored sparsely; training models keep top_k."""
    setup = Setup.load(load_config("smoke", ["model.top_k=4", "model.eval_top_k=1"]))
    save_trainable(setup.model("moe"), tmp_path / "moe.safetensors")
    assert {m.router.top_k for m in setup.model("moe").moe_layers} == {4}  # to train
    assert {m.router.top_k for m in setup.model("moe", tmp_path / "moe.safetensors").moe_layers} == {1}
    save_trainable(setup.model("upcycled"), tmp_path / "up.safetensors")
    assert {m.router.top_k for m in setup.model("upcycled", tmp_path / "up.safetensors").moe_layers} == {1}
    with pytest.raises(ConfigError, match="model.eval_top_k"):
        load_config("smoke", ["model.eval_top_k=5"])


def test_prompt_format_and_embeddings(setup: Setup) -> None:
    assert setup.wrap("Say hi") == chat_prompt(setup.tokenizer, "Say hi") != "Say hi"
    tasks = [Task(name="b", definition="Second.", instances=()), Task(name="a", definition="First.", instances=())]
    emb = setup.embed_tasks(tasks)
    assert list(emb) == ["a", "b"]  # sorted: the batch does not depend on the order tasks come in
    torch.testing.assert_close(emb["a"], setup.encoder.encode(["First."])[0])
    assert setup.embed({}) == {}
