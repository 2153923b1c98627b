"""The frozen lower layers in bf16 where bf16 runs natively (``model.dtype``).

Every model of a run shares the backbone's frozen lower part (the layers below the first MoE layer; with
``model.freeze_lower``), and its passes (the lower-layer cache of training, every prompt and every decoded
token of scoring, the oracle's choice) are most of a run's work. Where the hardware runs bf16 matmuls natively
(a CPU with AVX-512 BF16 or AMX, a GPU with bf16) those layers can hold bf16 weights and compute in bf16:
each layer casts its input to bf16 and its output back to fp32, so the residual stream between layers, the
embeddings (tied to the output head) and everything trained keep fp32. The attention cache of those layers is
bf16 too. ``fp32`` keeps the whole model in fp32 (the reference run does, so that it is one run on every
machine); ``benchmarks/results/precision-*.json`` measures what bf16 changes.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from promoe.resources import native_bf16

Dtype = Literal["auto", "fp32", "bf16"]


def resolve(dtype: Dtype, device: torch.device | str = "cpu") -> torch.dtype:
    """``model.dtype`` as a torch dtype: ``auto`` is bf16 where it runs natively on ``device``, else fp32."""
    if dtype == "auto":
        dev = torch.device(device)
        native = torch.cuda.is_bf16_supported() if dev.type == "cuda" else native_bf16()
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def _cast(x: Any, dtype: torch.dtype) -> Any:
    """Floating tensors (and those inside tuples, e.g. rotary position embeddings) in ``dtype``; an additive
    attention mask is clamped first, so its large negatives stay finite (a fully masked row would give NaN)."""
    if torch.is_tensor(x) and x.is_floating_point() and x.dtype != dtype:
        return x.clamp(min=torch.finfo(dtype).min).to(dtype) if x.dtype.itemsize > dtype.itemsize else x.to(dtype)
    if isinstance(x, tuple):
        return tuple(_cast(y, dtype) for y in x)
    return x


def _into_bf16(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return _cast(args, torch.bfloat16), {k: _cast(v, torch.bfloat16) for k, v in kwargs.items()}


def _out_of_bf16(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    if torch.is_tensor(output):
        return output.float()
    if isinstance(output, tuple) and output and torch.is_tensor(output[0]):
        return (output[0].float(), *output[1:])
    return output


def layers_in_bf16(layers: list[nn.Module]) -> int:
    """Freeze ``layers`` (run one after another on the residual stream), store them in bf16 and run each in bf16
    between fp32 input and output (module docstring). Hooks, not wrappers: parameter names, state dicts and
    copies (``copy.deepcopy``) are unchanged. Idempotent; returns how many layers were converted."""
    done = 0
    for layer in layers:
        if getattr(layer, "_promoe_bf16", False):
            continue
        layer.requires_grad_(False).to(torch.bfloat16)
        layer.register_forward_pre_hook(_into_bf16, with_kwargs=True)
        layer.register_forward_hook(_out_of_bf16, with_kwargs=True)
        layer._promoe_bf16 = True
        done += 1
    return done


__all__ = ["Dtype", "layers_in_bf16", "resolve"]
