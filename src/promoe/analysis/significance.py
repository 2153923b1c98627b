"""``significance.json`` and ``seeds.json``: the statistics of :mod:`promoe.analysis.stats` over a run's rows.

Over the test tasks, ``significance.json`` holds:

* ``resampling``: the unit every bootstrap resamples: ``group`` where ``splits.json`` names groups of related test
  tasks (``test_groups``, :mod:`promoe.data.groups`), whole groups drawn; ``task`` otherwise (runs from before
  the groups were written: each task its own group). Every interval and test also names its ``unit``;
* ``models``: per row, 95% bootstrap CIs of task means and of instance means; ``per_category_rougeL``;
* ``paired``: the reference (:data:`promoe.registry.REFERENCE`) against every other row over their
  common tasks, with Holm-adjusted Wilcoxon p values over these comparisons, per metric (``p_wilcoxon_holm``;
  the answer's verdicts follow ``family`` instead);
* ``ablations``: per ablation row (``<ABLATED>-<variant>``) and the experts model for context
  (:func:`promoe.analysis.rows.experts_model`), the paired change *row − reference* per metric over
  common tasks, with both rows' means on those tasks (``mean``, ``reference_mean``);
* ``headroom``: per metric, the routing headroom ``oracle − uniform`` (paired; ``detected``: its CI excludes 0),
  the in-sample ceiling's ``oracle_insample − uniform`` where the run scored it (``ceiling``), and the share
  of the headroom each model, router and ablation row recovers, with a bootstrap CI, given only where the
  headroom's CI over the three rows' tasks excludes 0 (:func:`~promoe.analysis.stats.share_recovered`);
  ``condition_headroom``: the same per condition that scored both (``oracle-<c> − uniform-<c>``, shares of
  the condition's rows);
* ``family``: the tests REPORT.md's answer prints (ROUGE-L), Holm-adjusted together, with the verdict each
  gets (:func:`promoe.analysis.family.family`);
* ``over_seeds`` (runs with several seeds): the reference against every row scored in every seed, each
  task's means averaged over the seeds, one paired test over tasks (:func:`over_seeds`);
* ``within_condition``: per condition with a ``<reference>-<condition>`` row, the paired
  ``<reference>-<condition> − <row>-<condition>`` for every other row scored in it — models, the headroom
  routers and the ablations the condition carries (the answer's questions asked again inside that condition,
  e.g. router-only prompts);
* ``zero_vs_few_shot``: per model row with a condition row (``<model>-<condition>``), the zero-shot
  and per-condition ROUGE-L CIs and the paired differences ``<reference> − <model>-<condition>``
  (``<reference>_minus_<condition>``);
* ``routing_similarity``: per routing row, Spearman rho between tasks' routing similarity and their
  description similarity with a Mantel permutation p (``n_perm`` permutations), and the mean routing
  similarity of same- and different-category task pairs (:func:`promoe.analysis.stats.routing_similarity`).

Every paired comparison is over the instances both (all three, for a headroom share) rows scored: per-task means
are taken over those (:func:`shared_rows`; ``n_instances`` says how many), so rows scored on more instances per
task (``eval.headline_rows``) are compared with the others on the ones they share.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from promoe.analysis.family import ALPHA, family
from promoe.analysis.resample import GROUP, TASK, group_ids
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
from promoe.registry import HEADROOM, REFERENCE, conditions, entry, model_key, of_kind, row_group, split_row

log = logging.getLogger(__name__)

MAX_PERMUTATIONS = 2000


def _vals(rows: dict[str, dict], metric: str) -> dict[str, float]:
    return {t: r[metric] for t, r in rows.items()}


def shared_rows(scores: list[dict], test_tasks: set[str] | None) -> tuple[list[dict[str, dict]], int]:
    """The per-task rows of several score dicts over the instances they *all* scored, and how many those are.

    Rows may be scored on different instances (``eval.headline_rows`` score more per task): each task's
    means are then recomputed from ``per_instance`` over the shared ids, so a paired comparison never sets
    one row's 8 instances of a task against another's 2. Score dicts without ``per_instance`` (runs before
    it was written) are taken as scored on the same instances."""
    inst = [s.get("per_instance") for s in scores]
    if any(not p for p in inst) or len({frozenset(p) for p in inst}) == 1:
        rows = [task_rows(s, test_tasks) for s in scores]
        common = set.intersection(*(set(r) for r in rows))
        return rows, sum(rows[0][t]["n"] for t in common)
    ids = set.intersection(*(set(p) for p in inst))
    out: list[dict[str, dict]] = []
    for s, per in zip(scores, inst, strict=True):
        by_task: dict[str, list[dict]] = {}
        for i in sorted(ids):
            by_task.setdefault(per[i]["task"], []).append(per[i])
        rows = {}
        for t, xs in sorted(by_task.items()):
            rows[t] = {"n": len(xs), "category": s["per_task"][t]["category"]}
            rows[t].update({m: float(np.mean([x[m] for x in xs])) for m in (*METRICS, LIKELIHOOD)
                            if all(m in x for x in xs)})
        out.append(task_rows({"per_task": rows}, test_tasks) if rows else rows)
    return out, sum(r["n"] for r in out[0].values())


@dataclass(frozen=True)
class Rows:
    """A run's score dicts by row name, read per task over each row's own instances (:meth:`own`) or over the
    instances several rows share (:meth:`shared`, for every paired statistic)."""

    scores: dict[str, dict]
    test_tasks: set[str] | None = None
    groups: dict[str, str] | None = None  # test task -> group: the bootstrap's unit (promoe.analysis.resample)

    def __contains__(self, name: str) -> bool:
        return name in self.scores

    def __iter__(self):
        return iter(self.scores)

    def own(self, name: str) -> dict[str, dict]:
        return task_rows(self.scores[name], self.test_tasks)

    def shared(self, *names: str) -> tuple[list[dict[str, dict]], int]:
        return shared_rows([self.scores[n] for n in names], self.test_tasks)


def _tests(ra: dict[str, dict], rb: dict[str, dict], n: int, *, n_boot: int, seed: int,
           groups: dict[str, str] | None = None) -> dict[str, dict]:
    """``a − b`` per metric (:func:`paired_test`) of two rows' shared per-task means, each with ``n_instances``."""
    if not set(ra) & set(rb):
        return {}
    return {metric: {**paired_test(_vals(ra, metric), _vals(rb, metric), n_boot=n_boot, seed=seed, groups=groups),
                     "n_instances": n} for metric in metrics_of(ra, rb)}


