"""Export a task-specialised sub-network as a plain Hugging Face checkpoint.

With task-level routing (``promoe`` in ``model.proactive_mode: task``, or ``dense``) the experts of
every MoE layer are fixed by the task description before any input is seen, so for one task each MoE
layer is exactly one ordinary FFN: :meth:`Experts.merged` of its chosen experts. Writing that FFN into
the backbone's own MLP module gives a checkpoint of the backbone's architecture (``LlamaForCausalLM``,
...) that ``AutoModelForCausalLM.from_pretrained`` loads without any code of ours, with the MoE model's
outputs for that task and only its activated parameters.

A checkpoint has one ``intermediate_size`` for every layer. When the merged FFNs are wider than the
other layers' (full-copy experts: ``top_k * d_ff``) the narrower FFNs are zero-padded — zero gate/up
rows and zero down columns add exactly 0, so outputs are unchanged, but the zeros are stored; experts
of width ``d_ff / top_k`` (``model.expert_width``) merge back to the pretrained width and avoid it.

``promoe export --run DIR --model NAME --definition TEXT --out DIR2`` runs :func:`export_task_model`.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers.initialization import no_init_weights

from promoe.data.schema import require_text
from promoe.errors import PromoeError
from promoe.io import write_json
from promoe.model.backbone import FAMILIES
from promoe.model.build import param_counts
from promoe.model.experts import Experts
from promoe.model.moe import RoutingContext
from promoe.model.moe_model import MoEModel
from promoe.model.router import ProactiveRouter
from promoe.model.upcycle import ADAPTERS

log = logging.getLogger(__name__)

MANIFEST = "promoe_export.json"
MLP_PROJ = ("gate_proj", "up_proj", "down_proj")
"""The llama family's MLP: ``down_proj(act(gate_proj(x)) * up_proj(x))``."""


@dataclass
class LayerChoice:
    """What one MoE layer runs for the task: experts ``indices`` (k,) mixed with ``weights`` (k,)."""

    slot: int  # FFN position in the backbone
    indices: Tensor
    weights: Tensor


def check_exportable(model: MoEModel) -> None:
    """Raise a :class:`PromoeError` naming the fix unless ``model`` can be exported per task."""
    model_type = getattr(model.backbone.config, "model_type", None)
    if FAMILIES.get(model_type) != "llama" or model.is_seq2seq or not model.decoder_only:
        raise PromoeError("export supports decoder-only llama-family backbones (Llama, Qwen, Mistral, "
                          f"SmolLM); backbone model_type {model_type!r} is not supported")
    for layer in model.moe_layers:
        r = layer.router
        if r.task_level:
            continue
        if isinstance(r, ProactiveRouter):
            raise PromoeError(f"promoe in proactive_mode {r.mode!r} routes every token separately, so no "
                              "single FFN per layer exists for a task; export needs a promoe model built and "
                              "trained with `model.proactive_mode: task`")
        raise PromoeError(f"the {model.kind!r} model's {type(r).__name__} routes every token separately, so "
                          "no single FFN per layer exists for a task; export needs task-level routing: a "
                          "promoe model with `model.proactive_mode: task` (or the dense model)")


def check_out_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse to write into a non-empty folder; ``overwrite`` replaces an earlier export (a folder
    holding :data:`MANIFEST`) but never any other non-empty folder, so a mistyped path loses nothing."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PromoeError(f"{out}: exists and is not a folder; give a new or empty folder to export into")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise PromoeError(f"{out}: folder is not empty; exports never overwrite earlier results — give a "
                          "new or empty folder (--overwrite / overwrite=True replaces an earlier export)")
    if not (out / MANIFEST).exists():
        raise PromoeError(f"{out}: folder is not empty and holds no {MANIFEST}, so it is not an earlier "
                          "export; overwrite only replaces earlier exports — give a new or empty folder")


@torch.no_grad()
def task_experts(model: MoEModel, task_emb: Tensor | None) -> list[LayerChoice]:
    """Each MoE layer's experts and renormalised weights for the task ``task_emb`` (1, d_task), exactly
    as inference decides them: the generated routing of :meth:`MoEModel.task_routing`, laid out per
    layer by :meth:`RoutingContext.layer_task`, through the layer's own router (in eval mode: no jitter
    or noise). A task-level router ignores the token, so a zero input of one position stands for any."""
    check_exportable(model)
    if task_emb is not None:
        task_emb = task_emb.reshape(1, -1)
        if model.hyper is not None and task_emb.shape[1] != model.hyper.d_task:
            raise PromoeError(f"task embedding has {task_emb.shape[1]} dimensions, the model's hypernetwork "
                              f"expects {model.hyper.d_task} (model.d_task)")
    was_training = model.training
    model.eval()
    try:
        context = RoutingContext(task=model.task_routing(task_emb))
        choices = []
        for layer in model.moe_layers:
            x = layer.experts.w_in.new_zeros(1, 1, layer.experts.d_model)
            r = layer.router(x, context.layer_task(layer.layer, 1))
            choices.append(LayerChoice(model.slots[layer.layer], r.indices[0, 0], r.weights[0, 0]))
        return choices
    finally:
        model.train(was_training)


