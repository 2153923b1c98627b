"""Lower-layer caching of training examples: each example alone vs padded batches of 8, side by side.

    python -m promoe.benchmarks.lower_cache [--examples 128] [--preset default]

Times the frozen lower layers (``MoEModel.lower_hidden``) over the same random training examples
computed alone (what ``promoe.stages.lower_cache.LowerCache`` does) and in right-padded batches of 8, and counts the
examples whose hidden states change bits when the batches are made up differently (why a resumed
run must not cache in batches). Needs the offline data ($PROMOE_DATA) and the default backbone.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from promoe.config import load_config
from promoe.data.examples import build_examples
from promoe.data.splits import load_splits
from promoe.setup import Setup
from promoe.training.trainer import batch_of


@torch.no_grad()
def run(n: int = 128, preset: str = "default", batch: int = 8) -> dict:
    cfg = load_config(preset)
    setup = Setup.load(cfg)
    tok = setup.tokenizer
    examples = build_examples(load_splits(cfg.data).train, tok, per_task=cfg.train.examples_per_task,
                              max_length=cfg.train.max_length, max_target_length=cfg.train.max_target_length,
                              prompt=cfg.prompt, wrap=setup.wrap)
    model = setup.model("dense", share=False).eval()
    rng = random.Random(0)
    idx = rng.sample(range(len(examples)), n)

    def batched(order: list[int]) -> tuple[dict[int, torch.Tensor], float]:
        out, t0 = {}, time.perf_counter()
        for s in range(0, len(order), batch):
            b = batch_of(examples, order[s:s + batch], tok.pad_token_id, False)
            width = int(b.attention_mask.sum(1).max())
            h = model.lower_hidden(b.input_ids[:, :width], b.attention_mask[:, :width])
            for r, i in enumerate(order[s:s + batch]):
                out[i] = h[r, :int(b.attention_mask[r].sum())]
        return out, time.perf_counter() - t0

    t0, alone = time.perf_counter(), {}
    for i in idx:
        b = batch_of(examples, [i], tok.pad_token_id, False)
        alone[i] = model.lower_hidden(b.input_ids, b.attention_mask)[0]
    t_alone = time.perf_counter() - t0
    first, t_batched = batched(idx)
    shuffled = idx[:]
    rng.shuffle(shuffled)
    second, _ = batched(shuffled)
    return {"examples": n, "batch": batch, "alone_s": round(t_alone, 2), "batched_s": round(t_batched, 2),
            "batched_over_alone": round(t_batched / t_alone, 2),
            "changed_by_reshuffling_batches": sum(not torch.equal(first[i], second[i]) for i in idx),
            "max_abs_alone_vs_batched": max((first[i] - alone[i]).abs().max().item() for i in idx)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=128)
    p.add_argument("--preset", default="default")
    a = p.parse_args()
    print(json.dumps(run(a.examples, a.preset), indent=2))


if __name__ == "__main__":
    main()
