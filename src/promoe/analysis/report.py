"""REPORT.md of a run: the tables of :func:`promoe.analysis.significance.significance` and the figures, as Markdown.

Groups, their titles and order, the reference row and what each ablation's router sees come from
:mod:`promoe.registry`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from promoe.analysis.agreement import section as agreement_section
from promoe.analysis.answer import answer_section
from promoe.analysis.cluster_routing import section as cluster_section
from promoe.analysis.compute import budget
from promoe.analysis.compute import section as compute_section
from promoe.analysis.expert_report import experts_section
from promoe.analysis.markdown import num as _num
from promoe.analysis.markdown import table as _table
from promoe.analysis.rows import experts_model, main_groups
from promoe.analysis.rundata import LABEL, LIKELIHOOD, METRICS, RunData
from promoe.registry import CEILING, GROUPS, HEADROOM, REFERENCE, conditions, entry, row_group, split_row

GROUP_KINDS = {"rule": "rule (phrasings of one synthetic rule)", "source": "source dataset (SNI `Source`)",
               "family": "BIG-bench family", "task": "task (alone)"}
"""How each kind of test-task group (:mod:`promoe.data.groups`) is named in the report."""
CONTEXT_TEXT = "nothing (static token router)"
"""What the ablation table's context row (the experts model, :func:`~promoe.analysis.rows.experts_model`)
gives its router."""


def _router_sees(row: str) -> str:
    """The ablation table's "router sees" cell: the ablation's registry title."""
    if row == experts_model():
        return CONTEXT_TEXT
    r = entry(row)
    return r.title if r is not None else split_row(row)[1]


def _ci(c: dict | None) -> str:
    return "" if c is None else f"{c['mean']:.2f} [{c['low']:.2f}, {c['high']:.2f}]"


def _diff(t: dict) -> str:
    return f"{t['diff']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}]"


def _mde(t: dict) -> str:
    """The minimum detectable effect at 80% power of a paired comparison (:func:`promoe.analysis.stats.paired_test`)."""
    return _num(t.get("mde"), ".2f")


def _p(p: float, n_boot: int) -> str:
    return f"< {1 / n_boot:.0e}" if p == 0 else f"{p:.3g}"


def _resampling(r: dict) -> str:
    """Which unit every interval and bootstrap p of the run resampled (significance.json's ``resampling``)."""
    if r.get("unit") == "group":
        kinds = ", ".join(f"{n} by {GROUP_KINDS.get(k, k)}" for k, n in r["kinds"].items())
        return (f"Related test tasks are resampled together: every bootstrap draws whole groups ({r['n_groups']} "
                f"groups over {r['n_tasks']} test tasks, `splits.json`'s `test_groups`: {kinds}).")
    if r.get("source", "").startswith("none"):
        return ("Every bootstrap resamples single test tasks: the run's `splits.json` names no groups of related "
                "tasks (a run from before they were written), so each task is taken as its own group.")
    return "Every bootstrap resamples single test tasks: no two test tasks share a group (`splits.json`'s `test_groups`)."


def _headline(sig: dict) -> list[str]:
    models = sig["models"]
    out = ["## Headline", ""]
    most = max(e["n_tasks"] for e in models.values())
    if subset := [m for m, e in models.items() if e["n_tasks"] < most]:
        out += [f"Scored on fewer tasks than the others ({most}): {', '.join(subset)} — compare these through "
                "the paired tables, which use common tasks.", ""]
    nll = any(LIKELIHOOD in e for e in models.values())
    if nll:
        out += ["Reference NLL: mean per-token negative log-likelihood of the references given the prompt (lower is "
                "better; forward passes only, every row with a model), instance mean.", ""]
    for group, title in GROUPS.items():
        if group == "ceiling":
            continue  # not a result: reported under the oracle headroom (_ceiling)
        rows = [m for m in models if row_group(m) == group]
        if rows:
            out += [f"### {title}", ""]
            out += _table(["row", "ROUGE-L [95% CI]", "EM [95% CI]", "ROUGE-L task mean [95% CI]",
                           *(["Reference NLL [95% CI]"] * nll), "n instances", "n tasks"],
                          [[m, _ci(models[m]["rougeL_instance"]), _ci(models[m]["exact_match_instance"]),
                            _ci(models[m]["rougeL"]), *([_ci(models[m].get(f"{LIKELIHOOD}_instance"))] * nll),
                            str(models[m]["n"]), str(models[m]["n_tasks"])] for m in rows])
    return out


def _record(k: str, t: dict) -> str:
    """wins / losses / ties of the reference row (for the reference NLL, lower wins)."""
    wins, losses = (t["losses"], t["wins"]) if k == LIKELIHOOD else (t["wins"], t["losses"])
    return f"{wins} / {losses} / {t['ties']}"


def _comparisons(sig: dict) -> list[str]:
    ref, nb, out = sig["reference"], sig["n_boot"], []
    if sig["paired"]:
        out += [f"## Paired tests: `{ref}` against each row", "",
                f"Per-task differences `{ref}` − other over the tasks both were scored on (task means over the "
                "instances both scored: rows may score different numbers per task, eval.headline_rows); "
                "p values are two-sided (bootstrap of the mean difference; Wilcoxon signed-rank over the resampling "
                "units, tasks or groups of related tasks; Wilcoxon "
                f"Holm-adjusted over these {len(sig['paired'])} comparisons per metric). For the reference NLL a "
                "negative difference and a win mean the reference row's NLL is lower. SD: of the per-task "
                "differences; MDE: the true difference a two-sided paired test at 5% detects with 80% power on "
                "these tasks. The CI's ends say which differences the data rule out; the MDE says how large a "
                "difference the test was likely to catch. Intervals and p values here are unadjusted except the "
                "Holm column; the verdicts of \"The answer\" follow its own family's adjustment.", ""]
        out += _table(["vs", "metric", "diff [95% CI]", "SD", "MDE (80%)", "p (bootstrap)", "p (Wilcoxon)",
                       "p (Holm)", "wins / losses / ties", "tasks", "instances"],
                      [[o, LABEL[k], _diff(t), _num(t.get("sd_diff"), ".2f"), _mde(t), _p(t["p_bootstrap"], nb),
                        f"{t['p_wilcoxon']:.3g}", f"{t['p_wilcoxon_holm']:.3g}", _record(k, t), str(t["n_tasks"]),
                        str(t.get("n_instances", "—"))]
                       for o, tests in sig["paired"].items() for k, t in tests.items()])
    if sig["ablations"]:
        out += [f"## Ablations: what `{REFERENCE}`'s router is given", "",
                f"Each row − `{REFERENCE}` over the test tasks both were scored on (task means; the prompt is "
                f"unchanged, only the description fed to the router differs). `{experts_model()}` (static router, "
                "never sees the description embedding) for context. p values two-sided; MDE at 80% power.", ""]
        out += _table(["row", "router sees", "tasks", f"{REFERENCE} ROUGE-L", "row ROUGE-L", "Δ ROUGE-L [95% CI]",
                       "MDE", "p (bootstrap)", "p (Wilcoxon)", "Δ EM [95% CI]", "MDE", "p (bootstrap)",
                       "p (Wilcoxon)"],
                      [[m, _router_sees(m), str(t["rougeL"]["n_tasks"]),
                        f"{t['rougeL']['reference_mean']:.2f}", f"{t['rougeL']['mean']:.2f}", _diff(t["rougeL"]),
                        _mde(t["rougeL"]), _p(t["rougeL"]["p_bootstrap"], nb), f"{t['rougeL']['p_wilcoxon']:.3g}",
                        _diff(t["exact_match"]), _mde(t["exact_match"]), _p(t["exact_match"]["p_bootstrap"], nb),
                        f"{t['exact_match']['p_wilcoxon']:.3g}"] for m, t in sig["ablations"].items()])
    if sig.get("headroom"):
        floor, ceiling = HEADROOM
        out += ["## Oracle headroom", "",
                f"`{ceiling}` − `{floor}` per task (paired, task means): how much choosing the best single expert per "
                f"task gains over mixing every expert equally; then the share of that headroom each row recovers, "
                f"(row − {floor}) / ({ceiling} − {floor}) over the tasks the three share, with a 95% bootstrap CI "
                "(resampled as every other interval). 1: all of it, 0: none, below 0: worse than mixing every "
                "expert. A share is given only where the headroom's own 95% CI over those tasks excludes 0: where "
                "it spans 0 the ratio's denominator may be 0 and the ratio has no meaningful interval.", ""]
        rows = []
        for k, h in sig["headroom"].items():
            rows.append([LABEL[k], f"{ceiling} − {floor}", _diff(h["headroom"]), _mde(h["headroom"]),
                         _p(h["headroom"]["p_bootstrap"], nb), str(h["headroom"]["n_tasks"])])
            if top := h.get("ceiling"):
                rows.append([LABEL[k], f"ceiling: {CEILING} − {floor}", _diff(top), _mde(top),
                             _p(top["p_bootstrap"], nb), str(top["n_tasks"])])
            rows += [[LABEL[k], f"share recovered by {m}",
                      "not reported: headroom not detected (CI spans 0)" if r["share"] is None
                      else f"{r['share']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]", "", "", str(r["n_tasks"])]
                     for m, r in h["recovered"].items()]
        out += _table(["metric", "what", "value [95% CI]", "MDE (80%)", "p (bootstrap)", "tasks"], rows)
        out += _ceiling(sig)
    if sig["zero_vs_few_shot"]:
        out += ["## Zero-shot vs the conditions", "",
                "ROUGE-L instance means [95% CI] of each base model zero-shot, with the Definition and 2 positive "
                f"examples in the prompt (`-icl`), fine-tuned on each test task's positive examples "
                f"(`-fewshot`) and trained and scored on the instance input alone (`-router_only`); then "
                f"`{REFERENCE}` (zero-shot) − the other setting per task (task means, common tasks), with the "
                "bootstrap p value.", ""]

        def d(t: dict | None) -> str:
            return "" if t is None else \
                f"{_diff(t['rougeL'])} (p {_p(t['rougeL']['p_bootstrap'], nb)}, MDE {_mde(t['rougeL'])})"

        scored = [k for k in conditions() if any(e.get(k) is not None for e in sig["zero_vs_few_shot"].values())]
        out += _table(["model", "zero-shot", *(f"-{k}" for k in scored), *(f"{REFERENCE} − model-{k}" for k in scored)],
                      [[b, _ci(e["zero_shot"]), *(_ci(e[k]) for k in scored),
                        *(d(e.get(f"{REFERENCE}_minus_{k}")) for k in scored)]
                       for b, e in sig["zero_vs_few_shot"].items()])
    return out


def _ceiling(sig: dict) -> list[str]:
    """The in-sample ceiling's own scores, apart from the results (it chose on what it is scored on)."""
    if CEILING not in sig["models"]:
        return []
    m = sig["models"][CEILING]
    return [f"**{GROUPS['ceiling']}** (`{CEILING}`: each test task's expert chosen by the reference NLL of the "
            "instances it is then scored on; `oracle` chooses on two demonstrations). A high ceiling with a low "
            "`oracle` means two demonstrations do not find the best expert; both low mean the experts leave "
            "little to choose. It bounds the reference NLL it chooses by; a generation's ROUGE-L and EM need not "
            f"follow it. `{CEILING}` ROUGE-L {_ci(m['rougeL_instance'])}, EM {_ci(m['exact_match_instance'])}"
            + (f", reference NLL {_ci(m[f'{LIKELIHOOD}_instance'])}" if f"{LIKELIHOOD}_instance" in m else "")
            + f" ({m['n']} instances); the expert x task NLL matrix it read is in `{CEILING}.json`.", ""]


def _per_category(sig: dict) -> list[str]:
    models, per_cat = list(sig["models"]), sig["per_category_rougeL"]
    out = ["## ROUGE-L per category", "", "Instance means with 95% bootstrap intervals over the category's tasks.", ""]
    main = [m for m in models if row_group(m) in main_groups()]
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


def _logit_scale(scale: dict[str, dict] | None) -> list[str]:
    if not scale:
        return []
    out = ["### How far the description moves the routing logits", "",
           "Spread of each trained model's routing logits over the experts (standard deviation across the experts' "
           "logits, mean over tokens of the validation examples and over MoE layers; `routing/logit_scale.json`): "
           "the whole, the part that does not depend on the task (the token router), and the part the description "
           "generates. A generated part much smaller than the static one barely changes the routing.", ""]
    return out + _table(["model", "total", "static", "generated", "generated / static"],
                        [[m, f"{s['total']:.3f}", f"{s['static']:.3f}", f"{s['generated']:.3f}",
                          _num(s["generated"] / s["static"] if s["static"] > 0 else None, ".2f")]
                         for m, s in scale.items()])


def _routing(data: RunData, sig: dict) -> list[str]:
    if not data.routing:
        return _logit_scale(data.logit_scale)
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
    out += _logit_scale(data.logit_scale) + agreement_section(data.routing)
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
    """REPORT.md: the answer (:mod:`promoe.analysis.answer`) and its figure, headline by group, paired tests, ablations, zero- vs few-shot, per-category, routing,
    seed and specialised-expert tables, then the figures."""
    split = "" if sig["n_test_tasks"] is None else f" {sig['n_test_tasks']} test tasks in `splits.json`."
    out = [f"# PRo-MoE analysis: run `{data.name or run_dir.name}`", "",
           f"Rows: {', '.join(sig['models'])}.{split} Intervals are 95% percentile bootstraps over test tasks "
           f"({sig['n_boot']} resamples, seed {sig['seed']}): ROUGE-L and EM are the official instance means, "
           "their intervals resample tasks with all their instances; task means weigh every task the same. "
           + _resampling(sig.get("resampling") or {}), ""]
    out += answer_section(sig, data.condition, budget=budget(run_dir, list(sig["models"])))
    figures = dict(figures)  # the answer's figure is shown with the answer, the rest at the end
    if "figures/answer.png" in figures:
        alt, caption = figures.pop("figures/answer.png")
        out += [f"![{alt}](figures/answer.png)", "", caption, ""]
    out += _headline(sig) + compute_section(run_dir, sig) + _comparisons(sig) + _per_category(sig) + _routing(data, sig)
    if seeds:
        out += ["## Seeds", "", "Overall scores across seeds: mean ± sample std [95% t interval].", ""]
        out += _table(["row", "seeds", *(LABEL[k] for k in METRICS)],
                      [[m, str(len(s["seeds"])), *(f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f} "
                                                    f"[{s[k]['low']:.2f}, {s[k]['high']:.2f}]" for k in METRICS)]
                       for m, s in seeds.items()])
        if pooled := sig.get("over_seeds"):
            out += ["", f"`{REFERENCE}` − each row pooled over the seeds: each task's means averaged over the seeds "
                    "(each seed over the instances both rows scored), then one paired test over tasks (95% bootstrap "
                    "CI, MDE at 80% power). With specialised experts (and `experts.per_seed=false`) every seed starts "
                    "from the first seed's experts, so the seeds vary only what is learned over them.", ""]
            out += _table(["vs", "metric", "diff [95% CI]", "MDE (80%)", "p (bootstrap)", "seeds", "tasks"],
                          [[o, LABEL[k], _diff(t), _mde(t), _p(t["p_bootstrap"], sig["n_boot"]), str(t["n_seeds"]),
                            str(t["n_tasks"])] for o, tests in pooled.items() for k, t in tests.items()])
    out += experts_section(data.experts) + (cluster_section(data) if data.experts is not None else [])
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