def _fit(t: Tensor, shape: torch.Size) -> Tensor:
    """``t`` zero-padded at the end of each dimension to ``shape``."""
    if t.shape == shape:
        return t
    out = t.new_zeros(shape)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def _merged_state(model: MoEModel,
                  choices: list[LayerChoice]) -> tuple[dict[str, Tensor], dict[str, Experts]]:
    """The backbone's state with each MoE block's parameters replaced by its merged FFN as the family's
    MLP parameters (``gate_proj`` / ``up_proj`` = the halves of ``w_in``, ``down_proj`` = ``w_out``)."""
    names = {id(m): n for n, m in model.backbone.named_modules()}
    merged: dict[str, Experts] = {}  # MLP module name -> its merged FFN
    for layer, choice in zip(model.moe_layers, choices, strict=True):
        name = names[id(layer)].removesuffix(".moe")
        merged[name] = layer.experts.merged(choice.indices, choice.weights, layer.shared)
    if any(not m.gated for m in merged.values()):
        raise PromoeError("export needs gated (gate/up/down) experts, as the llama family's MLP is")
    config = model.backbone.config
    if any(m.b_in is not None for m in merged.values()) and not getattr(config, "mlp_bias", False):
        raise PromoeError(f"the experts have biases but {type(config).__name__} has no `mlp_bias` option, so "
                          "its MLP cannot hold them; export is not supported for this backbone")
    state = {k: v for k, v in model.backbone.state_dict().items()
             if not any(k.startswith(f"{n}.") for n in merged)}
    for name, m in merged.items():
        gate, up = m.w_in[0].chunk(2)  # [gate; up]
        state.update({f"{name}.gate_proj.weight": gate, f"{name}.up_proj.weight": up,
                      f"{name}.down_proj.weight": m.w_out[0]})
        if m.b_in is not None:
            b_gate, b_up = m.b_in[0].chunk(2)
            state.update({f"{name}.gate_proj.bias": b_gate, f"{name}.up_proj.bias": b_up,
                          f"{name}.down_proj.bias": m.b_out[0]})
    return state, merged


def _fill(target: dict[str, Tensor], state: dict[str, Tensor], merged: dict[str, Experts],
          arch: str) -> tuple[dict[str, Tensor], int, set[str]]:
    """``state`` shaped like ``target``: MLP weights narrower than ``intermediate_size`` zero-padded.
    Returns the state, how many zeros the padding stores and the padded MLP modules."""
    extra = sorted(set(state) - set(target))
    if extra:
        raise PromoeError(f"{arch} has no parameter {extra[0]} (and {len(extra) - 1} more); export supports "
                          "llama-family MLPs with gate_proj / up_proj / down_proj")
    out, wasted, padded = {}, 0, set()
    for key, t in target.items():
        src = state.get(key)
        if src is None and key.endswith(".bias") and key.rsplit(".", 2)[0] in merged:
            src = t.new_zeros(t.shape)  # the MLP has biases the experts lack: zeros add nothing
        if src is None:
            raise PromoeError(f"cannot fill {arch} parameter {key} from the MoE model")
        if src.shape != t.shape:
            if key.split(".")[-2] not in MLP_PROJ or src.dim() != t.dim() or \
                    any(a > b for a, b in zip(src.shape, t.shape, strict=True)):
                raise PromoeError(f"{key}: shape {tuple(src.shape)} does not fit {tuple(t.shape)}")
            wasted += t.numel() - src.numel()
            padded.add(key.rsplit(".", 2)[0])
            src = _fit(src, t.shape)
        out[key] = src
    return out, wasted, padded


