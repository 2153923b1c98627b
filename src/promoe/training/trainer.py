"""Meta-training of one model on the training tasks, through Hugging Face Accelerate.

The same code runs on one CPU, one GPU or several processes (``accelerate launch`` / ``torchrun``):
every process takes its share of each global batch of the seeded sampling plan, the loss of a
micro-batch is its target-token sum over the global batch's target-token count (so accumulation and
data parallelism give exactly the one-process gradient), AdamW with warm-up and decay, gradient
clipping, validation loss on held-out *training* tasks for model selection, resumable safetensors
checkpoints, ``metrics.jsonl`` and a progress bar. The optimizer step itself is
:class:`promoe.training.loop.OptimizerStep`, shared with few-shot fine-tuning and ``promoe model check``.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_scheduler

from promoe.checkpoint import load_params as load_params  # where callers import these from
from promoe.checkpoint import load_trainable, read_metrics, resume, save_last, save_trainable
from promoe.config import TrainConfig
from promoe.data.collate import IGNORE, Encoded, pad_batch
from promoe.data.examples import TrainExample, sampling_plan
from promoe.io import atomic_write_text
from promoe.model.moe_model import MoEModel
from promoe.training.loop import MicroBatch, OptimizerStep, adamw, forward
from promoe.training.loop import TrainingError as TrainingError  # where callers import it from

log = logging.getLogger(__name__)

LowerFn = Callable[[MoEModel, Sequence[int], torch.Tensor, torch.Tensor], torch.Tensor]
"""``(model, example keys, input_ids, attention_mask) -> lower hidden states`` (shared, cached)."""


def val_key(i: int) -> int:
    """The key of validation example ``i`` in a :data:`LowerFn` cache; training example ``i`` is keyed ``i``."""
    return -1 - i


@dataclass
class TrainResult:
    steps: int
    best_val_loss: float | None
    best_step: int | None
    history: list[dict] = field(default_factory=list)
    val_top_k: int | None = None
    """Experts per token of the validation that chose the checkpoint (``model.eval_top_k``), when that differs
    from training's; the metrics rows then also hold ``val_loss_train_top_k`` (None: routed as in training)."""


def param_groups(model: MoEModel, lr: float, router_lr: float) -> list[dict]:
    """Optimizer groups of the trainable parameters: routers and hypernetwork at ``router_lr``."""
    fast = [p for n, p in model.named_parameters() if p.requires_grad and ("router" in n or n.startswith("hyper"))]
    ids = {id(p) for p in fast}
    slow = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": slow, "lr": lr}] + ([{"params": fast, "lr": router_lr}] if fast else [])


def batch_of(examples: Sequence[TrainExample], idx: Sequence[int], pad_id: int, seq2seq: bool):
    """The padded (right-padded) batch of ``examples[idx]``."""
    enc = [Encoded(list(examples[i].input_ids), list(examples[i].labels), 0) for i in idx]
    return pad_batch(enc, [examples[i].task for i in idx], pad_id=pad_id, left=False, seq2seq=seq2seq)


def _n_targets(examples: Sequence[TrainExample], idx: Sequence[int], seq2seq: bool) -> int:
    # a causal example predicts labels[1:]; its first label is prompt (IGNORE) by construction
    return sum(sum(lab != IGNORE for lab in (examples[i].labels if seq2seq else examples[i].labels[1:]))
               for i in idx)


