"""Analysis of a finished run, regenerated from the run's files alone (no model code, no retraining).

``analyze(run_dir)`` reads ``scores/<row>.json`` (required), and where present ``routing/<row>.npz``,
``task_embeddings.npz``, ``train/<model>/metrics.jsonl``, ``splits.json``, ``seeds/<seed>/scores/<row>.json``
and ``REPORT_extra.md``; it writes ``significance.json``, ``seeds.json`` (several seeds only),
``figures/*.png`` and ``REPORT.md``, every file atomically. Also runnable: ``python -m promoe.analysis RUN_DIR``
or ``promoe analyze --run RUN_DIR``.

A row is a scored system: a model (``promoe``), a router on the trained ``moe``'s experts (``knn``),
a heuristic (``copy_demo``) or a variant ``<base>-<variant>`` (``promoe-shuffled``, ``dense-fewshot``);
see :data:`promoe.figures.GROUPS`. ``significance.json`` holds, over the test tasks:

* ``models``: per row, 95% bootstrap CIs of task means and of instance means; ``per_category_rougeL``;
* ``paired``: the reference (``promoe``) against every other row over their common tasks, with
  Holm-adjusted Wilcoxon p values over that family (``p_wilcoxon_holm``);
* ``ablations``: per ``promoe-<variant>`` row and ``moe``, the paired change *row − promoe* per metric
  over common tasks, with both rows' means on those tasks (``mean``, ``reference_mean``);
* ``zero_vs_few_shot``: per base model, the zero-shot, ``-icl`` and ``-fewshot`` ROUGE-L CIs and the
  paired differences ``promoe − <base>-icl`` and ``promoe − <base>-fewshot``;
* ``routing_similarity``: per routing row, Spearman rho between tasks' routing similarity and their
  description similarity with a Mantel permutation p (``n_perm`` permutations), and the mean routing
  similarity of same- and different-category task pairs (:func:`promoe.routing_figures.routing_similarity`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from promoe.data.sources import iter_jsonl
from promoe.errors import DataError
from promoe.figures import (
    ADAPTATIONS,
    GROUP_TITLE,
    LABEL,
    METRICS,
    draw_figures,
    model_key,
    row_group,
    split_row,
)
from promoe.io import atomic_write_text, write_json
from promoe.metrics import category_key
from promoe.routing_figures import routing_similarity
from promoe.significance import aggregate_seeds, bootstrap_ci, paired_test

log = logging.getLogger(__name__)

REFERENCE = "promoe"
ROUTING_KEYS = ("load", "tokens", "load_cv", "token_entropy", "task_names", "task_histograms")
EMBEDDING_KEYS = ("task_names", "embeddings")  # also read: categories, split
MAX_PERMUTATIONS = 2000
ABLATION_TEXT = {"shuffled": "another task's description", "empty": "an empty description",
                 "random_text": "random text", "category": "the category name only",
                 "paraphrase": "a paraphrase (tasks that have one)", "moe": "nothing (static token router)"}


@dataclass
class RunData:
    """Everything :func:`analyze` reads from a run folder."""

    scores: dict[str, dict]  # row -> score() dict
    routing: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # row -> npz arrays
    curves: dict[str, list[dict]] = field(default_factory=dict)  # model -> metrics.jsonl rows
    seeds: dict[str, dict[str, dict]] = field(default_factory=dict)  # seed -> row -> score() dict
    test_tasks: set[str] | None = None
    embeddings: dict[str, np.ndarray] | None = None  # task_embeddings.npz arrays

    def task_categories(self) -> dict[str, str]:
        """Task -> category key, from the scores (first row wins), else from ``task_embeddings.npz``."""
        cat = {}
        if self.embeddings is not None and "categories" in self.embeddings:
            cat = {str(t): category_key(str(c)) for t, c in
                   zip(self.embeddings["task_names"], self.embeddings["categories"], strict=True)}
        for s in reversed(list(self.scores.values())):
            cat |= {t: r["category"] for t, r in s["per_task"].items()}
        return cat


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot be read as JSON ({e})", file=str(path), fix="rewrite or remove it") from None


def _read_npz(path: Path, keys: tuple[str, ...], fix: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot be read ({e})", file=str(path), fix="rewrite or remove it") from None
    if missing := [k for k in keys if k not in arrays]:
        raise DataError(f"lacks {missing}", file=str(path), fix=fix)
    return arrays


def _read_scores(folder: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(folder.glob("*.json"), key=lambda p: model_key(p.stem)):
        s = _read_json(p)
        rows = s.get("per_task") if isinstance(s, dict) else None
        if not isinstance(rows, dict) or not rows:
            raise DataError("has no per-task scores", file=str(p), field="per_task",
                            fix="write the full promoe.metrics.score() result")
        for task, row in rows.items():
            missing = [k for k in (*METRICS, "n", "category") if not isinstance(row, dict) or k not in row]
            if missing:
                raise DataError(f"per_task[{task!r}] lacks {missing}", file=str(p), field="per_task",
                                fix="write the full promoe.metrics.score() result")
        out[p.stem] = s
    return out


def _seed_key(p: Path) -> tuple[int, int | str]:
    return (0, int(p.name)) if p.name.isdigit() else (1, p.name)


def _read_embeddings(path: Path) -> dict[str, np.ndarray]:
    fix = "write task_names, embeddings (n, d), categories and split, one entry per task"
    arrays = _read_npz(path, EMBEDDING_KEYS, fix)
    n, emb = len(arrays["task_names"]), arrays["embeddings"]
    if emb.ndim != 2 or len(emb) != n or any(len(arrays[k]) != n for k in ("categories", "split") if k in arrays):
        raise DataError(f"embeddings {emb.shape} do not match its {n} task_names (and categories, split)",
                        file=str(path), field="embeddings", fix=fix)
    return arrays


def load_run(run_dir: Path) -> RunData:
    """Read a run folder; only ``scores/`` is required."""
    run_dir = Path(run_dir)
    scores = _read_scores(run_dir / "scores") if (run_dir / "scores").is_dir() else {}
    if not scores:
        raise DataError("holds no scores/<model>.json", file=str(run_dir / "scores"),
                        fix="run the experiment first (python run_experiment.py) or point at a run folder")
    data = RunData(scores=scores)
    for p in sorted((run_dir / "routing").glob("*.npz"), key=lambda p: model_key(p.stem)):
        data.routing[p.stem] = _read_npz(p, ROUTING_KEYS, fix="write it with RoutingStats.save")
    if (run_dir / "task_embeddings.npz").is_file():
        data.embeddings = _read_embeddings(run_dir / "task_embeddings.npz")
    for p in sorted((run_dir / "train").glob("*/metrics.jsonl"), key=lambda p: model_key(p.parent.name)):
        rows = [r for _, r in iter_jsonl(p) if isinstance(r, dict) and isinstance(r.get("step"), int | float)]
        if rows:
            data.curves[p.parent.name] = rows
    if (run_dir / "splits.json").is_file():
        test = _read_json(run_dir / "splits.json")
        if isinstance(test, dict) and isinstance(test.get("test"), list):
            data.test_tasks = set(test["test"])
    if (run_dir / "seeds").is_dir():
        for d in sorted((run_dir / "seeds").iterdir(), key=_seed_key):
            if (d / "scores").is_dir() and (s := _read_scores(d / "scores")):
                data.seeds[d.name] = s
    return data


def task_rows(score: dict, test_tasks: set[str] | None) -> dict[str, dict]:
    """The per-task rows of a score dict, limited to the test tasks when the split is known."""
    rows = score["per_task"]
    if test_tasks is not None:
        kept = {t: r for t, r in rows.items() if t in test_tasks}
        if kept:
            return kept
        log.warning("no scored task is in splits.json's test list; using every scored task")
    return rows


def _vals(rows: dict[str, dict], metric: str) -> dict[str, float]:
    return {t: r[metric] for t, r in rows.items()}


def holm(p: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p values of one family of tests (step-down, monotone, capped at 1)."""
    out, running = {}, 0.0
    for k, name in enumerate(sorted(p, key=lambda n: p[n])):
        running = max(running, min(1.0, (len(p) - k) * p[name]))
        out[name] = running
    return out


