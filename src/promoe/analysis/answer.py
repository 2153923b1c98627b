"""The answer first: the question the experiment exists to answer, answered in a few lines of REPORT.md and one
figure, from ``significance.json`` alone.

Every line is ``promoe − other`` per test task (paired over the tasks both were scored on), with its 95%
bootstrap CI, the minimum detectable effect at 80% power (:func:`promoe.analysis.stats.min_detectable_effect`)
and a verdict that says no more than the CI and the MDE allow:

* *better* / *worse*: the CI excludes 0;
* *no difference larger than the MDE*: the CI spans 0 — a difference of about the MDE or more is ruled out,
  smaller ones are not;
* the oracle headroom line: the share of ``oracle − uniform`` promoe recovers;
* the same questions inside each condition the run scored promoe in (``within_condition``: e.g.
  ``promoe-router_only − moe-router_only``, both trained and scored on the instance input alone, and
  ``promoe-router_only − promoe-shuffled-router_only``, its router given another task's description).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from promoe.analysis.rundata import LABEL
from promoe.registry import ABLATED, HEADROOM, REFERENCE, title

QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Does description-conditioned routing beat static routing over the same experts, the dense model and "
     "mixing every expert?", ("moe", "dense", "uniform", "upcycled")),
    ("Does it use the description? (the same router given another task's description, none, random text, "
     "the category name, a paraphrase)",
     tuple(f"{ABLATED}-{a}" for a in ("shuffled", "empty", "random_text", "category", "paraphrase"))),
)
"""The questions and the rows each is answered against (rows the run did not score are left out)."""


@dataclass(frozen=True)
class Comparison:
    """``promoe − other`` on one metric, over ``n_tasks`` common test tasks (``n_instances`` shared instances;
    None in runs from before it was recorded)."""

    other: str
    diff: float
    low: float
    high: float
    mde: float | None
    n_tasks: int
    n_instances: int | None = None
    reference: str = REFERENCE

    @property
    def scope(self) -> str:
        return f"{self.n_tasks} tasks" + (f", {self.n_instances} instances" if self.n_instances else "")

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        mde = "n/a" if self.mde is None else f"{self.mde:.2f}"
        return f"no difference larger than the MDE ({mde}) detected"


def _comparison(other: str, t: dict, reference: str = REFERENCE) -> Comparison:
    return Comparison(other, t["diff"], t["low"], t["high"], t.get("mde"), t["n_tasks"], t.get("n_instances"),
                      reference)


def _paired(sig: dict, other: str, metric: str) -> Comparison | None:
    """``promoe − other`` from the paired tests, or flipped from the ablation table (``row − promoe`` there)."""
    if (t := sig.get("paired", {}).get(other, {}).get(metric)) is not None:
        return _comparison(other, t)
    if (t := sig.get("ablations", {}).get(other, {}).get(metric)) is not None:
        return Comparison(other, -t["diff"], -t["high"], -t["low"], t.get("mde"), t["n_tasks"], t.get("n_instances"))
    return None


def comparisons(sig: dict, metric: str = "rougeL") -> list[tuple[str, list[Comparison]]]:
    """Each question with the comparisons the run can answer it with (questions with none left out), then the
    questions again inside each condition (:func:`by_condition`)."""
    return own_comparisons(sig, metric) + [(question, found) for _, question, found in by_condition(sig, metric)]


def own_comparisons(sig: dict, metric: str = "rougeL") -> list[tuple[str, list[Comparison]]]:
    """The questions in the run's own prompt condition: ``promoe − other`` for each row that answers one."""
    out = []
    for question, others in QUESTIONS:
        found = [c for o in others if (c := _paired(sig, o, metric)) is not None]
        if found:
            out.append((question, found))
    return out


def by_condition(sig: dict, metric: str = "rougeL") -> list[tuple[str, str, list[Comparison]]]:
    """``(c, question, comparisons)``: each of :data:`QUESTIONS` again inside each condition ``c`` that scored
    promoe, ``promoe-<c> − <row>-<c>`` for its rows (``within_condition``); rows no question names go with the
    first."""
    out, named = [], {b for _, others in QUESTIONS[1:] for b in others}
    for c, tests in sig.get("within_condition", {}).items():
        found = {b: _comparison(f"{b}-{c}", t[metric], f"{REFERENCE}-{c}") for b, t in tests.items() if metric in t}
        for i, (question, others) in enumerate(QUESTIONS):
            mine = [found[b] for b in found if b in others or (i == 0 and b not in named)]
            if mine:
                out.append((c, f"{question} In the `{c}` condition ({title(f'{REFERENCE}-{c}')}):", mine))
    return out


