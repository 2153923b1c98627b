"""Using a trained model of a run: score it zero-shot on any task file, or answer one new instance.

``promoe eval --run DIR --model NAME --tasks FILE`` and ``promoe predict --run DIR --model NAME
--definition TEXT --input TEXT`` rebuild the model from the run's resolved config, the backbone cache
and the run's ``train/<model>/best.safetensors`` (safetensors only; nothing is unpickled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from promoe import registry
from promoe.config import ExperimentConfig, load_config
from promoe.data.schema import Instance, Task, require_text
from promoe.data.sources import load_tasks
from promoe.errors import PromoeError
from promoe.evaluation.predict import eval_items, predict, write_predictions
from promoe.io import read_references
from promoe.model.moe_model import MoEModel
from promoe.model.stats import RoutingStats
from promoe.rundir import USER_EVAL, guard_output
from promoe.setup import Setup


@dataclass
class Trained:
    """A model of a run, and the run's setup (tokenizer, prompt format, description encoder)."""

    setup: Setup
    model: MoEModel

    @property
    def cfg(self) -> ExperimentConfig:
        return self.setup.cfg

    @property
    def tokenizer(self):
        return self.setup.tokenizer

    def wrap(self, text: str) -> str:
        return self.setup.wrap(text)

    def embed(self, tasks: list[Task]) -> dict[str, torch.Tensor]:
        return self.setup.embed_tasks(tasks)


def load_trained(run_dir: str | Path, name: str, *, dtype: str | None = None) -> Trained:
    """Rebuild model ``name`` (a trained model row: dense, moe, promoe, upcycled; or backbone = untrained) of the
    run in ``run_dir``; ``dtype`` replaces the run's ``model.dtype`` (e.g. fp32 for an export)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise PromoeError(f"{run_dir}: no config.yaml — not a run folder (give the folder run_experiment made)")
    cfg = load_config(str(run_dir / "config.yaml"), [f"model.dtype={dtype}"] if dtype else [])
    names = [r.name for r in registry.of_kind("model") if r.trained] + ["backbone"]
    if name not in names:
        raise PromoeError(f"unknown model {name!r}; choose from {names}")
    weights = run_dir / "train" / name / "best.safetensors"
    if name != "backbone" and not weights.exists():
        raise PromoeError(f"{weights}: missing — was model {name!r} trained in this run? (train.models)")
    setup = Setup.load(cfg)
    model = setup.model("dense" if name == "backbone" else name, None if name == "backbone" else weights, share=False,
                        experts=setup.experts_of(name, run_dir))
    return Trained(setup, model.eval())


def eval_task_file(run_dir: str | Path, name: str, tasks_file: str | Path, out_dir: str | Path | None = None) -> dict:
    """Score model ``name`` zero-shot on every instance of ``tasks_file``; writes official-format files."""
    out = Path(out_dir) if out_dir else Path(run_dir) / USER_EVAL / Path(tasks_file).name.split(".")[0]
    guard_output(out, flag="--output-dir", folder=True, inputs=[tasks_file],
                 writes=[out / f for f in ("references.jsonl", f"predictions/{name}.jsonl", f"scores/{name}.json")])
    tasks = load_tasks(tasks_file)
    items = eval_items(tasks, origins=("instance",))
    if not items:
        raise PromoeError(f"{tasks_file}: the tasks hold no instances to score")
    if (out / "references.jsonl").is_file():  # written once per folder: it must be this file's
        have = {r.id: r.references for r in read_references(out / "references.jsonl")}
        if have != {i.id: i.outputs for _, i in items}:
            raise PromoeError(f"{out}: holds the references of another task file (references.jsonl), so this "
                              "file's answers would be scored against them: give --output-dir a new folder")
    trained = load_trained(run_dir, name)
    preds = predict(trained.model, trained.tokenizer, items, task_emb=trained.embed(tasks),
                    prompt=trained.cfg.prompt, wrap=trained.wrap, batch_size=trained.cfg.eval.batch_size,
                    max_new_tokens=trained.cfg.eval.max_new_tokens, max_length=trained.cfg.eval.max_length,
                    batch_tokens=trained.cfg.eval.batch_tokens, prefix_cache=trained.cfg.eval.prefix_cache,
                    desc=f"eval {name}")
    return write_predictions(out, name, items, preds, tasks)


def predict_one(run_dir: str | Path, name: str, definition: str, text: str) -> dict:
    """Answer one instance of a new task; also the experts each MoE layer chose for it."""
    definition, text = require_text(definition, field="--definition"), require_text(text, field="--input")
    trained = load_trained(run_dir, name)
    task = Task(name="user_task", definition=definition, instances=(Instance("user-0", text, ("",)),))
    n_experts = trained.model.moe_layers[0].experts.n_experts
    stats = RoutingStats(len(trained.model.moe_layers), n_experts)
    answer = predict(trained.model, trained.tokenizer, eval_items([task]), task_emb=trained.embed([task]),
                     prompt=trained.cfg.prompt, wrap=trained.wrap, max_new_tokens=trained.cfg.eval.max_new_tokens,
                     max_length=trained.cfg.eval.max_length, prefix_cache=trained.cfg.eval.prefix_cache, stats=stats,
                     desc="predict")["user-0"]
    share = stats.load / np.maximum(stats.load.sum(1, keepdims=True), 1)
    layers = []
    for layer, row in enumerate(share):
        top = np.argsort(-row)[: min(4, n_experts)]
        layers.append({"layer": trained.model.slots[layer],
                       "experts": {int(e): round(float(row[e]), 3) for e in top if row[e] > 0}})
    return {"model": name, "answer": answer, "routing": layers}