def _paired(rows: Rows, a: str, b: str, *, n_boot: int, seed: int) -> dict[str, dict]:
    """``a − b`` per metric over their shared instances (:func:`_tests`)."""
    (ra, rb), n = rows.shared(a, b)
    return _tests(ra, rb, n, n_boot=n_boot, seed=seed, groups=rows.groups)


def ablations(rows: Rows, *, n_boot: int, seed: int) -> dict:
    """Per ablation row (and the experts model for context): paired ``row − reference`` over common
    tasks; empty without the reference or without any ablation row."""
    if REFERENCE not in rows or not any(row_group(m) == "ablation" for m in rows):
        return {}
    context, out = experts_model(), {}
    for m in rows:
        if m != context and row_group(m) != "ablation":
            continue
        (mine, ref), n = rows.shared(m, REFERENCE)
        common = sorted(set(mine) & set(ref))
        if not common:
            log.warning("%s shares no test task with %s; left out of the ablation table", m, REFERENCE)
            continue
        out[m] = {metric: {**t, "mean": float(np.mean([mine[k][metric] for k in common])),
                           "reference_mean": float(np.mean([ref[k][metric] for k in common]))}
                  for metric, t in _tests(mine, ref, n, n_boot=n_boot, seed=seed, groups=rows.groups).items()}
    return out


def zero_vs_few_shot(models: dict[str, dict], rows: Rows, *, n_boot: int, seed: int) -> dict:
    """Per model row with a ``<model>-<condition>`` row: ROUGE-L CIs zero-shot and per condition and
    the paired differences ``<reference> − <model>-<condition>`` (task means)."""
    out = {}
    for base in (r.name for r in of_kind("model")):
        names = {"zero_shot": base} | {k: f"{base}-{k}" for k in conditions()}
        if not any(names[k] in rows for k in conditions()):
            continue
        entry: dict = {k: models[n]["rougeL_instance"] if n in models else None for k, n in names.items()}
        for k in conditions():
            ok = REFERENCE in rows and names[k] in rows
            entry[f"{REFERENCE}_minus_{k}"] = (_paired(rows, REFERENCE, names[k], n_boot=n_boot, seed=seed)
                                               or None) if ok else None
        out[base] = entry
    return out


