"""Scoring rows of a run: one generation pass for many rows, their files, and what an earlier run of the
folder already scored (``scores/<row>.json`` with its predictions: kept, not redone)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import gather_object

from promoe.config import ExperimentConfig, PromptConfig
from promoe.data.schema import Instance, Task
from promoe.data.splits import TaskSplits
from promoe.evaluation.decode import supports_shared_prefix
from promoe.evaluation.likelihood import reference_nll
from promoe.evaluation.predict import Variant, eval_items, predict_variants, write_predictions
from promoe.io import read_likelihood, read_predictions, read_references, references_of
from promoe.metrics import add_likelihood, score
from promoe.model.moe_model import MoEModel
from promoe.model.stats import RoutingStats
from promoe.resources import record_cut, record_stage, release_memory

log = logging.getLogger(__name__)


class Evaluation:
    """Scores rows (a model, or a routing / description variant of one) and writes their files."""

    def __init__(self, cfg: ExperimentConfig, splits: TaskSplits, run_dir: Path, acc: Accelerator, tokenizer,
                 wrap, times: dict[str, float]) -> None:
        self.cfg, self.splits, self.run_dir, self.acc, self.tok, self.wrap = cfg, splits, run_dir, acc, tokenizer, wrap
        self.times = times
        self.items = eval_items(splits.test)  # the test split holds positive examples only when they are scored
        self.results: dict[str, dict] = {}
        n = cfg.data.test_max_per_task  # each task's first n scored instances
        self.base_ids = {i.id for t in splits.test for _, i in eval_items([t])[:n]} \
            if cfg.data.headline_max_per_task is not None else None
        """The instances every row scores when the headline rows score more (None: every row scores all)."""

    def scope(self, variants: list[Variant]) -> list[Variant]:
        """``variants``, each limited to the instances its row scores: all for ``eval.headline_rows``, the
        first ``data.test_max_per_task`` of each task for the others."""
        for v in variants:
            if (ids := self.ids_of(v.name)) is not None:
                v.ids = ids
        return variants

    def ids_of(self, name: str) -> set[str] | None:
        """The instance ids row ``name`` scores: every one (None) for ``eval.headline_rows`` or when no row scores
        more than the others, else the first ``data.test_max_per_task`` of each task."""
        return None if name in self.cfg.eval.headline_rows else self.base_ids

    def instances_of(self, name: str, task: Task) -> list[Instance]:
        """The instances of ``task`` that row ``name`` scores (:meth:`scope`)."""
        ids = self.ids_of(name)
        return [i for _, i in eval_items([task]) if ids is None or i.id in ids]

    def prepare(self, variants: list[Variant]) -> list[Variant]:
        """``variants`` as they are scored: each limited to its instances (:meth:`scope`), its model on the device,
        routing as scored (:meth:`MoEModel.for_scoring`: ``model.eval_top_k`` experts when set, whichever way the
        model came — reloaded, straight from training, a copy with other routers) and a fresh routing record.
        Every scored row passes through here (:meth:`run`, the few-shot condition)."""
        for v in self.scope(variants):
            v.model.for_scoring().to(self.acc.device)
            v.stats = self.stats_for(v.model)
        return variants

    def done(self, name: str) -> bool:
        """True (and the row's scores loaded) when ``name`` was scored by an earlier run of this folder."""
        if name in self.results:
            return True
        scores, preds = self.run_dir / "scores" / f"{name}.json", self.run_dir / "predictions" / f"{name}.jsonl"
        if scores.exists() and preds.exists():
            predicted = read_predictions(preds)  # a row may cover some tasks only (paraphrase ablation)
            refs = [r for r in read_references(self.run_dir / "references.jsonl") if r.id in predicted]
            self.results[name] = score(predicted, refs)
            if (nll := self.run_dir / "likelihood" / f"{name}.jsonl").exists():
                self.results[name] = add_likelihood(self.results[name], read_likelihood(nll), refs)
            log.info("%s: already evaluated, kept", name)
            return True
        return False

    @staticmethod
    def stats_for(model: MoEModel) -> RoutingStats | None:
        n_experts = model.moe_layers[0].experts.n_experts
        return RoutingStats(len(model.moe_layers), n_experts) if n_experts > 1 else None  # dense: nothing routed

    def run(self, variants: list[Variant], *, prompt: PromptConfig | None = None, label: str = "eval") -> None:
        """Predict with every variant not yet scored (one shared prompt pass per batch) and score them."""
        variants = self.prepare([v for v in variants if not self.done(v.name)])
        if not variants:
            return
        t1 = time.perf_counter()
        acc = self.acc
        counts: dict[str, int] = {}
        # rows sharing the frozen lower layers score their references in the generation pass, from each prompt's
        # cache; the others in a pass of their own
        fused = all(supports_shared_prefix(v.model) for v in variants)
        nll: dict[str, dict[str, float]] = {v.name: {} for v in variants}
        with acc.autocast():
            preds = predict_variants(variants, self.tok, self.items[acc.process_index::acc.num_processes],
                                     prompt=prompt or self.cfg.prompt, wrap=self.wrap,
                                     batch_size=self.cfg.eval.batch_size, max_new_tokens=self.cfg.eval.max_new_tokens,
                                     max_length=self.cfg.eval.max_length, batch_tokens=self.cfg.eval.batch_tokens,
                                     desc=f"{label} {', '.join(v.name for v in variants)}",
                                     disable_progress=not acc.is_main_process, progress=self.progress_file(label),
                                     counts=counts, likelihood=nll if fused else None,
                                     max_target_length=self.cfg.train.max_target_length,
                                     prefix_cache=self.cfg.eval.prefix_cache)
        if not fused:
            t2 = time.perf_counter()
            nll = self.likelihood(variants, prompt or self.cfg.prompt, label)
            record_stage(self.times, f"{label} likelihood", time.perf_counter() - t2)
        record_cut(self.times, label, counts["cut"], counts["prompts"], self.cfg.eval.max_length)
        self.record(variants, preds, label, nll)
        release_memory()
        record_stage(self.times, label, time.perf_counter() - t1)

    def likelihood(self, variants: list[Variant], prompt: PromptConfig, label: str) -> dict[str, dict[str, float]]:
        """This process's share of every row's reference NLL (:mod:`promoe.evaluation.likelihood`)."""
        acc, cfg = self.acc, self.cfg
        with acc.autocast():
            return reference_nll(variants, self.tok, self.items[acc.process_index::acc.num_processes], prompt=prompt,
                                 wrap=self.wrap, batch_size=cfg.eval.batch_size, max_length=cfg.eval.max_length,
                                 max_target_length=cfg.train.max_target_length,
                                 desc=f"likelihood {', '.join(v.name for v in variants)}",
                                 disable_progress=not acc.is_main_process)

    def progress_file(self, label: str) -> Path:
        """Where this process saves the progress of pass ``label`` (removed once its rows are written)."""
        rank = f".rank{self.acc.process_index}" if self.acc.num_processes > 1 else ""
        return self.run_dir / "progress" / f"{label}{rank}.json"

    def record(self, variants: list[Variant], preds: dict[str, dict[str, str]], label: str,
               nll: dict[str, dict[str, float]]) -> None:
        """Gather shards, then write predictions, reference NLLs, scores and routing statistics of
        ``variants``; the progress file of pass ``label`` goes once they are written."""
        acc = self.acc
        for v in variants:
            p, stats, lik = preds[v.name], v.stats, nll[v.name]
            if acc.num_processes > 1:
                shares = gather_object([(p, None if stats is None else stats.state(), lik)])
                p = {k: x for part, _, _ in shares for k, x in part.items()}
                lik = {k: x for _, _, part in shares for k, x in part.items()}
                if stats is not None:
                    stats = RoutingStats(stats.n_layers, stats.n_experts)
                    for _, state, _ in shares:
                        stats.merge(state)
            items = [(t, i) for t, i in self.items if v.covers(t.name, i.id)]
            if acc.is_main_process:
                if stats is not None:
                    (self.run_dir / "routing").mkdir(parents=True, exist_ok=True)
                    stats.save(self.run_dir / "routing" / f"{v.name}.npz")
                self.results[v.name] = write_predictions(self.run_dir, v.name, items, p, self.splits.test,
                                                         all_items=self.items, nll=lik)
            else:
                ids = {i.id for _, i in items}
                refs = [r for r in references_of(self.splits.test) if r.id in ids]
                self.results[v.name] = add_likelihood(score(p, refs), lik, refs)
            acc.wait_for_everyone()
            log.info("%s: ROUGE-L %.2f, EM %.2f (%d instances)", v.name, self.results[v.name]["rougeL"],
                     self.results[v.name]["exact_match"], self.results[v.name]["n"])
        self.progress_file(label).unlink(missing_ok=True)