def ablations(rows_of: dict[str, dict[str, dict]], *, n_boot: int, seed: int) -> dict:
    """Per ``promoe-<variant>`` row (and ``moe`` for context): paired ``row − promoe`` over common tasks;
    empty without ``promoe`` or without any ablation row."""
    if REFERENCE not in rows_of or not any(row_group(m) == "ablation" for m in rows_of):
        return {}
    ref, out = rows_of[REFERENCE], {}
    for m, rows in rows_of.items():
        if m != "moe" and row_group(m) != "ablation":
            continue
        common = sorted(set(rows) & set(ref))
        if not common:
            log.warning("%s shares no test task with %s; left out of the ablation table", m, REFERENCE)
            continue
        out[m] = {metric: {**paired_test(_vals(rows, metric), _vals(ref, metric), n_boot=n_boot, seed=seed),
                           "mean": float(np.mean([rows[t][metric] for t in common])),
                           "reference_mean": float(np.mean([ref[t][metric] for t in common]))}
                  for metric in METRICS}
    return out


def zero_vs_few_shot(models: dict[str, dict], rows_of: dict[str, dict[str, dict]], *, n_boot: int,
                     seed: int) -> dict:
    """Per base model with an ``-icl`` or ``-fewshot`` row: ROUGE-L CIs of the three settings and the
    paired differences ``promoe − <base>-icl`` and ``promoe − <base>-fewshot`` (task means)."""
    out = {}
    for base in ("backbone", "dense", "moe", "promoe"):
        names = {"zero_shot": base} | {k: f"{base}-{k}" for k in ADAPTATIONS}
        if not any(names[k] in rows_of for k in ADAPTATIONS):
            continue
        entry: dict = {k: models[n]["rougeL_instance"] if n in models else None for k, n in names.items()}
        for k in ADAPTATIONS:
            other = rows_of.get(names[k])
            ok = REFERENCE in rows_of and other is not None and set(other) & set(rows_of[REFERENCE])
            entry[f"promoe_minus_{k}"] = {
                metric: paired_test(_vals(rows_of[REFERENCE], metric), _vals(other, metric), n_boot=n_boot, seed=seed)
                for metric in METRICS} if ok else None
        out[base] = entry
    return out


