"""Training and zero-shot evaluation of the models of the experiment, stage by stage.

Shared work is done once per run: the backbone is loaded once, every task Definition is embedded
once, the frozen lower layers are computed once per training example and reused by every model.
A stage whose outputs exist (``scores/<model>.json``) is not redone; an interrupted training resumes
from its last checkpoint.
"""

from __future__ import annotations

import copy
import gc
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import Tensor
from tqdm.auto import tqdm

from promoe.ablations import PARAPHRASES, ablated_descriptions, read_paraphrases
from promoe.config import CompareConfig, ExperimentConfig, PromptConfig
from promoe.data.examples import TrainExample, build_examples
from promoe.data.location import data_root
from promoe.data.splits import TaskSplits
from promoe.errors import DataError
from promoe.evaluate import Variant, eval_items, predict_variants, write_predictions
from promoe.fewshot import fewshot_tasks, run_fewshot
from promoe.io import read_predictions, read_references, references_of, write_npz
from promoe.metrics import score
from promoe.model.backbone import load_backbone
from promoe.model.moe_model import MoEModel, build_model, replace_routers, share_frozen_weights, variant_copy
from promoe.model.prompting import chat_prompt
from promoe.model.stats import RoutingStats
from promoe.model.task_encoder import build_task_encoder
from promoe.model.task_routing import KNNRouting, SkillRouting, task_routed, task_skills
from promoe.resources import record_cut, record_stage
from promoe.train import Trainer, batch_of, load_trainable

log = logging.getLogger(__name__)


class LowerCache:
    """Lower hidden states per training example, computed on first use and shared by all models.

    Each example is computed alone (no padding): its hidden states do not depend on which batch first
    needed it, so a run resumed after a kill caches the same values as an uninterrupted one (a padded
    batch of other examples changes the last bits), and without padding it is also ~2x faster on CPU.
    """

    def __init__(self) -> None:
        self.store: dict[int, Tensor] = {}
        self.seconds = 0.0

    def __call__(self, model: MoEModel, idx: Sequence[int], input_ids: Tensor, mask: Tensor) -> Tensor:
        missing = [j for j, i in enumerate(idx) if i not in self.store]
        if missing:
            t0 = time.perf_counter()
            for j in missing:  # right padded: the example's tokens come first
                n = int(mask[j].sum())
                self.store[idx[j]] = model.lower_hidden(input_ids[j:j + 1, :n], mask[j:j + 1, :n])[0]
            self.seconds += time.perf_counter() - t0
        out = torch.zeros(len(idx), input_ids.shape[1], next(iter(self.store.values())).shape[-1])
        for j, i in enumerate(idx):
            h = self.store[i]
            out[j, : h.shape[0]] = h
        return out


def routing_profiles(model: MoEModel, examples: Sequence[TrainExample], per_task: int, lower: LowerCache | None,
                     pad_id: int, batch_size: int = 8, seen: Collection[int] = ()) -> tuple[list[str], np.ndarray]:
    """Task-level routing of a trained token-level MoE on training tasks: mean router probability per
    layer and expert over the tokens of ``per_task`` examples of each task -> (names, (N, L, E)).
    Examples ``seen`` in training batches are taken first (their lower hidden states are cached); the
    choice depends on the training plan only, not on what a resumed run has cached."""
    picked: dict[str, list[int]] = {}
    seen = set(seen)
    for i in sorted(range(len(examples)), key=lambda i: i not in seen):  # examples training used first
        if len(picked.setdefault(examples[i].task, [])) < per_task:
            picked[examples[i].task].append(i)
    order = sorted((i for idx in picked.values() for i in idx), key=lambda i: len(examples[i].input_ids))
    sums: dict[str, np.ndarray] = {}
    model.eval()
    with torch.no_grad():
        for s in tqdm(range(0, len(order), batch_size), desc="routing profiles", dynamic_ncols=True):
            idx = order[s:s + batch_size]
            b = batch_of(examples, idx, pad_id, model.is_seq2seq)
            hidden = lower(model, idx, b.input_ids, b.attention_mask) if lower is not None else None
            out = model(input_ids=None if hidden is not None else b.input_ids, attention_mask=b.attention_mask,
                        lower=hidden, routing_only=True)
            m = b.attention_mask.float()[..., None]  # (B, T, 1)
            probs = torch.stack([(r.router.probs.float() * m).sum(1) / m.sum(1) for r in out.routing], 1)  # (B, L, E)
            for key, p in zip(b.task_keys, probs.numpy(), strict=True):
                sums[key] = sums.get(key, 0) + p
    names = sorted(sums)
    return names, np.stack([sums[n] / len(picked[n]) for n in names])


