"""The family of questions REPORT.md's answer asks (:mod:`promoe.analysis.answer`), and the one rule its verdicts
follow, from ``significance.json`` alone.

The family, on ROUGE-L (:data:`METRIC`): every ``promoe − other`` comparison the answer prints (:data:`QUESTIONS`
in the run's own condition, then again inside each condition that scored promoe: ``within_condition``) and
every oracle headroom ``oracle − uniform`` it prints (the run's own and each condition's). The rule: Holm's
step-down adjustment (:func:`promoe.analysis.stats.holm`) of the two-sided bootstrap p values of these tests
(``p_bootstrap``, the test the printed intervals come from; a p of 0 enters as ``1 / n_boot``, the smallest a
bootstrap of that size resolves); a comparison is *better* or *worse*, a headroom *detected*, where its
adjusted p is below :data:`ALPHA`, and *no difference detected* / *not detected* elsewhere. The intervals
printed next to the verdicts are the unadjusted 95% bootstrap CIs, so an interval may exclude 0 while its
adjusted test does not reject. ``significance.json``'s ``family`` (:func:`family`) holds every test of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from promoe.analysis.stats import holm
from promoe.registry import ABLATED, HEADROOM, REFERENCE, title

ALPHA = 0.05
"""The family-wise error rate of the verdicts (and every interval's 1 − coverage)."""
METRIC = "rougeL"
"""The metric the answer, and so the family, asks its questions on."""
ADJUSTMENT = ("Holm over the family's two-sided bootstrap p values: better / worse (a headroom: detected) where "
              f"the adjusted p < {ALPHA}")
"""The verdict rule in one line, as significance.json and REPORT.md state it."""

QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Does description-conditioned routing beat static routing over the same experts, the dense model and "
     "mixing every expert?", ("moe", "dense", "uniform", "upcycled")),
    ("Does it use the description? (the same router given another task's description, none, random text, "
     "the category name, a paraphrase)",
     tuple(f"{ABLATED}-{a}" for a in ("shuffled", "empty", "random_text", "category", "paraphrase"))),
)
"""The questions and the rows each is answered against (rows the run did not score are left out)."""
HEADROOM_QUESTION = "How much of the oracle's headroom does it recover?"


@dataclass(frozen=True)
class Comparison:
    """``reference − other`` on one metric, over ``n_tasks`` common test tasks (``n_instances`` shared instances;
    None in runs from before it was recorded), with its bootstrap p (``p``) and the family's Holm-adjusted p
    (``p_holm``; None where it is not one of the family's tests)."""

    other: str
    diff: float
    low: float
    high: float
    mde: float | None
    n_tasks: int
    n_instances: int | None = None
    reference: str = REFERENCE
    p: float | None = None
    p_holm: float | None = None
    unit: str | None = None

    @property
    def key(self) -> str:
        return f"{self.reference} − {self.other}"

    @property
    def scope(self) -> str:
        return f"{self.n_tasks} tasks" + (f", {self.n_instances} instances" if self.n_instances else "")

    @property
    def detected(self) -> bool:
        """The family's adjusted test rejects "no difference" (:data:`ALPHA`)."""
        return self.p_holm is not None and self.p_holm < ALPHA

    @property
    def verdict(self) -> str:
        if self.p_holm is None:
            return "not tested (no bootstrap p)"
        if self.detected:
            return "better" if self.diff > 0 else "worse"
        return "no difference detected"


def _comparison(other: str, t: dict, reference: str = REFERENCE) -> Comparison:
    return Comparison(other, t["diff"], t["low"], t["high"], t.get("mde"), t["n_tasks"], t.get("n_instances"),
                      reference, t.get("p_bootstrap"), unit=t.get("unit"))


def _paired(sig: dict, other: str, metric: str) -> Comparison | None:
    """``promoe − other`` from the paired tests, or flipped from the ablation table (``row − promoe`` there)."""
    if (t := sig.get("paired", {}).get(other, {}).get(metric)) is not None:
        return _comparison(other, t)
    if (t := sig.get("ablations", {}).get(other, {}).get(metric)) is not None:
        return replace(_comparison(other, t), diff=-t["diff"], low=-t["high"], high=-t["low"])
    return None


def _own(sig: dict, metric: str) -> list[tuple[str, list[Comparison]]]:
    out = []
    for question, others in QUESTIONS:
        if found := [c for o in others if (c := _paired(sig, o, metric)) is not None]:
            out.append((question, found))
    return out