def significance(data: RunData, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Bootstrap CIs per row (task and instance means), per category, paired tests, ablations,
    zero- vs few-shot differences and routing-vs-description similarity (see the module docstring)."""
    models, per_cat, rows_of = {}, {}, {}
    for m, s in data.scores.items():
        rows = rows_of[m] = task_rows(s, data.test_tasks)
        n = {t: r["n"] for t, r in rows.items()}
        entry: dict = {"n": sum(n.values()), "n_tasks": len(rows)}
        for metric in METRICS:
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
                                      seed=seed) for metric in METRICS}
              for o in data.scores if o != ref and set(rows_of[o]) & set(rows_of[ref])}
    for metric in METRICS:
        for o, p in holm({o: t[metric]["p_wilcoxon"] for o, t in paired.items()}).items():
            paired[o][metric]["p_wilcoxon_holm"] = p
    n_perm = min(n_boot, MAX_PERMUTATIONS)
    return {"n_boot": n_boot, "seed": seed, "alpha": 0.05, "reference": ref,
            "n_test_tasks": None if data.test_tasks is None else len(data.test_tasks),
            "models": models, "per_category_rougeL": per_cat, "paired": paired,
            "ablations": ablations(rows_of, n_boot=n_boot, seed=seed),
            "zero_vs_few_shot": zero_vs_few_shot(models, rows_of, n_boot=n_boot, seed=seed),
            "n_perm": n_perm,
            "routing_similarity": routing_similarity(data.routing, data.embeddings, data.task_categories(),
                                                     keep=data.test_tasks, n_perm=n_perm, seed=seed)}


def seed_summary(seeds: dict[str, dict[str, dict]]) -> dict:
    """Per model: :func:`aggregate_seeds` of the overall ROUGE-L and EM over the seeds that scored it."""
    models = sorted({m for s in seeds.values() for m in s}, key=model_key)
    return {m: {"seeds": [k for k in seeds if m in seeds[k]],
                **{metric: aggregate_seeds([s[m][metric] for s in seeds.values() if m in s]) for metric in METRICS}}
            for m in models}


# ------------------------------------------------------------------------------------------------ report


def _ci(c: dict | None) -> str:
    return "" if c is None else f"{c['mean']:.2f} [{c['low']:.2f}, {c['high']:.2f}]"


def _diff(t: dict) -> str:
    return f"{t['diff']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}]"


def _p(p: float, n_boot: int) -> str:
    return f"< {1 / n_boot:.0e}" if p == 0 else f"{p:.3g}"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _table(head: list[str], rows: list[list[str]], align: str = "---:") -> list[str]:
    return ["| " + " | ".join(head) + " |", "|---|" + f"{align}|" * (len(head) - 1),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _headline(sig: dict) -> list[str]:
    models = sig["models"]
    out = ["## Headline", ""]
    most = max(e["n_tasks"] for e in models.values())
    if subset := [m for m, e in models.items() if e["n_tasks"] < most]:
        out += [f"Scored on fewer tasks than the others ({most}): {', '.join(subset)} — compare these through "
                "the paired tables, which use common tasks.", ""]
    for group, title in GROUP_TITLE.items():
        rows = [m for m in models if row_group(m) == group]
        if rows:
            out += [f"### {title}", ""]
            out += _table(["row", "ROUGE-L [95% CI]", "EM [95% CI]", "ROUGE-L task mean [95% CI]", "n instances",
                           "n tasks"],
                          [[m, _ci(models[m]["rougeL_instance"]), _ci(models[m]["exact_match_instance"]),
                            _ci(models[m]["rougeL"]), str(models[m]["n"]), str(models[m]["n_tasks"])] for m in rows])
    return out


def _comparisons(sig: dict) -> list[str]:
    ref, nb, out = sig["reference"], sig["n_boot"], []
    if sig["paired"]:
        out += [f"## Paired tests: `{ref}` against each row", "",
                f"Per-task differences `{ref}` − other over the tasks both were scored on (task means); "
                "p values are two-sided (bootstrap of the mean difference; Wilcoxon signed-rank; Wilcoxon "
                f"Holm-adjusted over these {len(sig['paired'])} comparisons per metric).", ""]
        out += _table(["vs", "metric", "diff [95% CI]", "p (bootstrap)", "p (Wilcoxon)", "p (Holm)",
                       "wins / losses / ties", "tasks"],
                      [[o, LABEL[k], _diff(t), _p(t["p_bootstrap"], nb), f"{t['p_wilcoxon']:.3g}",
                        f"{t['p_wilcoxon_holm']:.3g}", f"{t['wins']} / {t['losses']} / {t['ties']}", str(t["n_tasks"])]
                       for o, tests in sig["paired"].items() for k, t in tests.items()])
    if sig["ablations"]:
        out += [f"## Ablations: what `{REFERENCE}`'s router is given", "",
                f"Each row − `{REFERENCE}` over the test tasks both were scored on (task means; the prompt is "
                "unchanged, only the description fed to the router differs). `moe` (static router, never sees "
                "the description embedding) for context. p values two-sided.", ""]
        out += _table(["row", "router sees", "tasks", f"{REFERENCE} ROUGE-L", "row ROUGE-L", "Δ ROUGE-L [95% CI]",
                       "p (bootstrap)", "p (Wilcoxon)", "Δ EM [95% CI]", "p (bootstrap)", "p (Wilcoxon)"],
                      [[m, ABLATION_TEXT.get(split_row(m)[1] or m, split_row(m)[1]), str(t["rougeL"]["n_tasks"]),
                        f"{t['rougeL']['reference_mean']:.2f}", f"{t['rougeL']['mean']:.2f}", _diff(t["rougeL"]),
                        _p(t["rougeL"]["p_bootstrap"], nb), f"{t['rougeL']['p_wilcoxon']:.3g}",
                        _diff(t["exact_match"]), _p(t["exact_match"]["p_bootstrap"], nb),
                        f"{t['exact_match']['p_wilcoxon']:.3g}"] for m, t in sig["ablations"].items()])
    if sig["zero_vs_few_shot"]:
        out += ["## Zero-shot vs in-context vs few-shot", "",
                "ROUGE-L instance means [95% CI] of each base model zero-shot, with the Definition and 2 positive "
                f"examples in the prompt (`-icl`), and fine-tuned on each test task's positive examples "
                f"(`-fewshot`); then `{REFERENCE}` (zero-shot) − the other setting per task (task means, "
                "common tasks), with the bootstrap p value.", ""]

        def d(t: dict | None) -> str:
            return "" if t is None else f"{_diff(t['rougeL'])} (p {_p(t['rougeL']['p_bootstrap'], nb)})"

        out += _table(["model", "zero-shot", "-icl", "-fewshot", f"{REFERENCE} − model-icl", f"{REFERENCE} − model-fewshot"],
                      [[b, _ci(e["zero_shot"]), _ci(e["icl"]), _ci(e["fewshot"]), d(e["promoe_minus_icl"]),
                        d(e["promoe_minus_fewshot"])] for b, e in sig["zero_vs_few_shot"].items()])
    return out


def _per_category(sig: dict) -> list[str]:
    models, per_cat = list(sig["models"]), sig["per_category_rougeL"]
    out = ["## ROUGE-L per category", "", "Instance means with 95% bootstrap intervals over the category's tasks.", ""]
    main = [m for m in models if row_group(m) in ("zero-shot", "routing")]
    rest = [m for m in models if m not in main]
    for rows, title in ((main, "Zero-shot models, heuristics and routers"),
                        (([REFERENCE] if REFERENCE in models and rest else []) + rest,
                         "Ablations, in-context and few-shot")):
        if not rows:
            continue
        cats = sorted({c for m in rows for c in per_cat[m]})
        out += [f"### {title}", ""]
        out += _table(["category", "tasks", *rows],
                      [[c.replace("_", " "), str(max(per_cat[m][c]["n_tasks"] for m in rows if c in per_cat[m])),
                        *(_ci(per_cat[m].get(c)) for m in rows)] for c in cats])
    return out


def _routing(data: RunData, sig: dict) -> list[str]:
    if not data.routing:
        return []
    out = ["## Routing", "", "Means over MoE layers of the test-set routing statistics.", ""]
    rows = []
    for m, r in data.routing.items():
        n_exp = int(r["load"].shape[-1])
        h, hmax = float(np.mean(r["token_entropy"])), math.log(n_exp)
        rows.append([m, str(len(r["load_cv"])), str(n_exp), f"{float(np.mean(r['load_cv'])):.3f}",
                     (f"{h:.3f} / {hmax:.3f} ({100 * h / hmax:.0f}%)" if hmax > 0 else f"{h:.3f}"),
                     f"{int(np.max(r['tokens']))}"])
    out += _table(["row", "MoE layers", "experts", "mean load CV", "token entropy / max (nats)",
                   "routed tokens per layer"], rows)
    out += ["### Routing similarity vs description similarity", ""]
    if data.embeddings is None:
        return out + ["Not computed: the run folder has no `task_embeddings.npz`.", ""]
    sim = sig["routing_similarity"]
    out += ["Over pairs of test tasks that have a description embedding: Spearman's rho between the cosine "
            "similarity of the tasks' routing policies (flattened expert histograms) and of their description "
            f"embeddings; p is a two-sided Mantel permutation test ({sig['n_perm']} permutations of the tasks), "
            "since pairs sharing a task are not independent. Last columns: mean routing similarity of task pairs "
            "in the same category and in different ones. n/a: a similarity is the same for every pair (e.g. uniform "
            "routing sends every task the same way), or no pair of that kind.", ""]
    return out + _table(["row", "tasks", "Spearman rho", "p (Mantel)", "same-category mean",
                         "different-category mean"],
                        [[m, str(s["n_tasks"]), _num(s["spearman_rho"], "+.3f"), _num(s["p"], ".3g"),
                          _num(s["same_category_mean"]), _num(s["diff_category_mean"])] for m, s in sim.items()])


def render_report(run_dir: Path, data: RunData, sig: dict, seeds: dict | None,
                  figures: dict[str, tuple[str, str]], skipped: dict[str, str]) -> str:
    """REPORT.md: headline by group, paired tests, ablations, zero- vs few-shot, per-category, routing
    and seed tables, then the figures."""
    split = "" if sig["n_test_tasks"] is None else f" {sig['n_test_tasks']} test tasks in `splits.json`."
    out = [f"# PRo-MoE analysis: run `{run_dir.name}`", "",
           f"Rows: {', '.join(sig['models'])}.{split} Intervals are 95% percentile bootstraps over test tasks "
           f"({sig['n_boot']} resamples, seed {sig['seed']}): ROUGE-L and EM are the official instance means, "
           "their intervals resample tasks with all their instances; task means weigh every task the same.", ""]
    out += _headline(sig) + _comparisons(sig) + _per_category(sig) + _routing(data, sig)
    if seeds:
        out += ["## Seeds", "", "Overall scores across seeds: mean ± sample std [95% t interval].", ""]
        out += _table(["row", "seeds", *(LABEL[k] for k in METRICS)],
                      [[m, str(len(s["seeds"])), *(f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f} "
                                                    f"[{s[k]['low']:.2f}, {s[k]['high']:.2f}]" for k in METRICS)]
                       for m, s in seeds.items()])
    out += ["## Figures", ""]
    for path, (alt, caption) in figures.items():
        out += [f"![{alt}]({path})", "", caption, ""]
    if skipped:
        out += ["Not drawn: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".", ""]
    text = "\n".join(out)
    extra = run_dir / "REPORT_extra.md"
    if extra.is_file():
        text += "\n" + extra.read_text(encoding="utf-8")
    return text


def analyze(run_dir: Path, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Regenerate significance tests, figures and REPORT.md of ``run_dir``; returns what was written."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    sig = significance(data, n_boot=n_boot, seed=seed)
    write_json(run_dir / "significance.json", sig)
    written: dict = {"significance": str(run_dir / "significance.json"), "seeds": None}
    seeds = seed_summary(data.seeds) if data.seeds else None
    if seeds:
        write_json(run_dir / "seeds.json", seeds)
        written["seeds"] = str(run_dir / "seeds.json")
    figures, skipped = draw_figures(run_dir, data, sig)
    atomic_write_text(run_dir / "REPORT.md", render_report(run_dir, data, sig, seeds, figures, skipped))
    written |= {"figures": [str(run_dir / p) for p in figures], "skipped": skipped,
                "report": str(run_dir / "REPORT.md")}
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m promoe.analysis RUN_DIR``: rewrite a run's analysis and report."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("run_dir", type=Path, help="a results/<run> folder holding scores/<model>.json")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    print(json.dumps(analyze(args.run_dir, n_boot=args.n_boot, seed=args.seed), indent=2))


if __name__ == "__main__":
    main()