class Evaluation:
    """Scores rows (a model, or a routing / description variant of one) and writes their files."""

    def __init__(self, cfg: ExperimentConfig, splits: TaskSplits, run_dir: Path, acc: Accelerator, tokenizer,
                 wrap, times: dict[str, float]) -> None:
        self.cfg, self.splits, self.run_dir, self.acc, self.tok, self.wrap = cfg, splits, run_dir, acc, tokenizer, wrap
        self.times = times
        self.items = eval_items(splits.test)  # the test split holds positive examples only when they are scored
        self.results: dict[str, dict] = {}

    def done(self, name: str) -> bool:
        """True (and the row's scores loaded) when ``name`` was scored by an earlier run of this folder."""
        if name in self.results:
            return True
        scores, preds = self.run_dir / "scores" / f"{name}.json", self.run_dir / "predictions" / f"{name}.jsonl"
        if scores.exists() and preds.exists():
            predicted = read_predictions(preds)  # a row may cover some tasks only (paraphrase ablation)
            refs = [r for r in read_references(self.run_dir / "references.jsonl") if r.id in predicted]
            self.results[name] = score(predicted, refs)
            log.info("%s: already evaluated, kept", name)
            return True
        return False

    def stats_for(self, model: MoEModel) -> RoutingStats | None:
        n_experts = model.moe_layers[0].experts.n_experts
        return RoutingStats(len(model.moe_layers), n_experts) if n_experts > 1 else None  # dense: nothing routed

    def run(self, variants: list[Variant], *, prompt: PromptConfig | None = None, label: str = "eval") -> None:
        """Predict with every variant not yet scored (one shared prompt pass per batch) and score them."""
        variants = [v for v in variants if not self.done(v.name)]
        if not variants:
            return
        t1 = time.perf_counter()
        acc = self.acc
        for v in variants:
            v.model.to(acc.device)
            v.stats = self.stats_for(v.model)
        counts: dict[str, int] = {}
        with acc.autocast():
            preds = predict_variants(variants, self.tok, self.items[acc.process_index::acc.num_processes],
                                     prompt=prompt or self.cfg.prompt, wrap=self.wrap,
                                     batch_size=self.cfg.eval.batch_size, max_new_tokens=self.cfg.eval.max_new_tokens,
                                     max_length=self.cfg.eval.max_length,
                                     desc=f"{label} {', '.join(v.name for v in variants)}",
                                     disable_progress=not acc.is_main_process, progress=self.progress_file(label),
                                     counts=counts)
        record_cut(self.times, label, counts["cut"], counts["prompts"], self.cfg.eval.max_length)
        self.record(variants, preds, label)
        record_stage(self.times, label, time.perf_counter() - t1)

    def progress_file(self, label: str) -> Path:
        """Where this process saves the progress of pass ``label`` (removed once its rows are written)."""
        rank = f".rank{self.acc.process_index}" if self.acc.num_processes > 1 else ""
        return self.run_dir / "progress" / f"{label}{rank}.json"

    def record(self, variants: list[Variant], preds: dict[str, dict[str, str]], label: str) -> None:
        """Gather shards, then write predictions, scores and routing statistics of ``variants``; the
        progress file of pass ``label`` goes once they are written."""
        acc = self.acc
        for v in variants:
            p, stats = preds[v.name], v.stats
            if acc.num_processes > 1:
                shares = gather_object([(p, None if stats is None else stats.state())])
                p = {k: x for part, _ in shares for k, x in part.items()}
                if stats is not None:
                    stats = RoutingStats(stats.n_layers, stats.n_experts)
                    for _, state in shares:
                        stats.merge(state)
            items = [(t, i) for t, i in self.items if v.tasks is None or t.name in v.tasks]
            if acc.is_main_process:
                if stats is not None:
                    (self.run_dir / "routing").mkdir(parents=True, exist_ok=True)
                    stats.save(self.run_dir / "routing" / f"{v.name}.npz")
                self.results[v.name] = write_predictions(self.run_dir, v.name, items, p, self.splits.test,
                                                         all_items=self.items)
            else:
                ids = {i.id for _, i in items}
                self.results[v.name] = score(p, [r for r in references_of(self.splits.test) if r.id in ids])
            acc.wait_for_everyone()
            log.info("%s: ROUGE-L %.2f, EM %.2f (%d instances)", v.name, self.results[v.name]["rougeL"],
                     self.results[v.name]["exact_match"], self.results[v.name]["n"])
        self.progress_file(label).unlink(missing_ok=True)


def _embed(encoder, texts: dict[str, str]) -> dict[str, Tensor]:
    names = sorted(texts)
    return dict(zip(names, encoder.encode([texts[n] for n in names]), strict=True)) if names else {}