def within_condition(rows: Rows, *, n_boot: int, seed: int) -> dict:
    """Per condition ``c`` with a ``<reference>-c`` row: ``{row: <reference>-c − <row>-c}`` (paired, every metric)
    for every other row scored in ``c`` (models, routers, ablations: ``promoe-shuffled``)."""
    out = {}
    for c in conditions():
        ref = f"{REFERENCE}-{c}"
        if ref not in rows:
            continue
        others = [m for m in rows if m != ref and split_row(m)[1] == c]
        found = {split_row(m)[0]: t for m in others if (t := _paired(rows, ref, m, n_boot=n_boot, seed=seed))}
        if found:
            out[c] = found
    return out


def _detected(t: dict) -> bool:  # a CI over more than one unit that excludes 0
    return t["n_units"] > 1 and (t["low"] > 0 or t["high"] < 0)


def headroom(rows: Rows, *, n_boot: int, seed: int, condition: str | None = None) -> dict:
    """Per metric: the routing headroom ``oracle − uniform`` (paired, :data:`promoe.registry.HEADROOM`) and,
    for every other routed row, the share of it the row recovers (``(row − uniform) / (oracle − uniform)``,
    over the instances all three share); empty without both rows. With ``condition``: the same inside it
    (``oracle-<condition> − uniform-<condition>``, shares of the condition's other rows)."""
    floor, ceiling = (f"{h}-{condition}" if condition else h for h in HEADROOM)
    if floor not in rows or ceiling not in rows:
        return {}
    out: dict = {}
    room = _paired(rows, ceiling, floor, n_boot=n_boot, seed=seed)

    def routed(m: str) -> bool:  # a routed row of the condition (the run's own: model, router and ablation rows)
        if condition:
            return split_row(m)[1] == condition
        return row_group(m) in ("zero-shot", "routing", "ablation") and not (
            (e := entry(m)) is not None and e.kind == "heuristic")

    # each routed row's per-task means over the instances all three rows share
    shared = {m: rows.shared(m, floor, ceiling) for m in rows if m not in (floor, ceiling) and routed(m)}
    top = next((_paired(rows, m, floor, n_boot=n_boot, seed=seed) for m in rows if row_group(m) == "ceiling"
                and not condition), {})
    for metric, t in room.items():
        # detected: its CI excludes 0; only then is a share of it given (stats.share_recovered)
        result = {"headroom": {**t, "detected": _detected(t)}, "recovered": {}}
        if metric in top:  # the in-sample ceiling over the same floor: how much the experts leave at best
            result["ceiling"] = {**top[metric], "detected": _detected(top[metric])}
        for m, ((mine, lo, hi), n) in shared.items():
            if metric in metrics_of(mine, lo, hi) and set(mine) & set(lo) & set(hi):
                result["recovered"][m] = {**share_recovered(_vals(mine, metric), _vals(lo, metric), _vals(hi, metric),
                                                            n_boot=n_boot, seed=seed, groups=rows.groups),
                                          "n_instances": n}
        out[metric] = result
    return out


