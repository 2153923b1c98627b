"""Measure the backbone choices of the offline default on this machine.

* prompt lengths (tokens) of the chat-wrapped, definition-only prompts of test and training tasks;
* caching the frozen lower part: tokens/s, fp32 vs bf16 autocast, for 24 and 28 frozen layers;
* one training step (batch 8) of dense / moe / promoe on the cached lower part, top 6 vs top 2
  layers, fp32 vs bf16 autocast;
* greedy generation (at most 16 new tokens, stopping after the first line) for the untrained backbone.

Usage: ``python -m promoe.benchmarks.backbone_choices [--json OUT] [key=value ...]`` (needs $PROMOE_DATA).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

import torch

from promoe.config import load_config
from promoe.data.collate import encode_pair, pad_batch
from promoe.data.prompts import task_prompt
from promoe.data.splits import load_splits
from promoe.evaluation.predict import predict
from promoe.setup import Setup


def lengths(setup: Setup, pairs) -> dict[str, float]:
    tok = setup.tokenizer
    n = sorted(len(tok(setup.wrap(task_prompt(t, i)), add_special_tokens=False)["input_ids"]) for t, i in pairs)
    return {"n": len(n), "mean": statistics.mean(n), "median": statistics.median(n),
            "p95": n[int(0.95 * (len(n) - 1))], "max": n[-1]}


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    cfg = load_config("default", args.overrides)
    torch.manual_seed(0)
    setup = Setup.load(cfg)
    tok = setup.tokenizer
    splits = load_splits(cfg.data)
    test = [(t, i) for t in splits.test for i in t.instances if i.origin == "instance"]
    train = [(t, i) for t in splits.train for i in t.instances[:2]]
    res: dict = {"threads": torch.get_num_threads(),
                 "prompt_tokens": {"test": lengths(setup, test), "train": lengths(setup, train)}}
    print(json.dumps(res["prompt_tokens"]), flush=True)
    pairs = train[:: max(1, len(train) // args.batch_size)][: args.batch_size]
    emb = setup.encoder.encode([t.definition for t, _ in pairs])
    keys = [t.name for t, _ in pairs]
    encoded = [encode_pair(tok, setup.wrap(task_prompt(t, i)), i.outputs[0], max_length=512) for t, i in pairs]
    batch = pad_batch(encoded, keys, pad_id=tok.pad_token_id, left=False)
    n_tok = int(batch.attention_mask.sum())
    res["train_batch_tokens"] = n_tok
    for top in (6, 2):
        mcfg = replace(cfg.model, n_moe_layers=top)
        for kind in ("dense", "moe", "promoe"):
            model = setup.model(kind, model_cfg=mcfg).train()
            for dtype in ("fp32", "bf16"):
                if kind == "dense":
                    def lower_fn(model=model, dtype=dtype):
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                            return model.lower_hidden(batch.input_ids, batch.attention_mask)
                    sec = timed(lower_fn)
                    res[f"lower_{30 - top}_{dtype}_tokens_per_s"] = n_tok / sec
                lower = model.lower_hidden(batch.input_ids, batch.attention_mask)
                opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

                def step(model=model, lower=lower, opt=opt, dtype=dtype):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                        loss = model(attention_mask=batch.attention_mask, labels=batch.labels, task_emb=emb,
                                     task_keys=keys, lower=lower).loss
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                res[f"step_top{top}_{kind}_{dtype}_s"] = timed(step, repeat=2)
                print(f"top {top} {kind} {dtype}: {res[f'step_top{top}_{kind}_{dtype}_s']:.2f} s/step", flush=True)
            del model, opt
    # generation of the untrained backbone, 8 test instances at a time
    model = setup.model("dense").eval()
    items = test[:16]
    for dtype in ("fp32", "bf16"):
        def gen(dtype=dtype):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                predict(model, tok, items, task_emb={}, prompt=cfg.prompt, wrap=setup.wrap,
                        batch_size=8, max_new_tokens=16)
        res[f"generate_dense_{dtype}_s_per_instance"] = timed(gen) / len(items)
        print(f"generate {dtype}: {res[f'generate_dense_{dtype}_s_per_instance']:.3f} s/instance", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