def run_models(cfg: ExperimentConfig, splits: TaskSplits, run_dir: Path, times: dict[str, float],
               accelerator: Accelerator | None = None) -> dict[str, dict]:
    """Train the configured models, then score every row of the experiment; returns scores per row.

    Rows: the untrained backbone; ``dense``, ``moe``, ``promoe``; routing baselines on the trained
    ``moe`` (``knn``, ``skill``, ``uniform``, ``random``); description ablations of ``promoe``
    (``promoe-<ablation>``); in-context rows (``<model>-icl``); few-shot fine-tuning (``<model>-fewshot``).
    With several processes, training is data-parallel and evaluation is sharded; the main process
    writes every file.
    """
    acc = accelerator or Accelerator(mixed_precision=cfg.train.mixed_precision)
    c = cfg.compare
    t0 = time.perf_counter()
    bb = load_backbone(cfg.model, seed=cfg.seed)
    tok = bb.tokenizer
    encoder = build_task_encoder(cfg.model)
    tasks = splits.train + splits.val + splits.test
    task_emb = _embed(encoder, {t.name: t.definition for t in tasks})
    if acc.is_main_process:
        save_task_embeddings(run_dir / "task_embeddings.npz", splits, task_emb)
    wrap = (lambda text: chat_prompt(tok, text)) if not bb.is_seq2seq else (lambda text: text)
    ev = Evaluation(cfg, splits, run_dir, acc, tok, wrap, times)
    record_stage(times, "load", time.perf_counter() - t0)

    def fresh(kind: str) -> MoEModel:
        model = build_model(copy.deepcopy(bb.model), bb.family, cfg.model, kind, seed=cfg.seed)
        share_frozen_weights(model, bb.model)
        return model

    def trained_model(kind: str) -> MoEModel:
        """Model ``kind`` with its best trained weights (``train/<kind>/best.safetensors``)."""
        model = fresh(kind)
        load_trainable(model, run_dir / "train" / kind / "best.safetensors")
        return model.eval()

    # -- meta-training (resumes; a finished training only reloads its best weights) ----------------
    # A trained model waits on disk, not in memory, while the next one trains: the peak memory of
    # training is one model with its gradients and optimizer state, whatever the number of models.
    lower = LowerCache()
    examples: list[TrainExample] | None = None
    profiles = None
    for kind in cfg.train.models:
        if examples is None:
            common = dict(max_length=cfg.train.max_length, max_target_length=cfg.train.max_target_length,
                          prompt=cfg.prompt, wrap=wrap, seq2seq=bb.is_seq2seq)
            examples = build_examples(splits.train, tok, per_task=cfg.train.examples_per_task, **common)
            val_examples = build_examples(splits.val, tok, per_task=cfg.train.val_examples_per_task, **common)
            log.info("training examples: %d from %d tasks; validation: %d from %d tasks", len(examples),
                     len(splits.train), len(val_examples), len(splits.val))
            record_cut(times, "train", sum(e.cut for e in examples + val_examples),
                       len(examples) + len(val_examples), cfg.train.max_length)
        t1 = time.perf_counter()
        model = fresh(kind)
        trainer = Trainer(model, cfg=cfg.train, examples=examples, val_examples=val_examples, task_emb=task_emb,
                          pad_id=tok.pad_token_id, out_dir=run_dir / "train" / kind, seed=cfg.seed,
                          lower=lower if model.split is not None else None, accelerator=acc)
        result = trainer.fit(desc=f"train {kind}")
        record_stage(times, f"train_{kind}", time.perf_counter() - t1)
        log.info("%s: trained %d steps, best validation loss %s at step %s", kind, result.steps,
                 result.best_val_loss, result.best_step)
        model = acc.unwrap_model(trainer.model).eval()  # holds the best weights
        seen = {i for idx in trainer.plan for i in idx}  # the training examples its batches used
        del trainer
        acc.free_memory()  # Accelerate keeps references to prepared models and optimizers
        if kind == "moe" and {"knn", "skill"} & set(c.routers):
            profiles = load_or_make_profiles(run_dir / "routing_profiles" / "moe.npz", acc, partial(
                routing_profiles, model, examples, c.profile_examples_per_task,
                lower if model.split is not None else None, tok.pad_token_id, cfg.eval.batch_size, seen))
        del model
        gc.collect()
    times["lower_cache"] = lower.seconds
    lower.store.clear()  # training is over: free the cached hidden states
    gc.collect()
    trained = {kind: trained_model(kind) for kind in cfg.train.models}

    # -- zero-shot rows, one shared prompt pass -------------------------------------------------------
    rows: list[Variant] = []
    if cfg.eval.backbone:
        rows.append(Variant("backbone", fresh("dense")))
    rows += [Variant(kind, m, task_emb if kind == "promoe" else None) for kind, m in trained.items()]
    if "moe" in trained:
        rows += router_rows(trained["moe"], c, splits, profiles, task_emb, seed=cfg.seed)
    if "promoe" in trained:
        rows += ablation_rows(trained["promoe"], cfg, splits, encoder)
    ev.run(rows, label="eval")
    # -- in context: Definition + positive examples in the prompt ---------------------------------------
    by_name = {v.name: v for v in rows}
    icl = [Variant(f"{m}-icl", by_name[m].model, by_name[m].task_emb) for m in c.icl_models if m in by_name]
    ev.run(icl, prompt=replace(cfg.prompt, n_pos_examples=c.icl_examples), label="icl")
    # -- few-shot fine-tuning per test task -------------------------------------------------------------
    few = {f"{m}-fewshot": trained[m] for m in c.fewshot_models if m in trained}
    few = {n: m for n, m in few.items() if not ev.done(n)}
    if few:
        t1 = time.perf_counter()
        chosen = set(fewshot_tasks(list(dict.fromkeys(t.name for t, _ in ev.items)), c.fewshot_tasks))
        variants = {n: Variant(n, m, task_emb if m.hyper is not None else None, ev.stats_for(m), tasks=chosen)
                    for n, m in few.items()}
        items = [(t, i) for t, i in ev.items if t.name in chosen]
        preds = run_fewshot(few, variants, items[acc.process_index::acc.num_processes], tok, cfg=cfg, wrap=wrap,
                            task_emb=task_emb, progress=ev.progress_file("fewshot"))
        ev.record(list(variants.values()), preds, "fewshot")
        record_stage(times, "fewshot", time.perf_counter() - t1)
    return ev.results