def significance(data: RunData, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Bootstrap CIs per row (task and instance means), per category, paired tests, ablations,
    zero- vs few-shot differences and routing-vs-description similarity (see the module docstring)."""
    groups = data.groups
    models, per_cat, all_rows = {}, {}, Rows(data.scores, data.test_tasks, groups)
    for m in data.scores:
        rows = all_rows.own(m)
        n = {t: r["n"] for t, r in rows.items()}
        entry: dict = {"n": sum(n.values()), "n_tasks": len(rows)}
        for metric in metrics_of(rows):
            vals = _vals(rows, metric)
            entry[metric] = bootstrap_ci(vals, n_boot=n_boot, seed=seed, groups=groups)
            entry[f"{metric}_instance"] = bootstrap_ci(vals, n_boot=n_boot, seed=seed, weights=n, groups=groups)
        models[m] = entry
        by_cat: dict[str, list[str]] = defaultdict(list)
        for t, r in rows.items():
            by_cat[r["category"]].append(t)
        per_cat[m] = {c: bootstrap_ci({t: rows[t]["rougeL"] for t in ts}, n_boot=n_boot, seed=seed,
                                      weights={t: rows[t]["n"] for t in ts}, groups=groups)
                      for c, ts in sorted(by_cat.items())}
    ref = REFERENCE if REFERENCE in data.scores else next(iter(data.scores))
    paired = {o: t for o in data.scores if o != ref and row_group(o) != "ceiling"  # a ceiling is not a result
              and (t := _paired(all_rows, ref, o, n_boot=n_boot, seed=seed))}
    for metric in (*METRICS, LIKELIHOOD):  # Holm over the comparisons that have the metric
        for o, p in holm({o: t[metric]["p_wilcoxon"] for o, t in paired.items() if metric in t}).items():
            paired[o][metric]["p_wilcoxon_holm"] = p
    n_perm = min(n_boot, MAX_PERMUTATIONS)
    out = {"n_boot": n_boot, "seed": seed, "alpha": ALPHA, "reference": ref,
            "n_test_tasks": None if data.test_tasks is None else len(data.test_tasks),
            "resampling": resampling(data),
            "models": models, "per_category_rougeL": per_cat, "paired": paired,
            "ablations": ablations(all_rows, n_boot=n_boot, seed=seed),
            "within_condition": within_condition(all_rows, n_boot=n_boot, seed=seed),
            "zero_vs_few_shot": zero_vs_few_shot(models, all_rows, n_boot=n_boot, seed=seed),
            "headroom": headroom(all_rows, n_boot=n_boot, seed=seed),
            "over_seeds": over_seeds(data.seeds, data.test_tasks, n_boot=n_boot, seed=seed, groups=groups),
            "condition_headroom": {c: h for c in conditions()
                                   if (h := headroom(all_rows, n_boot=n_boot, seed=seed, condition=c))},
            "n_perm": n_perm,
            "routing_similarity": routing_similarity(data.routing, data.embeddings, data.task_categories(),
                                                     keep=data.test_tasks, n_perm=n_perm, seed=seed)}
    out["family"] = family(out)
    return out


def resampling(data: RunData) -> dict:
    """What every bootstrap of the run resamples: ``unit`` ``group`` where ``splits.json`` names groups of test
    tasks that join any two (``n_groups`` over ``n_tasks``; ``kinds``: how many groups of each kind, e.g.
    ``rule``, ``source``), else ``task`` (``source`` says why: a run from before the groups were written)."""
    if data.groups is None:
        return {"unit": TASK, "source": "none: splits.json has no test_groups (a run from before they were "
                                        "written); every test task is its own group"}
    tasks = sorted(data.test_tasks or data.groups)
    _, n_groups = group_ids(tasks, data.groups)
    kinds = Counter(g.split(":", 1)[0] for g in {data.groups.get(t, f"task:{t}") for t in tasks})
    return {"unit": GROUP if n_groups < len(tasks) else TASK, "source": "splits.json test_groups",
            "n_groups": n_groups, "n_tasks": len(tasks), "kinds": dict(sorted(kinds.items()))}


def over_seeds(seeds: dict[str, dict[str, dict]], test_tasks: set[str] | None, *, n_boot: int, seed: int,
               groups: dict[str, str] | None = None) -> dict:
    """With several seeds: per row scored next to the reference in every seed, ``reference − row`` per metric
    with each task's two means averaged over the seeds (each seed's over the instances both rows scored), then
    tested over tasks as one paired comparison (``n_seeds``); empty with fewer than two seeds."""
    if len(seeds) < 2 or not all(REFERENCE in s for s in seeds.values()):
        return {}
    first = next(iter(seeds.values()))
    out = {}
    for other in sorted((m for m in first if m != REFERENCE and all(m in s for s in seeds.values())), key=model_key):
        pairs = [Rows(s, test_tasks).shared(REFERENCE, other)[0] for s in seeds.values()]
        tasks = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs)))
        if not tasks:
            continue
        tests = {}
        for metric in metrics_of(*(r for pair in pairs for r in pair)):
            mean_a, mean_b = ({t: float(np.mean([pair[k][t][metric] for pair in pairs])) for t in tasks} for k in (0, 1))
            tests[metric] = {**paired_test(mean_a, mean_b, n_boot=n_boot, seed=seed, groups=groups),
                             "n_seeds": len(pairs)}
        out[other] = tests
    return out


def seed_summary(seeds: dict[str, dict[str, dict]]) -> dict:
    """Per row: :func:`~promoe.analysis.stats.aggregate_seeds` of the overall ROUGE-L and EM over the
    seeds that scored it."""
    models = sorted({m for s in seeds.values() for m in s}, key=model_key)
    return {m: {"seeds": [k for k in seeds if m in seeds[k]],
                **{metric: aggregate_seeds([s[m][metric] for s in seeds.values() if m in s]) for metric in METRICS}}
            for m in models}
