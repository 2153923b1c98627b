"""Zero-shot generation throughput, side by side in one process: ``dense``, the token-level ``moe``, the
proactive ``promoe`` in ``task`` mode (routing fixed per task: rows are dispatched, not tokens) and the
task sub-network exported from it (a plain transformers model, :func:`promoe.export.task_model`).

All four are upcycled from the same backbone with the same shapes: ``n_experts`` experts of width
``d_ff / top_k`` per MoE layer (carved from the pretrained FFN), so the activated parameters of every
model equal the backbone's and the exported model has the backbone's own architecture. Untrained weights
(throughput does not depend on them); the hypernetwork's output layer is drawn at random so tasks pick
different experts. Workload: one task's batch of chat-wrapped Tk-Instruct prompts, greedy, exactly
``new_tokens`` new tokens each (EOS suppressed, so every model does the same work), ``generate`` of
transformers for all four. Reported: generated tokens/s of the whole call (prompt pass included) and of
the decoding steps alone ((N - 1) tokens per row over t(N) - t(1)), medians over alternating repeats.

Usage: ``python -m promoe.benchmarks.generation [--quick] [--json OUT] [key=value ...]`` (config overrides).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from promoe.benchmarks import module_main
from promoe.config import load_config
from promoe.data.prompts import task_prompt
from promoe.data.schema import Instance, Task
from promoe.export import task_model
from promoe.model.build import param_counts
from promoe.setup import Setup

DEFINITION = ("Given a short product review, decide whether the reviewer recommends the product. Answer with "
              "'yes' if the review is positive overall and 'no' otherwise; ignore remarks about shipping.")
INPUTS = ("The blender is loud but it crushes ice in seconds and cleaning it takes no time at all.",
          "Stopped working after two weeks and the seller never answered my emails about a refund.",
          "Comfortable shoes, true to size, and they still look new after a month of daily walks.",
          "The colour in the photos is nothing like the real thing, and the fabric feels cheap.")


def prompts(setup: Setup, n: int) -> tuple[Tensor, Tensor]:
    """``n`` left-padded prompts of one task (inputs cycled with a row number so rows differ)."""
    tokenizer = setup.tokenizer
    task = Task(name="bench_task", definition=DEFINITION, instances=())
    texts = [setup.wrap(task_prompt(task, Instance(f"b{i}", f"{INPUTS[i % len(INPUTS)]} (#{i})",
                                                                ("",)))) for i in range(n)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return enc["input_ids"], enc["attention_mask"]


def _timed(fn: Callable[[], Tensor]) -> tuple[float, Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(*, quick: bool = False, preset: str = "default", overrides: Sequence[str] = (), batch_size: int | None = None,
        new_tokens: int | None = None, repeats: int | None = None) -> dict:
    """Throughput of the four models; ``export_vs_token_moe`` = exported / token-level MoE tokens/s."""
    cfg = load_config(preset, ["model.proactive_mode=task", *overrides])
    batch_size = batch_size or (8 if quick else 16)
    new_tokens = new_tokens or (16 if quick else 32)
    repeats = repeats or (2 if quick else 3)
    torch.manual_seed(cfg.seed)
    setup = Setup.load(cfg)
    bb = setup.backbone
    d_ff = bb.model.config.intermediate_size
    if cfg.model.expert_width is None:
        cfg.model.expert_width = d_ff // cfg.model.top_k
    models = {kind: setup.model(kind).eval() for kind in ("dense", "moe", "promoe")}
    with torch.no_grad():
        torch.nn.init.normal_(models["promoe"].hyper.out.weight, std=0.5)
    task_emb = setup.encoder.encode([DEFINITION])
    exported, _ = task_model(models["promoe"], task_emb)
    n_exported = sum(p.numel() for p in exported.parameters())
    ids, mask = prompts(setup, batch_size)
    pad = bb.tokenizer.pad_token_id
    emb = task_emb.expand(batch_size, -1)

    def call(name: str, n: int) -> Tensor:
        kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                  pad_token_id=pad)
        if name == "exported":
            return exported.generate(**kw)
        if name == "promoe":
            return models[name].generate(task_emb=emb, task_keys=["bench_task"] * batch_size, **kw)
        return models[name].generate(**kw)

    names = ("dense", "moe", "promoe", "exported")
    full: dict[str, list[float]] = {n: [] for n in names}
    one: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, Tensor] = {}
    with torch.no_grad():
        for n in names:  # warm-up
            call(n, 2)
        for _ in range(repeats):
            for n in names:
                t, outputs[n] = _timed(lambda n=n: call(n, new_tokens))
                full[n].append(t)
                one[n].append(_timed(lambda n=n: call(n, 1))[0])
    t_full = {n: statistics.median(v) for n, v in full.items()}
    t_one = {n: statistics.median(v) for n, v in one.items()}
    tps = {n: batch_size * new_tokens / t_full[n] for n in names}
    decode_tps = {n: batch_size * (new_tokens - 1) / max(t_full[n] - t_one[n], 1e-9) for n in names}
    counts = param_counts(models["moe"])
    return {
        "workload": {"preset": preset, "backbone": cfg.model.backbone, "batch_size": batch_size,
                     "prompt_tokens": int(ids.shape[1]), "new_tokens": new_tokens, "repeats": repeats,
                     "n_experts": cfg.model.n_experts, "top_k": cfg.model.top_k,
                     "expert_width": cfg.model.expert_width, "moe_layers": len(models["moe"].moe_layers)},
        "seconds": t_full, "seconds_one_token": t_one, "tokens_per_s": tps, "decode_tokens_per_s": decode_tps,
        "export_vs_token_moe": tps["exported"] / tps["moe"],
        "export_vs_token_moe_decode": decode_tps["exported"] / decode_tps["moe"],
        "proactive_vs_token_moe": tps["promoe"] / tps["moe"],
        "exported_equals_promoe": bool(torch.equal(outputs["exported"], outputs["promoe"])),
        "params": {"exported": n_exported, "moe_total": counts["total"], "moe_activated": counts["activated"],
                   "exported_vs_moe_total": n_exported / counts["total"]},
    }


def main() -> None:
    module_main(run, __doc__, "smaller batch, fewer tokens and repeats")


if __name__ == "__main__":
    main()