def _headroom_line(sig: dict, metric: str, condition: str | None = None) -> str | None:
    """The share of ``oracle − uniform`` promoe recovers: in the run's own condition, or inside ``condition``
    (``condition_headroom``: ``oracle-<c> − uniform-<c>``, recovered by ``promoe-<c>``)."""
    by_metric = sig.get("condition_headroom", {}).get(condition) if condition else sig.get("headroom")
    h = (by_metric or {}).get(metric)
    floor, ceiling, ref = (f"{n}-{condition}" if condition else n for n in (*HEADROOM, REFERENCE))
    if not h or ref not in h["recovered"]:
        return None
    r, room = h["recovered"][ref], h["headroom"]
    share = "n/a (no headroom)" if r["share"] is None else f"{r['share']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]"
    return (f"How much of the oracle's headroom does it recover? `{ceiling}` − `{floor}` = {room['diff']:+.2f} "
            f"[{room['low']:+.2f}, {room['high']:+.2f}] {LABEL[metric]} over {room['n_tasks']} tasks"
            + (f" ({room['n_instances']} instances)" if room.get("n_instances") else "") + f"; `{ref}` "
            f"recovers {share} of it (1: all, 0: none).")


def answer_section(sig: dict, condition: str | None, metric: str = "rougeL") -> list[str]:
    """REPORT.md's opening: the question, one line per comparison, the headroom, the condition; [] without promoe."""
    if REFERENCE not in sig.get("models", {}):
        return []
    where = {"standard": "standard prompts (Definition + input: the description reaches every model through its "
                         "prompt, and promoe's router too)",
             "router_only": "router-only prompts (the input alone: the description reaches only promoe's router)"}
    out = ["## The answer", "",
           f"Does routing generated from the task description help an MoE on unseen tasks? `{REFERENCE}` − each "
           f"row per test task, {LABEL[metric]} (paired, 95% bootstrap CI; MDE: the smallest difference detectable "
           f"with 80% power)" + (f", in this run's condition: {where.get(condition, condition)}." if condition else
                                 "."), ""]

    def lines(questions: list[tuple[str, list[Comparison]]]) -> list[str]:
        return [x for question, found in questions for x in (
            f"**{question}**", "",
            *(f"* `{c.reference}` vs `{c.other}`: {c.diff:+.2f} [{c.low:+.2f}, {c.high:+.2f}], MDE "
              f"{'n/a' if c.mde is None else f'{c.mde:.2f}'}, {c.scope} — {c.verdict}." for c in found), "")]

    out += lines(own_comparisons(sig, metric))
    if line := _headroom_line(sig, metric):
        out += [f"**{line}**", ""]
    inside = by_condition(sig, metric)
    for c in dict.fromkeys(c for c, _, _ in inside):  # each condition's questions, then its own headroom
        out += lines([(question, found) for k, question, found in inside if k == c])
        if line := _headroom_line(sig, metric, c):
            out += [f"**{line}**", ""]
    return out


def fig_answer(sig: dict, metric: str = "rougeL") -> Figure | None:
    """``promoe − other`` with its CI per comparison; the grey band is ± the MDE around 0."""
    rows = [c for _, found in comparisons(sig, metric) for c in found]
    if not rows:
        return None
    fig = Figure(figsize=(8.0, 1.2 + 0.35 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))
    for i, c in enumerate(rows):
        if c.mde is not None:
            ax.fill_betweenx([i - 0.35, i + 0.35], -c.mde, c.mde, color="0.88", lw=0)
        color = "tab:green" if c.low > 0 else "tab:red" if c.high < 0 else "0.3"
        ax.errorbar(c.diff, i, xerr=[[c.diff - c.low], [c.high - c.diff]], fmt="o", color=color, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{c.reference} − {c.other}" for c in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{LABEL[metric]} difference per task (95% CI; grey: ± MDE at 80% power)")
    ax.grid(axis="x", alpha=0.3)
    return fig
