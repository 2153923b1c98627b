"""The answer first: the question the experiment exists to answer, answered in a few lines of REPORT.md and one
figure, from ``significance.json`` alone.

Every line is ``promoe − other`` per test task (paired over the tasks both were scored on), with its
(unadjusted) 95% bootstrap CI, the minimum detectable effect at 80% power
(:func:`promoe.analysis.stats.min_detectable_effect`), the family's Holm-adjusted p and a verdict under the
one rule of :mod:`promoe.analysis.family` (the family: every test this section prints):

* *better* / *worse*: the adjusted p is below 0.05;
* *no difference detected*: it is not. What the data rule out is read from the CI's bounds (differences
  beyond them); the MDE is the true difference the test would have detected with 80% power, so a CI
  spanning 0 next to a large MDE says the comparison had little power, not that the rows are equal;
* the oracle headroom line: ``oracle − uniform``, and the share of it promoe recovers only where the
  headroom is detected (a ratio whose denominator may be 0 has no meaningful interval);
* the same questions inside each condition the run scored promoe in (``within_condition``: e.g.
  ``promoe-router_only − moe-router_only``, both trained and scored on the instance input alone, and
  ``promoe-router_only − promoe-shuffled-router_only``, its router given another task's description).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from promoe.analysis.family import (
    ADJUSTMENT,
    QUESTIONS,
    Comparison,
    by_condition,
    comparisons,
    family,
    headroom_test,
    own_comparisons,
)
from promoe.analysis.rundata import LABEL
from promoe.registry import REFERENCE

__all__ = ["QUESTIONS", "Comparison", "answer_section", "by_condition", "comparisons", "fig_answer",
           "own_comparisons"]


def _p(p: float | None, n_boot: int | None) -> str:
    if p is None:
        return "n/a"
    return f"< {1 / n_boot:.0e}" if p == 0 and n_boot else f"{p:.3g}"


def _headroom_line(sig: dict, metric: str, condition: str | None = None) -> str | None:
    """The headroom ``oracle − uniform`` and, where it is detected, the share of it promoe recovers: in the run's
    own condition, or inside ``condition`` (``condition_headroom``: ``oracle-<c> − uniform-<c>``, recovered by
    ``promoe-<c>``)."""
    by_metric = sig.get("condition_headroom", {}).get(condition) if condition else sig.get("headroom")
    h, room = (by_metric or {}).get(metric), headroom_test(sig, metric, condition)
    ref = f"{REFERENCE}-{condition}" if condition else REFERENCE
    if not h or room is None or ref not in h["recovered"]:
        return None
    r, t = h["recovered"][ref], h["headroom"]
    head = (f"How much of the oracle's headroom does it recover? `{room.reference}` − `{room.other}` = "
            f"{t['diff']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}] {LABEL[metric]} over {t['n_tasks']} tasks"
            + (f" ({t['n_instances']} instances)" if t.get("n_instances") else "")
            + f", p (Holm) {_p(room.p_holm, sig.get('n_boot'))}; ")
    if not room.detected:
        return head + "the headroom is not detected, so no share of it is reported."
    if r["share"] is None:
        return head + f"over the {r['n_tasks']} tasks the three rows share its 95% CI spans 0, so no share of it " \
                      "is reported."
    return head + f"`{ref}` recovers {r['share']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] of it (1: all, 0: none)."


def answer_section(sig: dict, condition: str | None, metric: str = "rougeL", budget: str | None = None) -> list[str]:
    """REPORT.md's opening: the question, one line per comparison, what the run's budget bought (``budget``: the
    training examples each row saw, :func:`promoe.analysis.compute.budget`), the headroom, the condition; [] without
    promoe."""
    if REFERENCE not in sig.get("models", {}):
        return []
    where = {"standard": "standard prompts (Definition + input: the description reaches every model through its "
                         "prompt, and promoe's router too)",
             "router_only": "router-only prompts (the input alone: the description reaches only promoe's router)"}
    fam = sig.get("family") or family(sig, metric)
    unit = sig.get("resampling", {}).get("unit")
    out = ["## The answer", "",
           f"Does routing generated from the task description help an MoE on unseen tasks? `{REFERENCE}` − each "
           f"row per test task, {LABEL[metric]} (paired, unadjusted 95% bootstrap CI"
           + (" resampling groups of related test tasks" if unit == "group" else "")
           + "; MDE: the true difference a two-sided paired test at 5% detects with 80% power — the CI's ends, "
             "not the MDE, say which differences the data rule out)"
           + (f", in this run's condition: {where.get(condition, condition)}." if condition else "."), "",
           f"Verdicts: {ADJUSTMENT}, the family being every test this section prints "
           f"({fam.get('n_tests', 'n/a')} tests on {LABEL[metric]}: each comparison and each headroom below). "
           "The intervals are not adjusted: one may exclude 0 where the adjusted test finds no difference. The MDE "
           "is that of one test at 5%; under the adjustment the detectable difference is larger.", ""]

    def lines(questions: list[tuple[str, list[Comparison]]]) -> list[str]:
        return [x for question, found in questions for x in (
            f"**{question}**", "",
            *(f"* `{c.reference}` vs `{c.other}`: {c.diff:+.2f} [{c.low:+.2f}, {c.high:+.2f}], MDE "
              f"{'n/a' if c.mde is None else f'{c.mde:.2f}'}, p (Holm) {_p(c.p_holm, sig.get('n_boot'))}, "
              f"{c.scope} — {c.verdict}." for c in found), "")]

    own = own_comparisons(sig, metric)
    out += lines(own) + _power_line(own, metric, budget)
    if line := _headroom_line(sig, metric):
        out += [f"**{line}**", ""]
    inside = by_condition(sig, metric)
    for c in dict.fromkeys(c for c, _, _ in inside):  # each condition's questions, then its own headroom
        out += lines([(question, found) for k, question, found in inside if k == c])
        if line := _headroom_line(sig, metric, c):
            out += [f"**{line}**", ""]
    return out


POWERED_MDE = 1.5
"""The MDE in ROUGE-L of ``promoe − moe`` that the reference run is sized for (``--preset reference``: about 32
instances per test task); a run above it says where the powered answer is."""


def _power_line(own: list[tuple[str, list[Comparison]]], metric: str, budget: str | None = None) -> list[str]:
    """What the run's budget bought: the training examples each row saw (``budget``) and the smallest ``promoe −
    moe`` difference the test detects; where that is above the reference run's, where the powered answer is."""
    head = next((c for _, found in own for c in found if c.other == "moe"), None)
    if metric != "rougeL" or head is None or head.mde is None:
        return []
    line = (f"What this run's budget buys: {budget}; " if budget else "Power: ") + \
        f"`{head.reference}` − `{head.other}` over {head.scope} detects a difference of {head.mde:.2f} ROUGE-L (MDE)"
    if head.mde <= POWERED_MDE:
        return [line + ".", ""]
    return [line + ", not smaller ones. The powered answer (MDE about "
            f"{POWERED_MDE} with about 32 instances per test task) is the reference run shipped in "
            "`results/reference/` (`python run_experiment.py --preset reference`).", ""]


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
        color = ("tab:green" if c.diff > 0 else "tab:red") if c.detected else "0.3"
        ax.errorbar(c.diff, i, xerr=[[c.diff - c.low], [c.high - c.diff]], fmt="o", color=color, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{c.reference} − {c.other}" for c in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{LABEL[metric]} difference per task (unadjusted 95% CI; grey: ± MDE at 80% power)")
    ax.grid(axis="x", alpha=0.3)
    return fig