def load_or_make_profiles(path: Path, acc: Accelerator, make) -> tuple[list[str], np.ndarray]:
    """Training-task routing profiles of the trained ``moe`` (``routing_profiles/moe.npz``), made once."""
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return [str(n) for n in z["task_names"]], z["routing"]
    names, routing = make()
    if acc.is_main_process:
        write_npz(path, task_names=np.array(names, dtype=str), routing=routing)
    return names, routing


def save_task_embeddings(path: Path, splits: TaskSplits, task_emb: dict[str, Tensor]) -> None:
    """Description embeddings, categories and split of every task (read by the analysis)."""
    groups = (("train", splits.train), ("val", splits.val), ("test", splits.test))
    tasks = [(s, t) for s, ts in groups for t in ts]
    write_npz(path, task_names=np.array([t.name for _, t in tasks], dtype=str),
              embeddings=torch.stack([task_emb[t.name] for _, t in tasks]).float().numpy(),
              categories=np.array([t.category for _, t in tasks], dtype=str),
              split=np.array([s for s, _ in tasks], dtype=str))


def router_rows(moe: MoEModel, c: CompareConfig, splits: TaskSplits, profiles, task_emb: dict[str, Tensor],
                seed: int = 0) -> list[Variant]:
    """The routing baselines on the trained ``moe``'s experts (copies share its weights)."""
    rows = []
    train = {t.name: t for t in splits.train}
    for name in c.routers:
        model = variant_copy(moe)
        if name in ("uniform", "random"):
            replace_routers(model, name, seed=seed)
            rows.append(Variant(name, model))
            continue
        names, routing = profiles
        emb = torch.stack([task_emb[n] for n in names])
        table = torch.as_tensor(routing, dtype=torch.float32)
        if name == "knn":
            gen = KNNRouting(emb, table, k=c.knn_k, temperature=c.knn_temperature)
        else:
            gen = SkillRouting(emb, [task_skills(train[n]) for n in names], table, n_skills=c.skill_n,
                               temperature=c.skill_temperature)
        rows.append(Variant(name, task_routed(model, gen), task_emb))
    return rows


def ablation_rows(promoe: MoEModel, cfg: ExperimentConfig, splits: TaskSplits, encoder) -> list[Variant]:
    """``promoe`` with other descriptions fed to its router (the prompt is unchanged)."""
    c = cfg.compare
    paraphrases = None
    if "paraphrase" in c.ablations:
        try:
            path = data_root(cfg.data) / PARAPHRASES
        except (DataError, OSError):  # no data folder (official repository, HF source or own files)
            path = None
        if path is None or not path.exists():
            log.warning("paraphrase ablation skipped: no %s in the data folder", PARAPHRASES)
        else:
            paraphrases = read_paraphrases(path)
    rows = []
    for kind in c.ablations:
        if kind == "paraphrase" and paraphrases is None:
            continue
        texts = ablated_descriptions(kind, splits.test, seed=cfg.seed, paraphrases=paraphrases,
                                     paraphrase_index=c.paraphrase_index)
        if not texts:
            log.warning("ablation %s skipped: no test task has a replacement description", kind)
            continue
        rows.append(Variant(f"promoe-{kind}", promoe, _embed(encoder, texts), tasks=set(texts)))
    return rows
