"""``significance.json`` and ``seeds.json``: the statistics of :mod:`promoe.analysis.stats` over a run's rows.

Over the test tasks, ``significance.json`` holds:

* ``models``: per row, 95% bootstrap CIs of task means and of instance means; ``per_category_rougeL``;
* ``paired``: the reference (:data:`promoe.registry.REFERENCE`) against every other row over their
  common tasks, with Holm-adjusted Wilcoxon p values over that family (``p_wilcoxon_holm``);
* ``ablations``: per ablation row (``<ABLATED>-<variant>``) and the experts model for context
  (:func:`promoe.analysis.rows.experts_model`), the paired change *row − reference* per metric over
  common tasks, with both rows' means on those tasks (``mean``, ``reference_mean``);
* ``headroom``: per metric, the routing headroom ``oracle − uniform`` (paired) and the share of it each
  model, router and ablation row recovers, with a bootstrap CI;
* ``zero_vs_few_shot``: per model row with a condition row (``<model>-<condition>``), the zero-shot
  and per-condition ROUGE-L CIs and the paired differences ``<reference> − <model>-<condition>``
  (``<reference>_minus_<condition>``);
* ``routing_similarity``: per routing row, Spearman rho between tasks' routing similarity and their
  description similarity with a Mantel permutation p (``n_perm`` permutations), and the mean routing
  similarity of same- and different-category task pairs (:func:`promoe.analysis.stats.routing_similarity`).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from promoe.analysis.rows import experts_model
from promoe.analysis.rundata import LIKELIHOOD, METRICS, RunData, metrics_of, task_rows
from promoe.analysis.stats import (
    aggregate_seeds,
    bootstrap_ci,
    holm,
    paired_test,
    routing_similarity,
    share_recovered,
)
from promoe.registry import HEADROOM, REFERENCE, conditions, entry, model_key, of_kind, row_group

log = logging.getLogger(__name__)

MAX_PERMUTATIONS = 2000


def _vals(rows: dict[str, dict], metric: str) -> dict[str, float]:
    return {t: r[metric] for t, r in rows.items()}


def ablations(rows_of: dict[str, dict[str, dict]], *, n_boot: int, seed: int) -> dict:
    """Per ablation row (and the experts model for context): paired ``row − reference`` over common
    tasks; empty without the reference or without any ablation row."""
    if REFERENCE not in rows_of or not any(row_group(m) == "ablation" for m in rows_of):
        return {}
    ref, context, out = rows_of[REFERENCE], experts_model(), {}
    for m, rows in rows_of.items():
        if m != context and row_group(m) != "ablation":
            continue
        common = sorted(set(rows) & set(ref))
        if not common:
            log.warning("%s shares no test task with %s; left out of the ablation table", m, REFERENCE)
            continue
        out[m] = {metric: {**paired_test(_vals(rows, metric), _vals(ref, metric), n_boot=n_boot, seed=seed),
                           "mean": float(np.mean([rows[t][metric] for t in common])),
                           "reference_mean": float(np.mean([ref[t][metric] for t in common]))}
                  for metric in metrics_of(rows, ref)}
    return out


def zero_vs_few_shot(models: dict[str, dict], rows_of: dict[str, dict[str, dict]], *, n_boot: int,
                     seed: int) -> dict:
    """Per model row with a ``<model>-<condition>`` row: ROUGE-L CIs zero-shot and per condition and
    the paired differences ``<reference> − <model>-<condition>`` (task means)."""
    out = {}
    for base in (r.name for r in of_kind("model")):
        names = {"zero_shot": base} | {k: f"{base}-{k}" for k in conditions()}
        if not any(names[k] in rows_of for k in conditions()):
            continue
        entry: dict = {k: models[n]["rougeL_instance"] if n in models else None for k, n in names.items()}
        for k in conditions():
            other = rows_of.get(names[k])
            ok = REFERENCE in rows_of and other is not None and set(other) & set(rows_of[REFERENCE])
            entry[f"{REFERENCE}_minus_{k}"] = {
                metric: paired_test(_vals(rows_of[REFERENCE], metric), _vals(other, metric), n_boot=n_boot, seed=seed)
                for metric in metrics_of(rows_of[REFERENCE], other)} if ok else None
        out[base] = entry
    return out


def headroom(rows_of: dict[str, dict[str, dict]], *, n_boot: int, seed: int) -> dict:
    """Per metric: the routing headroom ``oracle − uniform`` (paired, :data:`promoe.registry.HEADROOM`) and,
    for every other routed row, the share of it the row recovers (``(row − uniform) / (oracle − uniform)``);
    empty without both rows."""
    floor, ceiling = HEADROOM
    if floor not in rows_of or ceiling not in rows_of:
        return {}
    out: dict = {}
    for metric in metrics_of(rows_of[floor], rows_of[ceiling]):
        lo, hi = _vals(rows_of[floor], metric), _vals(rows_of[ceiling], metric)
        result = {"headroom": paired_test(hi, lo, n_boot=n_boot, seed=seed), "recovered": {}}
        for m, rows in rows_of.items():
            heuristic = (e := entry(m)) is not None and e.kind == "heuristic"
            routed = row_group(m) in ("zero-shot", "routing", "ablation") and m not in HEADROOM and not heuristic
            if routed and metric in metrics_of(rows) and set(rows) & set(lo) & set(hi):
                result["recovered"][m] = share_recovered(_vals(rows, metric), lo, hi, n_boot=n_boot, seed=seed)
        out[metric] = result
    return out


def significance(data: RunData, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Bootstrap CIs per row (task and instance means), per category, paired tests, ablations,
    zero- vs few-shot differences and routing-vs-description similarity (see the module docstring)."""
    models, per_cat, rows_of = {}, {}, {}
    for m, s in data.scores.items():
        rows = rows_of[m] = task_rows(s, data.test_tasks)
        n = {t: r["n"] for t, r in rows.items()}
        entry: dict = {"n": sum(n.values()), "n_tasks": len(rows)}
        for metric in metrics_of(rows):
            vals = _vals(rows, metric)
            entry[metric] = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
            entry[f"{metric}_instance"] = bootstrap_ci(vals, n_boot=n_boot, seed=seed, weights=n)
        models[m] = entry
        by_cat: dict[str, list[str]] = defaultdict(list)
        for t, r in rows.items():
            by_cat[r["category"]].append(t)
        per_cat[m] = {c: bootstrap_ci({t: rows[t]["rougeL"] for t in ts}, n_boot=n_boot, seed=seed,
                                      weights={t: rows[t]["n"] for t in ts}) for c, ts in sorted(by_cat.items())}
    ref = REFERENCE if REFERENCE in data.scores else next(iter(data.scores))
    paired = {o: {metric: paired_test(_vals(rows_of[ref], metric), _vals(rows_of[o], metric), n_boot=n_boot,
                                      seed=seed) for metric in metrics_of(rows_of[ref], rows_of[o])}
              for o in data.scores if o != ref and set(rows_of[o]) & set(rows_of[ref])}
    for metric in (*METRICS, LIKELIHOOD):  # Holm over the comparisons that have the metric
        for o, p in holm({o: t[metric]["p_wilcoxon"] for o, t in paired.items() if metric in t}).items():
            paired[o][metric]["p_wilcoxon_holm"] = p
    n_perm = min(n_boot, MAX_PERMUTATIONS)
    return {"n_boot": n_boot, "seed": seed, "alpha": 0.05, "reference": ref,
            "n_test_tasks": None if data.test_tasks is None else len(data.test_tasks),
            "models": models, "per_category_rougeL": per_cat, "paired": paired,
            "ablations": ablations(rows_of, n_boot=n_boot, seed=seed),
            "zero_vs_few_shot": zero_vs_few_shot(models, rows_of, n_boot=n_boot, seed=seed),
            "headroom": headroom(rows_of, n_boot=n_boot, seed=seed),
            "n_perm": n_perm,
            "routing_similarity": routing_similarity(data.routing, data.embeddings, data.task_categories(),
                                                     keep=data.test_tasks, n_perm=n_perm, seed=seed)}


def seed_summary(seeds: dict[str, dict[str, dict]]) -> dict:
    """Per row: :func:`~promoe.analysis.stats.aggregate_seeds` of the overall ROUGE-L and EM over the
    seeds that scored it."""
    models = sorted({m for s in seeds.values() for m in s}, key=model_key)
    return {m: {"seeds": [k for k in seeds if m in seeds[k]],
                **{metric: aggregate_seeds([s[m][metric] for s in seeds.values() if m in s]) for metric in METRICS}}
            for m in models}