@torch.no_grad()
def task_model(model: MoEModel, task_emb: Tensor | None) -> tuple[torch.nn.Module, dict]:
    """The backbone's own architecture with each MoE layer replaced by its merged FFN for the task, and
    a report (chosen experts, FFN width per layer, padding). ``model`` is left unchanged."""
    choices = task_experts(model, task_emb)
    bb = model.backbone
    state, merged = _merged_state(model, choices)
    slots = ADAPTERS["llama"].slots(bb)
    names = {id(m): n for n, m in bb.named_modules()}
    mlps = [f"{names[id(slot)]}.mlp" for slot in slots]
    widths = [merged[n].d_ff if n in merged else int(state[f"{n}.up_proj.weight"].shape[0]) for n in mlps]
    config = copy.deepcopy(bb.config)
    config.intermediate_size = max(widths)  # one width for all layers: narrower FFNs are zero-padded
    with no_init_weights():  # every weight is loaded below
        out = type(bb)(config).to(next(bb.parameters()).dtype)
    out.tie_weights()  # skipped with the init: ties the output head to the embeddings if the config says so
    filled, wasted, padded = _fill(out.state_dict(), state, merged, type(out).__name__)
    out.load_state_dict(filled, strict=True)
    out.generation_config = copy.deepcopy(bb.generation_config)
    padded_layers = [i for i, n in enumerate(mlps) if n in padded]
    layers = [{"layer": c.slot, "experts": [int(e) for e in c.indices],
               "weights": [round(float(w), 6) for w in c.weights], "width": widths[c.slot]} for c in choices]
    return out.eval(), {
        "architecture": type(out).__name__, "intermediate_size": config.intermediate_size, "widths": widths,
        "layers": layers,
        "padding": {"used": bool(padded_layers), "padded_layers": padded_layers, "wasted_params": wasted},
    }


def export_model(model: MoEModel, task_emb: Tensor | None, out_dir: str | Path, *, tokenizer=None,
                 overwrite: bool = False, definition: str | None = None, source: dict | None = None) -> dict:
    """Write the task's sub-network of ``model`` to ``out_dir`` as a plain checkpoint (``config.json``,
    ``model.safetensors``, generation config, the tokenizer with its chat template when given) plus the
    :data:`MANIFEST`: routing per MoE layer, parameter counts (``ratio`` = exported / full MoE total) and
    padding. The folder appears complete or not at all (written beside it, then renamed)."""
    check_exportable(model)
    check_out_dir(out_dir, overwrite)
    net, report = task_model(model, task_emb)
    counts = param_counts(model)
    exported = sum(p.numel() for p in net.parameters())
    pad = report["padding"]
    if pad["used"]:
        suggest = model.backbone.config.intermediate_size // model.cfg.top_k
        log.warning("exported FFN widths differ (%s): layers %s are zero-padded to intermediate_size=%d, "
                    "storing %s zero parameters (%.1f%% of the export); experts of width d_ff / top_k "
                    "(model.expert_width=%d) merge back to the pretrained width and avoid this",
                    sorted(set(report["widths"])), pad["padded_layers"], report["intermediate_size"],
                    f"{pad['wasted_params']:,}", 100 * pad["wasted_params"] / exported, suggest)
    manifest = {
        "definition": definition, "source": {"kind": model.kind, **(source or {})}, **report,
        "params": {"exported_total": exported, "moe_total": counts["total"],
                   "moe_activated": counts["activated"], "ratio": round(exported / counts["total"], 4)},
    }
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.export-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover from an interrupted export
    net.save_pretrained(tmp)  # transformers 5 writes safetensors only (no pickle)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    write_json(tmp / MANIFEST, manifest)
    if out.exists():  # empty, or an earlier export (checked above)
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest


def export_task_model(run_dir: str | Path, name: str, definition: str, out_dir: str | Path, *,
                      overwrite: bool = False) -> dict:
    """Export model ``name`` of the run in ``run_dir`` specialised to the task ``definition`` (encoded by
    the run's task encoder); returns the manifest. The exported model expects the run's prompt format:
    the manifest's ``prompt_template`` with ``{input}`` filled in."""
    from promoe.data.prompts import encode_prompt
    from promoe.inference import load_trained

    definition = require_text(definition, field="--definition")
    check_out_dir(out_dir, overwrite)  # before the model is loaded
    trained = load_trained(run_dir, name, dtype="fp32")  # a plain checkpoint: every weight as trained, in fp32
    source = {"run": str(Path(run_dir).resolve()), "model": name, "backbone": trained.cfg.model.backbone,
              "task_encoder": trained.cfg.model.task_encoder,
              "prompt_template": trained.wrap(encode_prompt(definition if trained.cfg.prompt.with_definition else "",
                                                            "{input}"))}
    emb = trained.setup.encoder.encode([definition])  # (1, d_task)
    return export_model(trained.model, emb, out_dir, tokenizer=trained.tokenizer, overwrite=overwrite,
                        definition=definition, source=source)
