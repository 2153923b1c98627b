"""Train a tiny MoE a few steps with the project's Trainer; run alone or under torchrun (gloo).

Usage: ``python dp_train.py OUT_DIR [kind]`` or ``torchrun --nproc-per-node 2 dp_train.py OUT_DIR``.
Writes OUT_DIR/init.safetensors and final.safetensors (trained parameters) from the main process.
"""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from promoe.config import ModelConfig, PromptConfig, TrainConfig
from promoe.data.examples import build_examples
from promoe.data.schema import Instance, Task
from promoe.model.backbone import load_backbone
from promoe.model.build import build_model
from promoe.model.task_encoder import HashingEncoder
from promoe.training.trainer import Trainer, save_trainable


def main(out: Path, kind: str = "promoe") -> None:
    torch.use_deterministic_algorithms(True)
    mcfg = ModelConfig(backbone="tiny-llama", n_moe_layers=2, n_experts=4, task_encoder="hashing", d_task=32,
                       d_hyper=16, aux_loss_weight=0.0, z_loss_weight=0.0)
    tcfg = TrainConfig(steps=4, batch_size=4, micro_batch_size=1, lr=1e-3, router_lr=1e-2, warmup_steps=0,
                       eval_every=0, checkpoint_every=100, max_length=64, max_target_length=8)
    bb = load_backbone(mcfg, seed=0)
    tasks = [Task(name=f"task{t}", definition=f"Task {t}: copy the {w}.",
                  instances=tuple(Instance(f"t{t}-{i}", f"{w} {i} {'x' * (i * 3)}", (f"{w}{i}",))
                                  for i in range(6)))
             for t, w in enumerate(["word", "number", "colour"])]
    examples = build_examples(tasks, bb.tokenizer, per_task=6, max_length=64, max_target_length=8,
                              prompt=PromptConfig())
    enc = HashingEncoder(32)
    emb = dict(zip([t.name for t in tasks], enc.encode([t.definition for t in tasks]), strict=True))
    model = build_model(bb.model, bb.family, mcfg, kind, seed=0)
    acc = Accelerator(cpu=True)
    trainer = Trainer(model, cfg=tcfg, examples=examples, val_examples=examples[:3], task_emb=emb,
                      pad_id=bb.tokenizer.pad_token_id, out_dir=out / "train", seed=0, accelerator=acc)
    if acc.is_main_process:
        save_trainable(acc.unwrap_model(trainer.model), out / "init.safetensors")
    trainer.fit()
    if acc.is_main_process:
        save_trainable(acc.unwrap_model(trainer.model), out / "final.safetensors")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])
