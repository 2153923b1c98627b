"""MoE layer speed, side by side in one process: our MoE layer (``TokenRouter`` + grouped dispatch) against
a dense SwiGLU FFN with the same activated parameters (transformers' ``LlamaMLP`` of width top_k·width,
plain ``nn.Linear``) and transformers' ``MixtralSparseMoeBlock`` on the same shapes.

Same work for all: fp32, the Mixtral blocks get our router and expert weights (so they route every token
to the same experts; checked), forward + backward of ``mean(y**2)`` with the gradients of the parameters
set to None before each call (as ``zero_grad`` leaves them). Mixtral runs with the experts implementation
transformers picks for a Mixtral model by default (read from a tiny ``MixtralModel``: ``grouped_mm`` in
5.x) and, when that differs, ``eager`` (the per-expert loop, what a bare block built from a config falls
back to). The modules alternate within each round; medians (and minima) over the rounds are reported, so
a noisy shared machine slows all of them alike.

Reported: the issue's shape (d_model=384, 8 experts, top-2, width 768, 4096 tokens; targets: ours <=
1.2x dense, >= 2x faster than Mixtral) with FLOP/s against the machine's large-GEMM rate, scaling with
the number of experts and of tokens, and the forward-only small-token regime of greedy decoding, where the
bound is the experts' own matmuls on pre-grouped rows (``expert_matmuls``).

Usage: ``python -m promoe.benchmarks.moe_layer [--quick] [--json OUT]``; :func:`run` for ``promoe bench``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from transformers import LlamaConfig, MixtralConfig, MixtralModel
from transformers.models.llama.modeling_llama import LlamaMLP
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from promoe.io import write_json
from promoe.model.experts import Experts
from promoe.model.moe import MoELayer
from promoe.model.router import TokenRouter
from promoe.resources import cpu

D_MODEL, N_EXPERTS, TOP_K, WIDTH, TOKENS = 384, 8, 2, 768, 4096
PLANS = {  # rounds and points: the full run takes about three minutes, --quick about one
    False: {"repeats": 9, "scale_repeats": 5, "experts": [4, 8, 16, 32, 64],
            "tokens": [256, 512, 1024, 2048, 4096, 8192, 16384], "decode": [1, 4, 16, 64], "decode_repeats": 15},
    True: {"repeats": 5, "scale_repeats": 4, "experts": [4, 32], "tokens": [256, 1024, 8192],
           "decode": [1, 16, 64], "decode_repeats": 7},
}


def machine() -> dict:
    """Where the numbers come from (load averages: the machine may be shared; ``cpu_detail``: flags, kernels)."""
    c = cpu()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "cpu": c["model"], "cores": c["cores"], "threads": c["threads"],
            "cpu_detail": c, "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "loadavg_1_5_15": load}


def mixtral_default_implementation() -> str:
    """The experts implementation transformers gives a Mixtral model when none is asked for."""
    cfg = MixtralConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                        num_attention_heads=1, num_key_value_heads=1, num_local_experts=2)
    return MixtralModel(cfg).config._experts_implementation


def build(*, n_experts: int, d_model: int = D_MODEL, top_k: int = TOP_K, width: int = WIDTH) -> dict[str, nn.Module]:
    """Ours, the dense FFN and Mixtral block(s) sharing our router and expert weights."""
    torch.manual_seed(0)
    moe = MoELayer(experts=Experts(n_experts=n_experts, d_model=d_model, d_ff=width),
                   router=TokenRouter(d_model=d_model, n_experts=n_experts, top_k=top_k), layer=0)
    mods: dict[str, nn.Module] = {"moe": moe,
                                  "dense": LlamaMLP(LlamaConfig(hidden_size=d_model, intermediate_size=top_k * width))}
    default = mixtral_default_implementation()
    for key, impl in (("hf_mixtral", default), ("hf_mixtral_eager", "eager")):
        if key == "hf_mixtral_eager" and default == "eager":
            continue
        cfg = MixtralConfig(hidden_size=d_model, intermediate_size=width, num_local_experts=n_experts,
                            num_experts_per_tok=top_k, router_jitter_noise=0.0)
        cfg._experts_implementation = impl
        block = MixtralSparseMoeBlock(cfg)
        with torch.no_grad():
            block.gate.weight.copy_(moe.router.weight)
            block.experts.gate_up_proj.copy_(moe.experts.w_in)  # [gate; up] rows, like ours
            block.experts.down_proj.copy_(moe.experts.w_out)
        mods[key] = block
    return mods


def call(mod: nn.Module) -> Callable[[Tensor], Tensor]:
    """(1, N, D) -> (1, N, D) for every module (ours returns its routing too)."""
    return (lambda x: mod(x)[0]) if isinstance(mod, MoELayer) else mod


def check_same_work(mods: dict[str, nn.Module], tokens: int = 64) -> None:
    x = torch.randn(1, tokens, mods["moe"].experts.d_model)
    with torch.no_grad():
        ref = call(mods["moe"])(x)
        for key in mods:
            if key.startswith("hf_mixtral"):
                torch.testing.assert_close(call(mods[key])(x), ref, atol=1e-4, rtol=1e-4)


def race(calls: dict[str, Callable[[], float]], repeats: int, budget_s: float = 3.0) -> dict[str, list[float]]:
    """One warm-up each, then rounds in which every call runs once: at least ``repeats`` rounds, more (up to
    40) while they fit in ``budget_s``, since a short call is easily hit by a burst of load. Each round
    starts one call later, so none always runs right after the same other one (which leaves the allocator
    in a state that can cost the next call page faults)."""
    for fn in calls.values():
        fn()
    keys = list(calls)
    times: dict[str, list[float]] = {k: [] for k in keys}
    rounds, r = repeats, 0
    while r < rounds:
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            times[k].append(calls[k]())
        if r == 0:
            rounds = max(repeats, min(40, int(budget_s / sum(v[0] for v in times.values()))))
        r += 1
    return times


def train_step(mod: nn.Module, x0: Tensor) -> Callable[[], float]:
    """Seconds of one forward + backward; parameter gradients reset to None outside the timing."""
    fn, params = call(mod), list(mod.parameters())

    def step() -> float:
        for p in params:
            p.grad = None
        x = x0.detach().requires_grad_(True)
        t0 = time.perf_counter()
        fn(x).pow(2).mean().backward()
        return time.perf_counter() - t0
    return step


def ffn_flops(tokens: int, *, d_model: int = D_MODEL, top_k: int = TOP_K, width: int = WIDTH) -> float:
    """FFN FLOPs of forward + backward: three matmuls of 2·N·D·(k·width), backward twice the forward."""
    return 3 * 3 * 2 * tokens * d_model * top_k * width


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 rate of a large square matmul: what a dense FFN could at most reach here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(*, tokens: int, n_experts: int, repeats: int) -> dict:
    """Forward + backward of every module on one shape: median/min seconds and the two ratios."""
    mods = build(n_experts=n_experts)
    check_same_work(mods)
    x0 = torch.randn(1, tokens, D_MODEL)
    times = race({k: train_step(m, x0) for k, m in mods.items()}, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    row = {"tokens": tokens, "n_experts": n_experts, "rounds": len(times["moe"]), "seconds": med, "seconds_min": low,
           "moe_vs_dense": med["moe"] / med["dense"], "moe_vs_hf_mixtral": med["hf_mixtral"] / med["moe"],
           "moe_vs_dense_min": low["moe"] / low["dense"], "moe_vs_hf_mixtral_min": low["hf_mixtral"] / low["moe"]}
    if "hf_mixtral_eager" in med:
        row["moe_vs_hf_mixtral_eager"] = med["hf_mixtral_eager"] / med["moe"]
    return row


def decode(*, tokens: int, repeats: int, inner: int = 10) -> dict:
    """Forward only, no grad, few tokens (greedy decoding): ours, dense, Mixtral and the experts' matmuls
    alone on rows grouped beforehand (the bound for any dispatch)."""
    mods = build(n_experts=N_EXPERTS)
    x0 = torch.randn(1, tokens, D_MODEL)
    moe = mods["moe"]
    with torch.no_grad():
        hit = moe.router(x0).indices.reshape(tokens, -1)
        groups = [(e, x0[0][(hit == e).any(-1)]) for e in range(N_EXPERTS) if (hit == e).any()]
    ex = moe.experts

    def matmuls() -> None:
        for e, xe in groups:
            gate, up = F.linear(xe, ex.w_in[e]).chunk(2, dim=-1)
            F.linear(ex.act(gate) * up, ex.w_out[e])

    def timed(fn: Callable[[Tensor], object]) -> Callable[[], float]:
        def run_inner() -> float:
            with torch.no_grad():
                return _seconds(lambda: [fn(x0) for _ in range(inner)]) / inner
        return run_inner

    calls = {k: timed(call(m)) for k, m in mods.items()}
    calls["expert_matmuls"] = timed(lambda _: matmuls())
    med = {k: statistics.median(v) for k, v in race(calls, repeats).items()}
    return {"tokens": tokens, "experts_hit": len(groups), "seconds": med,
            "moe_vs_expert_matmuls": med["moe"] / med["expert_matmuls"], "moe_vs_dense": med["moe"] / med["dense"],
            "moe_vs_hf_mixtral": med["hf_mixtral"] / med["moe"]}


def run(quick: bool = False) -> dict:
    """The whole benchmark as one JSON-able dict (keys: see the module docstring and :func:`summary`)."""
    plan, info = PLANS[quick], machine()
    started = time.perf_counter()
    main = compare(tokens=TOKENS, n_experts=N_EXPERTS, repeats=plan["repeats"])
    peak = gemm_gflops()
    flops = ffn_flops(TOKENS)
    main["gflops"] = {k: flops / s / 1e9 for k, s in main["seconds"].items()}
    main["gemm_peak_gflops"] = peak
    main["hf_mixtral_vs_dense"] = main["seconds"]["hf_mixtral"] / main["seconds"]["dense"]
    main["gflops_needed_for_2x_vs_hf_mixtral"] = flops / (main["seconds"]["hf_mixtral"] / 2) / 1e9
    experts = [compare(tokens=TOKENS, n_experts=e, repeats=plan["scale_repeats"]) for e in plan["experts"]]
    tokens = [compare(tokens=n, n_experts=N_EXPERTS, repeats=plan["scale_repeats"]) for n in plan["tokens"]]
    small = [decode(tokens=n, repeats=plan["decode_repeats"]) for n in plan["decode"]]
    table = [{"label": f"E={r['n_experts']}, N={r['tokens']}{' (issue shape)' if r is main else ''}",
              "ours": r["seconds"]["moe"], "dense": r["seconds"]["dense"], "hf_mixtral": r["seconds"]["hf_mixtral"]}
             for r in [main, *experts, *tokens]]
    return {"quick": quick, "machine": info, "dtype": "float32",
            "shape": {"d_model": D_MODEL, "n_experts": N_EXPERTS, "top_k": TOP_K, "width": WIDTH, "tokens": TOKENS,
                      "dense_width": TOP_K * WIDTH},
            "hf_mixtral_implementation": mixtral_default_implementation(),
            "moe_vs_dense": main["moe_vs_dense"], "moe_vs_hf_mixtral": main["moe_vs_hf_mixtral"],
            "main": main, "scaling_experts": experts, "scaling_tokens": tokens, "decode": small, "table": table,
            "wall_s": time.perf_counter() - started}


def summary(res: dict) -> str:
    """Plain-text tables of :func:`run`'s result."""
    m, main = res["machine"], res["main"]
    s, g = main["seconds"], main["gflops"]
    eager = "hf_mixtral_eager" in s
    lines = [f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}, transformers {m['transformers']}; "
             f"Mixtral experts implementation: {res['hf_mixtral_implementation']} (default)"
             + (", eager" if eager else ""),
             f"issue shape, fwd+bwd: ours {s['moe']:.4f} s, dense {s['dense']:.4f} s, Mixtral {s['hf_mixtral']:.4f} s"
             + (f", Mixtral eager {s['hf_mixtral_eager']:.4f} s" if eager else ""),
             f"  moe_vs_dense {res['moe_vs_dense']:.3f} (target <= 1.2), moe_vs_hf_mixtral "
             f"{res['moe_vs_hf_mixtral']:.3f} (target >= 2)"
             + (f", vs eager {main['moe_vs_hf_mixtral_eager']:.3f}" if eager else "")
             + f"; Mixtral / dense {main['hf_mixtral_vs_dense']:.3f} (the most any dispatch could reach)",
             f"  GFLOP/s: ours {g['moe']:.0f}, dense {g['dense']:.0f}, Mixtral {g['hf_mixtral']:.0f}; "
             f"large fp32 GEMM {main['gemm_peak_gflops']:.0f}; 2x Mixtral needs "
             f"{main['gflops_needed_for_2x_vs_hf_mixtral']:.0f}", "",
             f"{'E':>4} {'N':>6} {'ours':>8} {'dense':>8} {'Mixtral':>8}" + (f" {'M.eager':>8}" if eager else "")
             + f" {'ours/dense':>10} {'Mixtral/ours':>12}"]
    for r in [*res["scaling_experts"], *res["scaling_tokens"]]:
        t = r["seconds"]
        lines.append(f"{r['n_experts']:>4} {r['tokens']:>6} {t['moe']:8.4f} {t['dense']:8.4f} {t['hf_mixtral']:8.4f}"
                     + (f" {t['hf_mixtral_eager']:8.4f}" if eager else "")
                     + f" {r['moe_vs_dense']:10.3f} {r['moe_vs_hf_mixtral']:12.3f}")
    lines += ["", "decode (forward only, no grad), microseconds:",
              f"{'N':>4} {'hit':>4} {'ours':>8} {'dense':>8} {'Mixtral':>8}" + (f" {'M.eager':>8}" if eager else "")
              + f" {'matmuls':>8} {'ours/matmuls':>12}"]
    for r in res["decode"]:
        t = {k: v * 1e6 for k, v in r["seconds"].items()}
        lines.append(f"{r['tokens']:>4} {r['experts_hit']:>4} {t['moe']:8.0f} {t['dense']:8.0f} {t['hf_mixtral']:8.0f}"
                     + (f" {t['hf_mixtral_eager']:8.0f}" if eager else "")
                     + f" {t['expert_matmuls']:8.0f} {r['moe_vs_expert_matmuls']:12.2f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and points (about a minute)")
    p.add_argument("--json", type=Path, help="write the result here")
    a = p.parse_args()
    res = run(quick=a.quick)
    print(summary(res))
    if a.json:
        write_json(a.json, res)


if __name__ == "__main__":
    main()