class Trainer:
    """Trains one :class:`MoEModel`; ``out_dir`` receives metrics, checkpoints and ``best.safetensors``."""

    def __init__(self, model: MoEModel, *, cfg: TrainConfig, examples: Sequence[TrainExample],
                 val_examples: Sequence[TrainExample], task_emb: dict[str, torch.Tensor], pad_id: int,
                 out_dir: Path, seed: int = 0, lower: LowerFn | None = None,
                 accelerator: Accelerator | None = None, task_weight: dict[str, float] | None = None,
                 wording_emb: dict[str, torch.Tensor] | None = None, route_targets: dict[str, int] | None = None,
                 validate_first: bool = False) -> None:
        """``wording_emb``: ``{task: (n, d_task)}`` embeddings of other wordings of a training task's Definition, one
        of which (or the Definition) its examples carry at each step (:meth:`wording`). ``route_targets``: ``{task:
        expert}`` for the routing-target loss (``cfg.route_targets`` its weight). ``validate_first``: the model as
        given is a candidate checkpoint too (validated at step 0), e.g. a router fitted before meta-training."""
        self.validate_first = validate_first
        self.cfg, self.examples, self.val_examples, self.task_emb = cfg, examples, val_examples, task_emb
        self.wording_emb, self.route_targets = wording_emb or {}, route_targets or {}
        self.pad_id, self.out_dir, self.seed, self.lower = pad_id, Path(out_dir), seed, lower
        self.acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
        self.seq2seq = model.is_seq2seq
        self.raw = model
        with model.scoring_regime():  # validation routes as the model will be scored
            scored = model.top_ks
        self.val_top_k = model.cfg.eval_top_k if scored != model.top_ks else None
        opt = adamw(param_groups(model, cfg.lr, cfg.router_lr), weight_decay=cfg.weight_decay)
        sched = get_scheduler(cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup", opt,
                              num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps)
        # the scheduler is not prepared: Accelerate would step it once per process, but every process
        # here takes a share of one global batch, so one optimizer step is one scheduler step
        self.model, self.opt = self.acc.prepare(model, opt)
        self.sched = sched
        self.optimizer_step = OptimizerStep(
            self.model, self.opt, sched=sched, accelerator=self.acc, params=list(self.model.parameters()),
            max_grad_norm=cfg.max_grad_norm, where="meta-training",
            hint=f"the last good checkpoint is kept in {self.out_dir / 'last'}; try a lower train.lr, "
                 "train.max_grad_norm > 0 or train.mixed_precision=no")
        self.plan = sampling_plan(examples, steps=cfg.steps, batch_size=cfg.batch_size,
                                  temperature=cfg.temperature, seed=seed, task_weight=task_weight)

    # -- one step --------------------------------------------------------------------------------
    def wording(self, task: str, step: int | None) -> torch.Tensor:
        """The embedding of what the router reads for ``task`` at ``step``: the Definition, or at a training step
        one of its other wordings, drawn uniformly with the Definition for each (seed, step, task)."""
        pool = self.wording_emb.get(task) if step is not None else None
        if pool is None:
            return self.task_emb[task]
        j = random.Random(f"{self.seed}-{step}-{task}").randrange(len(pool) + 1)
        return self.task_emb[task] if j == 0 else pool[j - 1]

    def _micro(self, idx: Sequence[int], examples: Sequence[TrainExample], num_items: float,
               global_batch: int | None = None, step: int | None = None) -> MicroBatch:
        b = batch_of(examples, idx, self.pad_id, self.seq2seq)
        targets = None
        if step is not None and self.route_targets and self.cfg.route_targets > 0:
            targets = torch.tensor([self.route_targets.get(k, -1) for k in b.task_keys])
        lower = None
        if self.lower is not None:  # cache keys: training examples i >= 0, validation examples -1 - i
            keys = list(idx) if examples is self.examples else [val_key(i) for i in idx]
            model = self.acc.unwrap_model(self.model)
            lower = partial(self.lower, model, keys, b.input_ids, b.attention_mask)
        return MicroBatch(b, task_emb=torch.stack([self.wording(k, step) for k in b.task_keys]), lower=lower,
                          num_items=num_items, global_batch=global_batch, examples=list(idx), route_targets=targets,
                          route_target_weight=self.cfg.route_targets)

    def step(self, step: int) -> dict[str, float]:
        idx = self.plan[step]
        world, rank = self.acc.num_processes, self.acc.process_index
        mine = idx[rank::world]
        micro = self.cfg.micro_batch_size or len(mine)
        n_targets = _n_targets(self.examples, idx, self.seq2seq)
        chunks = [mine[i:i + micro] for i in range(0, len(mine), micro)]
        res = self.optimizer_step(step, [self._micro(c, self.examples, n_targets / world, len(idx), step)
                                         for c in chunks])
        stats = torch.tensor([sum(x / world for x in res.lm_losses), sum(x / world for x in res.aux_losses)],
                             device=self.acc.device)
        lm, aux = self.acc.reduce(stats, reduction="sum").tolist()
        return {"step": step + 1, "loss": lm + aux, "lm_loss": lm, "aux_loss": aux,
                "lr": self.sched.get_last_lr()[0]}

    def validate(self) -> float:
        """Token-mean loss on the validation examples (all processes see all of them), routed as the model is
        scored (:meth:`MoEModel.scoring_regime`): the checkpoint it chooses is the one that routing serves best."""
        with self.raw.scoring_regime():
            return self.validate_as_trained()

    @torch.no_grad()
    def validate_as_trained(self) -> float:
        """The validation loss routed as in training (the experts per token the model has now)."""
        self.model.eval()
        total, count, bs = 0.0, 0, max(1, self.cfg.micro_batch_size or self.cfg.batch_size)
        order = sorted(range(len(self.val_examples)), key=lambda i: len(self.val_examples[i].input_ids))
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            n = _n_targets(self.val_examples, idx, self.seq2seq)
            with self.acc.autocast():
                out = forward(self.model, self._micro(idx, self.val_examples, 1.0), self.acc.device)
            total += out.lm_loss.item()
            count += n
        self.model.train()
        return total / max(count, 1)

    # -- checkpoints -----------------------------------------------------------------------------
    def _save_last(self, step: int, state: dict) -> None:
        if self.acc.is_main_process:
            save_last(self.out_dir, self.acc.unwrap_model(self.model), self.opt, self.sched, {**state, "step": step})

    def _resume(self) -> dict:
        """The newest intact checkpoint's state, loaded into model, optimizer and scheduler (a damaged one is passed
        over with a warning: :func:`promoe.checkpoint.resume`)."""
        return resume(self.out_dir, self.acc.unwrap_model(self.model), self.opt, self.sched, self.cfg.steps)

    def _log(self, row: dict) -> None:
        if self.acc.is_main_process:
            with (self.out_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, desc: str = "train") -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # the random stream of training (dropout, router noise and jitter) starts from the seed, whatever
        # ran before in the process; a resume continues it from the checkpoint
        torch.manual_seed(self.seed)
        state = self._resume()
        if state["best_step"] is not None and state.get("val_top_k") != self.val_top_k:  # a checkpoint from before
            log.warning("%s: its best checkpoint was chosen by a validation routed with other top-k (%s, now %s); "
                        "delete the folder to train and choose again", self.out_dir, state.get("val_top_k"),
                        self.val_top_k)
        state["val_top_k"] = self.val_top_k
        start = state["step"]
        metrics = self.out_dir / "metrics.jsonl"
        if self.acc.is_main_process and metrics.exists():  # drop lines from after the checkpoint (all, at none)
            rows = read_metrics(metrics) if start else []  # (checked by _resume)
            atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= start))
        if start == 0 and self.validate_first and state["best_step"] is None:
            row = {"step": 0, "val_loss": self.validate()}
            state.update(best_val_loss=row["val_loss"], best_step=0, bad_validations=0)
            if self.acc.is_main_process:
                save_trainable(self.acc.unwrap_model(self.model), self.out_dir / "best.safetensors")
            self._log(row)
        bar = tqdm(range(start, self.cfg.steps), desc=desc, initial=start, total=self.cfg.steps,
                   disable=not self.acc.is_main_process, dynamic_ncols=True)
        for step in bar:
            row = self.step(step)
            done = step + 1
            if (self.cfg.eval_every and done % self.cfg.eval_every == 0) or done == self.cfg.steps:
                row["val_loss"] = self.validate()
                if self.val_top_k is not None:  # what choosing in the training regime would have seen
                    row["val_top_k"], row["val_loss_train_top_k"] = self.val_top_k, self.validate_as_trained()
                best = state["best_val_loss"]
                if best is None or row["val_loss"] < best:
                    state.update(best_val_loss=row["val_loss"], best_step=done, bad_validations=0)
                    if self.acc.is_main_process:
                        save_trainable(self.acc.unwrap_model(self.model), self.out_dir / "best.safetensors")
                else:
                    state["bad_validations"] += 1
            self._log(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", **({"val": f"{row['val_loss']:.3f}"} if "val_loss" in row else {}))
            stop = self.cfg.patience and state["bad_validations"] >= self.cfg.patience
            if done % self.cfg.checkpoint_every == 0 or done == self.cfg.steps or stop:
                self._save_last(done, state)
            if stop:
                log.info("%s: early stop at step %d (best %d)", desc, done, state["best_step"])
                break
        self.acc.wait_for_everyone()
        best_path = self.out_dir / "best.safetensors"
        if best_path.exists():
            load_trainable(self.acc.unwrap_model(self.model), best_path)
        history = read_metrics(metrics) if metrics.exists() else []
        return TrainResult(steps=self.cfg.steps, best_val_loss=state["best_val_loss"], best_step=state["best_step"],
                           history=history, val_top_k=self.val_top_k)
