"""``promoe model check``: every model builds from the configured backbone, reproduces it before
training, trains a few steps on real training tasks and generates answers for test tasks.

This is the acceptance check of the model layer on a user's own backbone and data; it prints one
row per model and returns the measurements. It is an application of the model layer (it reads the data
splits, trains with :class:`promoe.training.loop.OptimizerStep` and generates with :func:`promoe.evaluation.predict.predict`),
so it lives outside ``promoe.model``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import torch

from promoe.config import ExperimentConfig
from promoe.data.collate import encode_pair, pad_batch
from promoe.data.prompts import task_prompt
from promoe.data.schema import Instance, Task
from promoe.data.splits import load_splits
from promoe.evaluation.predict import predict
from promoe.setup import Setup
from promoe.training.loop import MicroBatch, OptimizerStep, adamw

log = logging.getLogger(__name__)

VARIANTS = (("dense", None), ("moe", None), ("promoe", "hyper"), ("promoe", "prior"), ("promoe", "task"))


def _round_robin(tasks: list[Task], n: int) -> list[tuple[Task, Instance]]:
    """``n`` instances taken one per task in turn, so a batch spans several tasks."""
    out: list[tuple[Task, Instance]] = []
    depth = 0
    while len(out) < n and any(depth < len(t.instances) for t in tasks):
        out += [(t, t.instances[depth]) for t in tasks if depth < len(t.instances)]
        depth += 1
    return out[:n]


def check_models(cfg: ExperimentConfig, *, steps: int = 3, batch_size: int = 4, n_test: int = 4,
                 lr: float = 1e-4, max_length: int = 384) -> list[dict]:
    """Run the check for dense, moe and promoe (hyper, prior, task); returns one dict per model."""
    torch.manual_seed(cfg.seed)
    setup = Setup.load(cfg)
    bb, tok = setup.backbone, setup.tokenizer
    splits = load_splits(cfg.data)
    train = _round_robin(splits.train, steps * batch_size)
    test = _round_robin([t for t in splits.test if t.instances], n_test)
    emb = setup.embed_tasks(splits.train + splits.test)
    prompts = [setup.wrap(task_prompt(t, i)) for t, i in test]
    test_keys = [t.name for t, _ in test]
    test_emb = torch.stack([emb[k] for k in test_keys])
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        base_logits = bb.model(**enc).logits
    rows = []
    for kind, mode in VARIANTS:
        t0 = time.perf_counter()
        mcfg = replace(cfg.model, proactive_mode=mode or cfg.model.proactive_mode)
        model = setup.model(kind, model_cfg=mcfg).eval()
        with torch.no_grad():
            out = model(enc["input_ids"], attention_mask=enc["attention_mask"], task_emb=test_emb,
                        task_keys=test_keys)
        diff = (out.logits - base_logits).abs().max().item()
        name = kind if mode is None else f"{kind}:{mode}"
        opt = adamw([{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}])
        # no clipping: the check reports how the model trains as built
        step = OptimizerStep(model, opt, max_grad_norm=0.0, where=f"model check of {name}",
                             hint=f"nothing is saved; the model as configured diverges at lr {lr}: "
                                  "try other model.* settings")
        losses = []
        for s in range(steps):
            chunk = train[s * batch_size:(s + 1) * batch_size]
            encoded = [encode_pair(tok, setup.wrap(task_prompt(t, i)), i.outputs[0], max_length=max_length)
                       for t, i in chunk]
            keys = [t.name for t, _ in chunk]
            batch = pad_batch(encoded, keys, pad_id=tok.pad_token_id, left=False)
            losses += step(s, [MicroBatch(batch, task_emb=torch.stack([emb[k] for k in keys]))]).losses
        model.eval()
        preds = predict(model, tok, test, task_emb=emb, prompt=cfg.prompt, wrap=setup.wrap,
                        max_new_tokens=16, desc=f"generate {kind}")
        answers = [preds[i.id] for _, i in test]
        rows.append({"model": name, "max_logit_diff_before_training": diff, "losses": losses,
                     "answers": answers, "seconds": time.perf_counter() - t0})
        log.info("%s: max |logit - backbone| %.2e before training; losses %s; answers %s (%.1f s)", name, diff,
                 [round(x, 3) for x in losses], answers, rows[-1]["seconds"])
    return rows
