"""More wordings of each rule of the synthetic suite (:mod:`promoe.data.synth`), for the router to learn from: a
training task carries some in its ``Paraphrases`` field (never a test task).

A wording is composed from a verb, a noun phrase that says which words the rule outputs (from synonyms of its
positions: first, initial, opening, leftmost, ...; last, final, closing, rightmost, ...), where the words are and
how the sentence ends — tens of thousands of combinations per rule, none a hand-written phrasing of the rule (the
held-out test phrasings among them). The synonym lists cover words that the held-out phrasings use and the
training phrasings do not (leftmost, initial, final, ...): ``python -m promoe.benchmarks.encoder_separability
--disjoint`` measures what is left without them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

_FIRST = ("first", "initial", "opening", "leading", "starting", "leftmost", "front", "earliest", "beginning")
_LAST = ("last", "final", "closing", "ending", "trailing", "rightmost", "back", "latest", "concluding")
_COUNT = {1: ("",), 2: ("two", "2", "pair of"), 3: ("three", "3", "trio of")}
_VERBS = ("Output", "Write", "Return", "Give", "Print", "Copy", "Answer with", "Respond with", "Extract", "Produce",
          "Reply with", "Keep", "Take", "Select", "Report", "Type", "Show", "List", "Repeat", "State")
_SOURCES = ("", " of the list", " of the sequence", " from the input", " of the given words", " in the word list",
            " from the list you are given", " of the input")
_ENDS = (".", " and nothing else.", " and ignore the others.", " and drop the rest.", "; skip everything else.",
         ", nothing more.", " only.", " as your answer.", ", leaving out the rest.", " and leave the others out.")
_WHOLE = ("all the words", "every word", "the whole list", "the entire input", "the complete sequence",
          "each word in the original order", "the list unchanged", "all of the words as they are", "the full list",
          "every word, keeping their order", "all words in the same order")


def _span(positions: tuple[str, ...], n: int) -> list[str]:
    """``the first word``, ``the opening two words``, ``the two leftmost words``, ..."""
    if n == 1:
        return [f"the {p} word" for p in positions]
    return [f"the {p} {c} words" for p in positions for c in _COUNT[n]] + [f"the {_COUNT[n][0]} {p} words"
                                                                         for p in positions]


def _ordered(a: tuple[str, ...], b: tuple[str, ...]) -> list[str]:
    """The ``a`` word, then the ``b`` word, in several words."""
    return [f.format(x=f"the {x} word", y=f"the {y} word") for x in a for y in b
            for f in ("{x} followed by {y}", "{x} and then {y}", "{x}, then {y}", "first {x}, after it {y}")]


def _objects(rule_id: str) -> list[str]:
    """Noun phrases that say what ``rule_id`` outputs, composed from synonyms of its positions."""
    return {
        "first_word": _span(_FIRST, 1), "last_word": _span(_LAST, 1), "first_two": _span(_FIRST, 2),
        "last_two": _span(_LAST, 2), "first_three": _span(_FIRST, 3), "first_and_last": _ordered(_FIRST, _LAST),
        "last_and_first": _ordered(_LAST, _FIRST), "copy_all": list(_WHOLE),
    }[rule_id]


def composed_phrasings(rule_id: str, hand_written: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """``n`` distinct phrasings of ``rule`` composed from templates and synonyms (a verb, a noun phrase of its
    positions, where the words are and how to end: tens of thousands of combinations per rule), drawn with ``rng``;
    none is one of the rule's ``hand_written`` phrasings (the held-out test phrasings among them)."""
    objects = _objects(rule_id)
    out: set[str] = set()
    budget = 50 * n + 100  # a draw can repeat or be hand-written: stop once n are found or the budget is spent
    while len(out) < n and budget:
        budget -= 1
        text = f"{rng.choice(_VERBS)} {rng.choice(objects)}{rng.choice(_SOURCES)}{rng.choice(_ENDS)}"
        if text not in hand_written:
            out.add(text)
    return sorted(out, key=lambda t: rng.random())
