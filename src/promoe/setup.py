"""What every use of the models starts from: the backbone, the models built on it, the prompt format
and the task-description encoder — loaded once.

The run, ``promoe eval / predict / export``, ``promoe model check`` and the benchmarks all make a
:class:`Setup` from a config and ask it for models and embeddings, so the steps (backbone → upcycled
model → chat-template wrapping → description embeddings) are written once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from promoe import registry
from promoe.config import ExperimentConfig, ModelConfig
from promoe.data.schema import Task
from promoe.model.backbone import Backbone, load_backbone
from promoe.model.build import build_model, moe_slots, share_frozen_weights
from promoe.model.moe_model import MoEModel
from promoe.model.precision import layers_in_bf16, resolve
from promoe.model.prompting import chat_prompt
from promoe.model.task_encoder import TaskEncoder, build_task_encoder
from promoe.model.upcycle import ADAPTERS
from promoe.training.trainer import load_params, load_trainable

SPECIALISED = ("moe", "promoe")
"""The models that learn their routers over specialised experts when ``experts.specialise`` is on."""


@dataclass
class Setup:
    """The backbone (kept unmodified unless a model is built with ``share=False``), the description
    encoder (loaded on first use) and the prompt format of ``cfg``."""

    cfg: ExperimentConfig
    backbone: Backbone
    frozen_experts: dict[Path, dict[str, Tensor]] = field(default_factory=dict)
    """Frozen specialised experts by checkpoint: the tensors every model built on them holds (one copy in memory)."""
    lower_dtype: str = "fp32"
    """What the frozen lower layers compute in (``model.dtype`` resolved here: :mod:`promoe.model.precision`)."""

    @classmethod
    def load(cls, cfg: ExperimentConfig) -> Setup:
        """The backbone of ``cfg``, with the MoE positions checked against it (one error, before any work)."""
        backbone = load_backbone(cfg.model, seed=cfg.seed)
        layers = ADAPTERS[backbone.family].slots(backbone.model)
        first = moe_slots(cfg.model, len(layers))[0]
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if cfg.model.freeze_lower and ADAPTERS[backbone.family].decoder_only(backbone.model) \
                and resolve(cfg.model.dtype, device) == torch.bfloat16:
            layers_in_bf16(layers[:first])  # before any model is built: every copy shares them (model.precision)
            return cls(cfg, backbone, lower_dtype="bf16")
        return cls(cfg, backbone)

    @cached_property
    def encoder(self) -> TaskEncoder:
        return build_task_encoder(self.cfg.model)

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    @property
    def seq2seq(self) -> bool:
        return self.backbone.is_seq2seq

    def wrap(self, text: str) -> str:
        """A Tk-Instruct prompt as the backbone reads it (its chat template; seq2seq models: as is)."""
        return text if self.seq2seq else chat_prompt(self.tokenizer, text)

    def model(self, kind: str, weights: str | Path | None = None, *, share: bool = True,
              model_cfg: ModelConfig | None = None, experts: str | Path | None = None) -> MoEModel:
        """Model ``kind`` (``dense``, ``moe``, ``promoe``, or a model row of another architecture such as
        ``upcycled``, :func:`promoe.registry.arch`) upcycled from the backbone, with the trained
        ``weights`` (a ``best.safetensors``) when given. ``share``: build on a copy of the backbone
        whose frozen tensors are the backbone's own (many models, one frozen part in memory);
        otherwise the backbone itself is converted (one model per setup, no copy). ``model_cfg``
        replaces the config's ``model`` section (e.g. another proactive mode). ``experts``: the
        specialised experts' checkpoint (:func:`load_specialised`), loaded before ``weights``. A model with
        ``weights`` is for scoring: it routes with ``model.eval_top_k`` experts when that is set
        (:meth:`MoEModel.for_scoring`)."""
        base = copy.deepcopy(self.backbone.model) if share else self.backbone.model
        model = build_model(base, self.backbone.family, model_cfg or self.cfg.model, registry.arch(kind),
                            seed=self.cfg.seed)
        if share:
            share_frozen_weights(model, self.backbone.model)
        if experts is not None:
            names = load_specialised(model, Path(experts), freeze=self.cfg.experts.freeze)
            if self.cfg.experts.freeze:  # never trained again: every model over them holds the same tensors
                shared = self.frozen_experts.setdefault(Path(experts).resolve(), {})
                for n in names:
                    p = model.get_parameter(n)
                    p.data = shared.setdefault(n, p.data)
        if weights is not None:  # a trained model, to be scored: with the scoring top-k
            load_trainable(model, Path(weights))
            model.for_scoring()
        return model

    def experts_of(self, kind: str, run_dir: str | Path) -> Path | None:
        """The specialised experts' checkpoint model ``kind`` of the run in ``run_dir`` starts from (None:
        upcycled experts; ``dense`` is always the generalist)."""
        if not self.cfg.experts.specialise or kind not in SPECIALISED:
            return None
        return Path(run_dir) / "train" / "experts" / "best.safetensors"

    def embed(self, texts: dict[str, str]) -> dict[str, Tensor]:
        """``{key: embedding}`` of ``{key: text}`` (keys sorted, so batches do not depend on dict order)."""
        names = sorted(texts)
        return dict(zip(names, self.encoder.encode([texts[n] for n in names]), strict=True)) if names else {}

    def embed_tasks(self, tasks: Iterable[Task]) -> dict[str, Tensor]:
        """Each task's Definition embedding, by task name."""
        return self.embed({t.name: t.definition for t in tasks})


def specialised_names(model: MoEModel) -> list[str]:
    """The parameters a specialisation trains and :func:`load_specialised` gives: every trainable one but the
    routers and the hypernetwork."""
    return [n for n, p in model.named_parameters() if p.requires_grad and "router" not in n and not n.startswith("hyper")]


def load_specialised(model: MoEModel, path: Path, *, freeze: bool) -> list[str]:
    """Give ``model`` the specialised experts (and the layers trained with them) of ``path``: every
    trainable parameter but the routers and the hypernetwork; ``freeze`` keeps them fixed while the
    routers learn. Returns the names of the tensors loaded."""
    names = specialised_names(model)
    load_params(model, path, names, what="specialised parameters", hint=" (was it made with another model config?)")
    for n in names:
        model.get_parameter(n).requires_grad_(not freeze)
    return names