def _inside(sig: dict, metric: str) -> list[tuple[str, str, list[Comparison]]]:
    out, named = [], {b for _, others in QUESTIONS[1:] for b in others}
    for c, tests in sig.get("within_condition", {}).items():
        found = {b: _comparison(f"{b}-{c}", t[metric], f"{REFERENCE}-{c}") for b, t in tests.items() if metric in t}
        for i, (question, others) in enumerate(QUESTIONS):
            if mine := [found[b] for b in found if b in others or (i == 0 and b not in named)]:
                out.append((c, f"{question} In the `{c}` condition ({title(f'{REFERENCE}-{c}')}):", mine))
    return out


def _room(sig: dict, metric: str, condition: str | None) -> Comparison | None:
    """``oracle − uniform`` (inside ``condition``: ``oracle-<c> − uniform-<c>``) where the run has it."""
    by_metric = sig.get("condition_headroom", {}).get(condition) if condition else sig.get("headroom")
    if not (h := (by_metric or {}).get(metric)):
        return None
    floor, ceiling = (f"{n}-{condition}" if condition else n for n in HEADROOM)
    return _comparison(floor, h["headroom"], ceiling)


def _members(sig: dict, metric: str) -> list[tuple[str, Comparison]]:
    """(question, test) of every test the answer prints, in its order."""
    out = [(q, c) for q, found in _own(sig, metric) for c in found]
    out += [(HEADROOM_QUESTION, h)] if (h := _room(sig, metric, None)) else []
    inside = _inside(sig, metric)
    for cond in dict.fromkeys(c for c, _, _ in inside):
        out += [(q, c) for k, q, found in inside if k == cond for c in found]
        out += [(HEADROOM_QUESTION, h)] if (h := _room(sig, metric, cond)) else []
    return out


def _adjusted(sig: dict, metric: str) -> dict[str, float]:
    floor = 1 / sig["n_boot"] if sig.get("n_boot") else 0.0
    return holm({c.key: max(c.p, floor) for _, c in _members(sig, metric) if c.p is not None})


def _fill(found: list[Comparison], adjusted: dict[str, float]) -> list[Comparison]:
    return [replace(c, p_holm=adjusted.get(c.key)) for c in found]


def own_comparisons(sig: dict, metric: str = METRIC) -> list[tuple[str, list[Comparison]]]:
    """The questions in the run's own prompt condition: ``promoe − other`` for each row that answers one."""
    adjusted = _adjusted(sig, metric)
    return [(q, _fill(found, adjusted)) for q, found in _own(sig, metric)]


def by_condition(sig: dict, metric: str = METRIC) -> list[tuple[str, str, list[Comparison]]]:
    """``(c, question, comparisons)``: each of :data:`QUESTIONS` again inside each condition ``c`` that scored
    promoe, ``promoe-<c> − <row>-<c>`` for its rows (``within_condition``); rows no question names go with the
    first."""
    adjusted = _adjusted(sig, metric)
    return [(c, q, _fill(found, adjusted)) for c, q, found in _inside(sig, metric)]


def comparisons(sig: dict, metric: str = METRIC) -> list[tuple[str, list[Comparison]]]:
    """Each question with the comparisons the run can answer it with (questions with none left out), then the
    questions again inside each condition (:func:`by_condition`)."""
    return own_comparisons(sig, metric) + [(question, found) for _, question, found in by_condition(sig, metric)]


def headroom_test(sig: dict, metric: str = METRIC, condition: str | None = None) -> Comparison | None:
    """The headroom ``oracle − uniform`` (inside ``condition``) with its family-adjusted p, where the run has it."""
    room = _room(sig, metric, condition)
    return None if room is None else _fill([room], _adjusted(sig, metric))[0]


def family(sig: dict, metric: str = METRIC) -> dict:
    """significance.json's ``family``: the rule and every test of the family with its p, adjusted p and verdict."""
    adjusted = _adjusted(sig, metric)
    tests = []
    for question, c in _members(sig, metric):
        c = _fill([c], adjusted)[0]
        verdict = c.verdict if question != HEADROOM_QUESTION else "detected" if c.detected else "not detected"
        tests.append({"question": question, "comparison": c.key, "diff": c.diff, "low": c.low, "high": c.high,
                      "unit": c.unit, "p_bootstrap": c.p, "p_holm": c.p_holm, "verdict": verdict})
    return {"metric": metric, "alpha": ALPHA, "rule": ADJUSTMENT, "n_tests": len(adjusted),
            "intervals": "unadjusted 95% bootstrap CIs", "tests": tests}
