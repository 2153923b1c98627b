"""Tests of the SNI metrics (``promoe.metrics``).

Expected values are computed by hand (the LCS of every ROUGE-L case is worked out in a comment);
the parity test compares with an independent port of the official
``eval/automatic/evaluation.py`` of allenai/natural-instructions.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from rouge_score import rouge_scorer

from promoe.metrics import (
    Reference,
    category_key,
    exact_match,
    instance_scores,
    normalize_answer,
    rouge_l,
    score,
)
from tests.helpers import EXAMPLE_EXPECTED, _example, ref

# --------------------------------------------------------------------------------------------
# exact match
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("Yes!", "yes", 1.0),                     # case and punctuation
        ("  New   York \n", "new york", 1.0),     # whitespace collapsed
        ("new\tyork", "New York.", 1.0),
        ("U.S.A.", "usa", 1.0),                   # punctuation inside words is deleted
        ("don't", "dont", 1.0),
        ("well-known", "wellknown", 1.0),         # deleted, not replaced by a space...
        ("well-known", "well known", 0.0),        # ...so this differs
        ("the cat", "cat", 0.0),                  # articles are NOT removed (unlike SQuAD)
        ("a cat", "cat", 0.0),
        ("An answer", "answer", 0.0),
        ("cats", "cat", 0.0),                     # no stemming in EM
        ("\u201cyes\u201d", "yes", 0.0),          # curly quotes are not in string.punctuation
        ("你好世界", "你好世界", 1.0),               # identical non-ASCII text
        ("", "yes", 0.0),                         # empty prediction
        ("!!!", "?", 1.0),                        # both normalise to ""
    ],
)
def test_exact_match(pred: str, gold: str, expected: float) -> None:
    assert exact_match(pred, gold) == expected


def test_normalize_answer() -> None:
    assert normalize_answer("  The  Cat,\tsat!\n") == "the cat sat"
    assert normalize_answer("It's A-OK.") == "its aok"
    assert normalize_answer("") == ""


# --------------------------------------------------------------------------------------------
# ROUGE-L
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # pred [the cat sat] vs ref [the cat sat on the mat]: LCS "the cat sat" = 3, P=3/3, R=3/6, F=2/3
        ("the cat sat", "the cat sat on the mat", 2 / 3),
        # prediction and reference swap P and R: same F
        ("the cat sat on the mat", "the cat sat", 2 / 3),
        # Porter: running->run, dogs->dog; ref [run dog]: LCS 2, P=R=1
        ("running dogs", "run dog", 1.0),
        ("Running Dogs!", "run, dog", 1.0),       # lower-cased, punctuation -> space
        # "dogs" (4 chars) is stemmed to "dog": LCS 1 of 1/1
        ("dogs", "dog", 1.0),
        # "was" has 3 chars and is not stemmed (Porter alone would give "wa"): LCS 0
        ("was", "wa", 0.0),
        # [it s] vs [its]: "'" splits it; no common token
        ("it's", "its", 0.0),
        # order matters: [b a c] vs [a b c]: LCS "a c" or "b c" = 2, P=R=2/3, F=2/3
        ("b a c", "a b c", 2 / 3),
        # [a x b y c] vs [a b c]: LCS 3, P=3/5, R=3/3, F=2*(3/5)/(3/5+1)=0.75
        ("a x b y c", "a b c", 0.75),
        # [the the cat] vs [the cat the dog]: LCS "the cat" = 2 (or "the the"), P=2/3, R=2/4, F=4/7
        ("the the cat", "the cat the dog", 4 / 7),
        # non-ASCII only: no tokens on either side -> 0 though identical
        ("你好世界", "你好世界", 0.0),
        # curly quotes are non-alphanumeric -> space: [yes] vs [yes]
        ("\u201cyes\u201d", "yes", 1.0),
        ("", "yes", 0.0),                         # empty prediction
        ("42 apples", "42", 2 / 3),               # digits are tokens: LCS 1, P=1/2, R=1, F=2/3
    ],
)
def test_rouge_l(pred: str, gold: str, expected: float) -> None:
    assert rouge_l(pred, gold) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------------
# one instance, several references
# --------------------------------------------------------------------------------------------


def test_max_over_references_taken_per_metric_separately() -> None:
    # ref "it's": EM 1 ("its" == "its") but ROUGE 0 ([its] vs [it s]);
    # ref "its great": EM 0 but ROUGE [its] vs [its great]: LCS 1, P=1, R=1/2, F=2/3.
    rl, em = instance_scores("its", ["it's", "its great"])
    assert em == 1.0
    assert rl == pytest.approx(2 / 3)
    # the order of the references does not matter
    assert instance_scores("its", ["its great", "it's"]) == (rl, em)


def test_max_over_references_rouge() -> None:
    # [the cat sat] vs [the cat sat on the mat] -> 2/3; vs [a cat sat] LCS "cat sat" 2 -> 2/3;
    # vs [the cat sat down] LCS 3, P=1, R=3/4, F=6/7 (the max)
    rl, em = instance_scores("The cat sat.", ["the cat sat on the mat", "a cat sat", "the cat sat down"])
    assert rl == pytest.approx(6 / 7)
    assert em == 0.0


def test_instance_needs_a_reference() -> None:
    with pytest.raises(ValueError):
        instance_scores("x", [])


# --------------------------------------------------------------------------------------------
# score(): aggregation (the hand-computed example: tests/helpers.py)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "key"),
    [
        ("Question Answering", "question_answering"),
        ("  Text  to\tCode ", "text_to_code"),
        ("Sentiment_Analysis", "sentiment_analysis"),
        ("Misc.", "misc."),
    ],
)
def test_category_key(category: str, key: str) -> None:
    assert category_key(category) == key


def test_score_hand_computed() -> None:
    preds, refs = _example()
    assert score(preds, refs) == EXAMPLE_EXPECTED


def test_task_mean_differs_from_instance_mean() -> None:
    res = score(*_example())
    assert res["exact_match"] == 50.0
    assert res["exact_match_task_mean"] == 66.6667
    assert res["rougeL"] != res["rougeL_task_mean"]


def test_missing_prediction_counts_as_empty() -> None:
    refs = [ref("x", ["no"]), ref("y", ["the cat sat on the mat"])]
    missing = score({}, refs)
    empty = score({"x": "", "y": ""}, refs)
    assert missing == empty
    assert missing["rougeL"] == 0.0 and missing["exact_match"] == 0.0 and missing["n"] == 2


def test_extra_predictions_ignored() -> None:
    refs = [ref("x", ["yes"])]
    assert score({"x": "yes", "other": "no", "more": "x"}, refs) == score({"x": "yes"}, refs)
    assert score({"x": "yes", "other": "no"}, refs)["n"] == 1


def test_categories_merge_after_normalisation() -> None:
    refs = [
        ref("1", ["yes"], task="t1", cat="Question Answering"),
        ref("2", ["yes"], task="t2", cat="question   ANSWERING"),
        ref("3", ["yes"], task="t3", cat="Title Generation"),
    ]
    res = score({"1": "yes", "2": "no", "3": "yes"}, refs)
    assert set(res["per_category"]) == {"question_answering", "title_generation"}
    qa = res["per_category"]["question_answering"]
    assert (qa["exact_match"], qa["rougeL"], qa["n"]) == (50.0, 50.0, 2)
    assert res["per_task"]["t2"]["category"] == "question_answering"
    assert res["per_task"]["t2"]["exact_match"] == 0.0
    assert res["n_tasks"] == 3


def test_rounding_to_4_decimals() -> None:
    # 1 EM hit of 7 -> 100/7 = 14.285714... -> 14.2857
    # RL: one exact (1) and one [a x b y c] vs [a b c] (0.75) of 7 -> 175/7 = 25.0 exactly;
    # with 6 instances instead: 175/6 = 29.1666... -> 29.1667
    refs7 = [ref(str(i), ["a b c"]) for i in range(7)]
    res = score({"0": "a b c", "1": "a x b y c"}, refs7)
    assert res["exact_match"] == 14.2857
    assert res["rougeL"] == 25.0
    res6 = score({"0": "a b c", "1": "a x b y c"}, refs7[:6])
    assert res6["exact_match"] == 16.6667      # 100/6
    assert res6["rougeL"] == 29.1667
    # 2/3 -> 66.6667 and 1/3 -> 33.3333 (not truncated)
    res3 = score({"0": "a b c", "1": "a b c"}, refs7[:3])
    assert res3["exact_match"] == 66.6667
    for r in (res, res6, res3):
        for key in ("rougeL", "exact_match", "rougeL_task_mean", "exact_match_task_mean"):
            assert r[key] == round(r[key], 4)


def test_non_default_track_raises() -> None:
    refs = [ref("1", ["yes"]), ref("2", ["是"], track="xlingual")]
    with pytest.raises(ValueError, match="default"):
        score({"1": "yes", "2": "是"}, refs)


def test_non_ascii_instance() -> None:
    # identical Chinese strings: EM 1, ROUGE-L 0 (the default tokenizer keeps no token)
    res = score({"1": "你好世界"}, [ref("1", ["你好世界"])])
    assert res["exact_match"] == 100.0
    assert res["rougeL"] == 0.0


# --------------------------------------------------------------------------------------------
# parity with an independent port of the official evaluation.py
# --------------------------------------------------------------------------------------------


_official_scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def official_normalize_answer(s: str) -> str:
    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text: str) -> str:
        return text.lower()

    return white_space_fix(remove_punc(lower(s)))


def official_exact_match(prediction: str, ground_truth: str) -> bool:
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def official_rouge(prediction: str, ground_truth: str) -> float:
    return _official_scorer.score(prediction=prediction, target=ground_truth)["rougeL"].fmeasure


def official_metric_max_over_ground_truths(metric_fn: Callable[[str, str], Any], prediction: str,
                                           ground_truths: Sequence[str]) -> Any:
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def official_compute_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    assert len(predictions) == len(references)
    em, rouge_l_sum = 0, 0
    for pred, gold in zip(predictions, references, strict=True):
        em += official_metric_max_over_ground_truths(official_exact_match, pred, gold)
        rouge_l_sum += official_metric_max_over_ground_truths(official_rouge, pred, gold)
    metrics = {"exact_match": 100.0 * em / len(references), "rougeL": 100.0 * rouge_l_sum / len(references)}
    return {k: round(v, 4) for k, v in metrics.items()}


def official_compute_grouped_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]],
                                     groups: Sequence[str]) -> dict:
    examples_by_group: dict[str, list[tuple[str, Sequence[str]]]] = {}
    for pred, gold, group in zip(predictions, references, groups, strict=True):
        examples_by_group.setdefault(group, []).append((pred, gold))
    results = {}
    for group, group_examples in examples_by_group.items():
        task_predictions, task_references = zip(*group_examples, strict=True)
        for metric, value in official_compute_metrics(task_predictions, task_references).items():
            results[f"{metric}_for_{group}"] = value
    return results


def official_evaluate(pred_rows: Sequence[dict], ref_rows: Sequence[dict]) -> dict:
    """The ``__main__`` block of evaluation.py, default track only."""
    eval_instances = {}
    for instance in ref_rows:
        instance = dict(instance)
        if "track" not in instance:
            instance["track"] = "default"
        eval_instances[instance["id"]] = instance
    all_predictions = {p["id"]: p["prediction"] for p in pred_rows}
    instance_ids = [i for i, inst in eval_instances.items() if inst["track"] == "default"]
    references = [eval_instances[i]["references"] for i in instance_ids]
    predictions = [all_predictions.get(i, "") for i in instance_ids]
    results = official_compute_metrics(predictions, references)
    categories = ["_".join(eval_instances[i]["task_category"].lower().split()) for i in instance_ids]
    results.update(official_compute_grouped_metrics(predictions, references, categories))
    tasks = [eval_instances[i]["task_id"] for i in instance_ids]
    results.update(official_compute_grouped_metrics(predictions, references, tasks))
    return results


_WORDS = ["the", "a", "an", "cat", "cats", "dog", "dogs", "running", "run", "ran", "jumped", "jumps",
          "Yes", "no", "It's", "its", "New", "York", "well-known", "U.S.", "café", "你好", "42", "was",
          "The", "Answer", "answers", "positive", "Negative", "x"]
_PUNCT_TAILS = ["", "", "", ".", "!", "?", ",", "...", "\u201d"]
_SPACES = [" ", " ", " ", "  ", "\t", "\n"]
_CATEGORIES = ["Question Answering", "question answering ", "Sentiment Analysis", "Title  Generation",
               "Text to Code", "Misc."]


def _random_text(rng: random.Random, lo: int = 1, hi: int = 6) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    text = ""
    for w in words:
        text += w + rng.choice(_PUNCT_TAILS) + rng.choice(_SPACES)
    return text.strip() if rng.random() < 0.7 else text


def _perturb(rng: random.Random, text: str) -> str:
    choice = rng.random()
    if choice < 0.3:
        return text
    if choice < 0.5:
        return text.upper() if rng.random() < 0.5 else text.lower()
    if choice < 0.7:
        return "  " + text.replace(" ", rng.choice(_SPACES)) + rng.choice(_PUNCT_TAILS)
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


def _random_dataset(seed: int, n: int = 200) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    task_names = [f"task{i:03d}_t" for i in range(9)]
    task_cat = {t: rng.choice(_CATEGORIES) for t in task_names}
    ref_rows: list[dict] = []
    pred_rows: list[dict] = []
    for i in range(n):
        task = rng.choice(task_names[: rng.randint(1, len(task_names))])  # unequal task sizes
        golds = [_random_text(rng) for _ in range(rng.randint(1, 3))]
        rid = f"{task}-{i}"
        ref_rows.append({"id": rid, "references": golds, "task_id": task, "task_category": task_cat[task],
                         "track": "default"})
        r = rng.random()
        if r < 0.1:
            continue  # missing prediction
        if r < 0.15:
            pred = ""
        elif r < 0.65:
            pred = _perturb(rng, rng.choice(golds))
        else:
            pred = _random_text(rng)
        pred_rows.append({"id": rid, "prediction": pred})
    pred_rows.append({"id": "not-a-reference", "prediction": "whatever"})
    return pred_rows, ref_rows


@pytest.mark.parametrize("seed", [0, 1])
def test_parity_with_official_script(seed: int) -> None:
    pred_rows, ref_rows = _random_dataset(seed)
    expected = official_evaluate(pred_rows, ref_rows)
    refs = [Reference(id=r["id"], references=tuple(r["references"]), task_id=r["task_id"],
                      task_category=r["task_category"], track=r["track"]) for r in ref_rows]
    got = score({p["id"]: p["prediction"] for p in pred_rows}, refs)

    # the data set is not degenerate: it has EM hits and misses, and several tasks and categories
    assert 0 < got["exact_match"] < 100 and 0 < got["rougeL"] < 100
    assert got["n"] == len(ref_rows)
    predicted = {p["id"] for p in pred_rows}
    assert any(r["id"] not in predicted for r in ref_rows)  # some predictions are missing
    assert len(got["per_task"]) >= 4 and len(got["per_category"]) >= 3

    for metric in ("exact_match", "rougeL"):
        assert got[metric] == pytest.approx(expected[metric], abs=1e-4)
        for cat, vals in got["per_category"].items():
            assert vals[metric] == pytest.approx(expected[f"{metric}_for_{cat}"], abs=1e-4), (metric, cat)
        for task, vals in got["per_task"].items():
            assert vals[metric] == pytest.approx(expected[f"{metric}_for_{task}"], abs=1e-4), (metric, task)
    cats = {"_".join(r["task_category"].lower().split()) for r in ref_rows}
    assert set(got["per_category"]) == cats
    assert set(got["per_task"]) == {r["task_id"] for r in ref_rows}
    n_official_keys = 2 + 2 * len(cats) + 2 * len(got["per_task"])
    assert len(expected) == n_official_keys  # no category name collides with a task id
