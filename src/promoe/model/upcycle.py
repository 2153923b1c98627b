"""Sparse upcycling: replace a backbone's FFN blocks by MoE layers whose experts start from them.

One mechanism, with a small adapter per family that knows where the FFN of each layer lives, how to
read its weights and how to put a module in its place:

* ``llama`` (Llama, Qwen, Mistral, SmolLM): ``layers[i].mlp`` = ``down(act(gate(x)) * up(x))``;
* ``t5``: ``block[i].layer[-1].DenseReluDense`` (``wi``/``wo``, or gated ``wi_0``/``wi_1``/``wo``),
  encoder blocks first, then decoder blocks;
* ``bert``: ``layer[i].intermediate.dense`` + ``layer[i].output.dense`` (the intermediate module
  becomes a pass-through and the output's dense projection becomes the MoE).

Experts are full copies of the pretrained FFN by default, so with weights summing to one every
expert choice reproduces the backbone. With ``expert_width < d_ff`` each expert keeps a slice of the
pretrained neurons (scaled so that averaging all experts of a full carving reproduces the FFN). With a
shared expert (``model.shared_expert``) the pretrained FFN is kept whole beside the routed experts, whose
down projections start at zero: residuals that specialise on top of a generalist every token uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from promoe.model.experts import Experts
from promoe.model.moe import PassThrough


@dataclass
class FFNWeights:
    """A pretrained FFN in the common form ``down(act(gate x) * (up x))`` (no gate when not gated)."""

    up: Tensor  # (d_ff, D)
    down: Tensor  # (D, d_ff)
    act: str
    gate: Tensor | None = None  # (d_ff, D)
    gate_bias: Tensor | None = None  # (d_ff,)
    up_bias: Tensor | None = None  # (d_ff,)
    down_bias: Tensor | None = None  # (D,)

    @property
    def d_ff(self) -> int:
        return self.up.shape[0]


class FamilyAdapter(ABC):
    """Where a family keeps its FFNs, and how to read and replace them."""

    @abstractmethod
    def slots(self, model: nn.Module) -> list[nn.Module]:
        """The modules owning one FFN each, bottom to top."""

    @abstractmethod
    def read(self, slot: nn.Module, config) -> FFNWeights:
        """The FFN weights of ``slot``; ``config`` is the backbone's config (activation names)."""

    def stack(self, model: nn.Module, index: int) -> str:
        """Which token stream slot ``index`` processes: ``encoder`` (the input) or ``decoder``."""
        return "encoder"

    def decoder_only(self, model: nn.Module) -> bool:
        """True for a causal LM whose layer stack can be run in parts (see :meth:`only_layers`)."""
        return False

    @contextmanager
    def only_layers(self, model: nn.Module, start: int, stop: int | None, *, final_norm: bool) -> Iterator[None]:
        """Run the layer stack on ``layers[start:stop]`` only (optionally without its final norm)."""
        raise NotImplementedError(f"{type(self).__name__} cannot run part of its layer stack")
        yield

    @abstractmethod
    def replace(self, slot: nn.Module, block: nn.Module) -> None: ...


def _base(model: nn.Module, attr: str) -> nn.Module:
    return getattr(model, attr) if hasattr(model, attr) else model


class LlamaAdapter(FamilyAdapter):
    def slots(self, model: nn.Module) -> list[nn.Module]:
        return list(_base(model, "model").layers)

    def decoder_only(self, model: nn.Module) -> bool:
        return hasattr(model, "lm_head") and hasattr(getattr(model, "model", None), "layers")

    @contextmanager
    def only_layers(self, model: nn.Module, start: int, stop: int | None, *, final_norm: bool) -> Iterator[None]:
        base = model.model
        layers, norm = base.layers, base.norm
        base.layers = nn.ModuleList(list(layers)[start:stop])
        if not final_norm:
            base.norm = nn.Identity()
        try:
            yield
        finally:
            base.layers, base.norm = layers, norm

    def read(self, slot: nn.Module, config) -> FFNWeights:
        mlp = slot.mlp
        return FFNWeights(gate=mlp.gate_proj.weight, up=mlp.up_proj.weight, down=mlp.down_proj.weight,
                          act=config.hidden_act, gate_bias=mlp.gate_proj.bias, up_bias=mlp.up_proj.bias,
                          down_bias=mlp.down_proj.bias)

    def replace(self, slot: nn.Module, block: nn.Module) -> None:
        slot.mlp = block


