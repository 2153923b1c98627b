"""SNI evaluation metrics, computed exactly as the official script does.

Official: ``eval/automatic/evaluation.py`` of allenai/natural-instructions (the same logic as
Tk-Instruct ``compute_metrics.py``): exact match after lower-casing, deleting ASCII punctuation and
collapsing whitespace; ROUGE-L F-measure from ``rouge_score`` with the Porter stemmer and its default
tokenizer; the max over references per instance; the mean over instances × 100, rounded to 4
decimals; overall, per category (``"_".join(category.lower().split())``) and per task. A missing
prediction counts as the empty string. One addition, a bound: an answer (or reference) is scored on its first
``answer_words`` words (:func:`promoe.limits.cut_words`; 5,000 by default, above every real one).
"""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from rouge_score import rouge_scorer

from promoe.limits import cut_words

_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, delete ``string.punctuation``, collapse whitespace (SQuAD without article removal)."""
    return " ".join("".join(ch for ch in s.lower() if ch not in _PUNCT).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (rouge_score, stemmer on, default tokenizer)."""
    return _scorer().score(target=reference, prediction=prediction)["rougeL"].fmeasure


def max_over_references(metric, prediction: str, references: Sequence[str]) -> float:
    return max(metric(prediction, ref) for ref in references)


@dataclass(frozen=True)
class Reference:
    """One line of an official reference file."""

    id: str
    references: tuple[str, ...]
    task_id: str
    task_category: str
    track: str = "default"


def instance_scores(prediction: str, references: Sequence[str]) -> tuple[float, float]:
    """``(rougeL, exact_match)`` of one prediction, each the max over references, in [0, 1]. A prediction or
    reference longer than the ``answer_words`` limit (:mod:`promoe.limits`, 5,000 words: longer than any reference
    or test input of the offline packages) is scored on its first that many words: ROUGE-L's time and memory grow with the product
    of the two lengths (a 10^6-word answer took a minute and 2 GiB)."""
    if not references:
        raise ValueError("an instance needs at least one reference")
    prediction, references = cut_words(prediction), [cut_words(r) for r in references]
    return max_over_references(rouge_l, prediction, references), max_over_references(
        exact_match, prediction, references
    )


def category_key(category: str) -> str:
    """The official per-category key: lower-case words joined by underscores."""
    return "_".join(category.lower().split())


def _mean(values: list[float]) -> float:
    return round(100.0 * sum(values) / len(values), 4) if values else 0.0


def score(predictions: dict[str, str], references: Sequence[Reference]) -> dict:
    """Score predictions (``{id: text}``) against references, as the official script.

    Returns ``rougeL``, ``exact_match`` and ``n`` (instance means, as the official script) with
    ``per_category`` and ``per_task`` breakdowns (each ``{rougeL, exact_match, n}``), ``per_instance``
    (``{id: {task, rougeL, exact_match}}``: rows scored on different instances are compared on the ones they
    share, :func:`promoe.analysis.significance.shared_rows`), and the task-level means ``rougeL_task_mean`` / ``exact_match_task_mean`` (every task weighs the same,
    since offline test tasks have unequal instance counts). Only the ``default`` track is scored;
    other tracks raise, since they need a different tokenizer.
    """
    other = sorted({r.track for r in references} - {"default"})
    if other:
        raise ValueError(f"only the 'default' track is supported; references hold {other}")
    rl_all: list[float] = []
    em_all: list[float] = []
    by_cat: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    by_task: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    task_cat: dict[str, str] = {}
    per_instance: dict[str, dict] = {}
    for ref in references:
        rl, em = instance_scores(predictions.get(ref.id, ""), ref.references)
        per_instance[ref.id] = {"task": ref.task_id, "rougeL": round(100.0 * rl, 4), "exact_match": 100.0 * em}
        rl_all.append(rl)
        em_all.append(em)
        for bucket in (by_cat[category_key(ref.task_category)], by_task[ref.task_id]):
            bucket[0].append(rl)
            bucket[1].append(em)
        task_cat[ref.task_id] = category_key(ref.task_category)

    def table(groups: dict[str, tuple[list[float], list[float]]]) -> dict[str, dict]:
        return {k: {"rougeL": _mean(r), "exact_match": _mean(e), "n": len(r)}
                for k, (r, e) in sorted(groups.items())}

    per_task = table(by_task)
    for k, v in per_task.items():
        v["category"] = task_cat[k]
    task_rl = [sum(r) / len(r) for r, _ in by_task.values()]
    task_em = [sum(e) / len(e) for _, e in by_task.values()]
    return {
        "rougeL": _mean(rl_all),
        "exact_match": _mean(em_all),
        "n": len(rl_all),
        "rougeL_task_mean": _mean(task_rl),
        "exact_match_task_mean": _mean(task_em),
        "n_tasks": len(per_task),
        "per_category": table(by_cat),
        "per_task": per_task,
        "per_instance": per_instance,
    }


def add_likelihood(result: dict, nll: dict[str, float], references: Sequence[Reference]) -> dict:
    """``result`` (a :func:`score` dict of the same references) with the reference NLL (mean per-token NLL
    of an instance's best reference, :mod:`promoe.evaluation.likelihood`): ``ref_nll`` (instance mean),
    ``ref_nll_task_mean``, per task and per instance; unchanged unless every instance has one."""
    by_task: dict[str, list[float]] = defaultdict(list)
    for ref in references:
        if ref.id not in nll:
            return result
        by_task[ref.task_id].append(nll[ref.id])
    every = [x for xs in by_task.values() for x in xs]
    if not every:
        return result
    for ref in references:
        if ref.id in result.get("per_instance", {}):
            result["per_instance"][ref.id]["ref_nll"] = round(nll[ref.id], 6)
    for task, xs in by_task.items():
        result["per_task"][task]["ref_nll"] = round(sum(xs) / len(xs), 6)
    result["ref_nll"] = round(sum(every) / len(every), 6)
    result["ref_nll_task_mean"] = round(sum(sum(xs) / len(xs) for xs in by_task.values()) / len(by_task), 6)
    return result

