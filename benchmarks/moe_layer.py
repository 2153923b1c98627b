"""MoE layer speed, side by side in one process: our grouped-dispatch MoE layer against a dense FFN with
the same activated parameters and against transformers' ``MixtralSparseMoeBlock`` on the same shapes.

Forward + backward, fp32, d_model=384, 8 experts, top-2, expert width 768, 4096 tokens (the targets of
the performance issue: MoE <= 1.2x dense, >= 2x faster than Mixtral's block). The three runs alternate
over ``--repeats`` rounds and the median time of each is reported.

Usage: ``python benchmarks/moe_layer.py [--tokens N] [--experts E] [--repeats R] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import transformers
from torch import nn
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from promoe.model.experts import Experts
from promoe.model.moe import MoELayer
from promoe.model.router import TokenRouter


def _time(fn, x: torch.Tensor) -> float:
    x = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    out = fn(x)
    out = out[0] if isinstance(out, tuple) else out
    out.float().pow(2).mean().backward()
    return time.perf_counter() - t0


def build(d_model: int, n_experts: int, top_k: int, width: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    ours = MoELayer(experts=Experts(n_experts=n_experts, d_model=d_model, d_ff=width),
                    router=TokenRouter(d_model=d_model, n_experts=n_experts, top_k=top_k), layer=0)
    dense = Experts(n_experts=1, d_model=d_model, d_ff=top_k * width)  # the activated parameters, always on
    cfg = MixtralConfig(hidden_size=d_model, intermediate_size=width, num_local_experts=n_experts,
                        num_experts_per_tok=top_k, router_jitter_noise=0.0)
    mixtral = MixtralSparseMoeBlock(cfg)
    return {"moe": ours, "dense": dense, "hf_mixtral": mixtral}


def run(*, tokens: int = 4096, d_model: int = 384, n_experts: int = 8, top_k: int = 2, width: int = 768,
        repeats: int = 7) -> dict:
    mods = build(d_model, n_experts, top_k, width)
    zeros = torch.zeros(tokens, 1, dtype=torch.long)
    ones = torch.ones(tokens, 1)
    calls = {
        "moe": lambda x: mods["moe"](x.view(1, tokens, d_model))[0],
        "dense": lambda x: mods["dense"](x, zeros, ones),
        "hf_mixtral": lambda x: mods["hf_mixtral"](x.view(1, tokens, d_model)),
    }
    x = torch.randn(tokens, d_model)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():  # warm-up
        _time(fn, x)
    for _ in range(repeats):
        for k, fn in calls.items():
            times[k].append(_time(fn, x))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"shape": {"tokens": tokens, "d_model": d_model, "n_experts": n_experts, "top_k": top_k, "width": width},
            "seconds": med, "moe_vs_dense": med["moe"] / med["dense"],
            "moe_vs_hf_mixtral": med["hf_mixtral"] / med["moe"],
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__, "transformers": transformers.__version__}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", help="write the result here")
    a = p.parse_args()
    res = run(tokens=a.tokens, n_experts=a.experts, repeats=a.repeats)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