class T5Adapter(FamilyAdapter):
    def slots(self, model: nn.Module) -> list[nn.Module]:
        return list(model.encoder.block) + list(model.decoder.block)

    def read(self, slot: nn.Module, config) -> FFNWeights:
        ff = slot.layer[-1].DenseReluDense
        if hasattr(ff, "wi_0"):
            return FFNWeights(gate=ff.wi_0.weight, up=ff.wi_1.weight, down=ff.wo.weight, act=config.dense_act_fn)
        return FFNWeights(up=ff.wi.weight, down=ff.wo.weight, act=config.dense_act_fn)

    def stack(self, model: nn.Module, index: int) -> str:
        return "encoder" if index < len(model.encoder.block) else "decoder"

    def replace(self, slot: nn.Module, block: nn.Module) -> None:
        slot.layer[-1].DenseReluDense = block


class BertAdapter(FamilyAdapter):
    def slots(self, model: nn.Module) -> list[nn.Module]:
        return list(_base(model, "bert").encoder.layer)

    def read(self, slot: nn.Module, config) -> FFNWeights:
        return FFNWeights(up=slot.intermediate.dense.weight, up_bias=slot.intermediate.dense.bias,
                          down=slot.output.dense.weight, down_bias=slot.output.dense.bias, act=config.hidden_act)

    def replace(self, slot: nn.Module, block: nn.Module) -> None:
        slot.intermediate = PassThrough()
        slot.output.dense = block


ADAPTERS: dict[str, FamilyAdapter] = {"llama": LlamaAdapter(), "t5": T5Adapter(), "bert": BertAdapter()}


def neuron_slice(e: int, width: int, d_ff: int) -> Tensor:
    """Neurons of expert ``e`` when experts of ``width`` are carved from an FFN of ``d_ff`` (wrapping)."""
    return (torch.arange(width) + e * width) % d_ff


@torch.no_grad()
def experts_from_ffn(ffn: FFNWeights, *, n_experts: int, width: int | None = None,
                     mix: int = 1, residual: bool = False) -> Experts:
    """Build ``n_experts`` experts initialised from ``ffn``.

    ``mix > 1`` builds each expert as the concatenation of ``mix`` consecutive upcycled experts with
    the down projection divided by ``mix`` — the dense baseline: one FFN equal to the MoE that always
    averages experts ``0..mix-1``, with the MoE's activated parameters. ``residual``: the down projections
    start at zero (experts that add to a shared expert, which alone reproduces the FFN at first).
    """
    d_ff = ffn.d_ff
    width = width or d_ff
    if width > d_ff:
        raise ValueError(f"expert_width {width} exceeds the pretrained FFN width {d_ff}")
    scale = d_ff / width
    gated, bias = ffn.gate is not None, ffn.up_bias is not None or ffn.down_bias is not None
    d_model = ffn.down.shape[0]
    experts = Experts(n_experts=n_experts, d_model=d_model, d_ff=width * mix, act=ffn.act, gated=gated, bias=bias)
    for e in range(n_experts):
        parts = [neuron_slice(e * mix + j, width, d_ff) for j in range(mix)]
        idx = torch.cat(parts)
        up = ffn.up[idx]
        experts.w_in[e].copy_(torch.cat([ffn.gate[idx], up]) if gated else up)
        experts.w_out[e].copy_(ffn.down[:, idx] * (0.0 if residual else scale / mix))
        if bias:
            zeros = torch.zeros(len(idx))
            b_up = ffn.up_bias[idx] if ffn.up_bias is not None else zeros
            b_gate = ffn.gate_bias[idx] if ffn.gate_bias is not None else zeros
            experts.b_in[e].copy_(torch.cat([b_gate, b_up]) if gated else b_up)
            if ffn.down_bias is not None and not residual:
                experts.b_out[e].copy_(ffn.down_bias)
    return experts
