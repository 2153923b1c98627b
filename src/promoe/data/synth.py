"""A synthetic task suite in the SNI schema for the mechanism check (DESIGN §3): word-list rules whose
correct output is fixed by the Definition alone, with held-out paraphrases of the Definitions.

The rules copy words anchored at the list's start or end (first word, last word, first two, last two,
first and last, last and first, first three, the whole list), so a small backbone learns each from a few
hundred examples and exact match is crisp. List transformations (sort, reverse, upper-case, count) were
tried first and a 135M backbone did not learn them in the mechanism check's minutes (its oracle expert
scored 26% exact match); nor did it learn rules that count positions (second, third, second-to-last word:
the oracle chose a neighbouring rule's expert).

Each rule (:data:`RULES`) has several hand-written phrasings of its Definition; a task is one
(rule, phrasing) pair. Training tasks use phrasings ``0..k-1`` and test tasks the others, so a test
Definition is unseen while its rule is known. Every task draws its inputs from the *same*
distribution (5-7 common words, half of the lists with one word repeated, and only lists on which all
rules give different outputs), so an input says nothing about its task's rule:
without the Definition a model is at chance (one rule in ``len(RULES)``). The rule id is kept out of
everything a model sees (Definition, Categories, task name) and recorded in ``_meta.rule`` only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promoe.data.synth_wordings import composed_phrasings
from promoe.errors import DataError
from promoe.io import atomic_write_bytes, write_json

SUITE_KIND = "promoe-synth-suite"
"""``manifest.json``'s ``kind``: marks a folder as a suite this module wrote (and may rewrite)."""

_WORDS = """
ant apple arm baby bag ball bank bean bear bed bell bird boat book bottle bread bridge brother brush
butter button cake camera candle car carpet cat chair cheese chicken church circle clock cloud coat
coffee corn cow cup curtain desk dinner dog door dragon dress drum duck eagle egg engine eye farm
feather finger fish flag flower foot forest fork fox frog garden gate girl glass glove goat gold
grass hammer hat heart hill horse house island jacket jelly kettle key king kitten knife ladder lake
lamp leaf lemon letter lion lock market milk mirror monkey moon mountain mouse nest needle night
nose ocean onion orange owl paper parrot pencil piano pig pillow planet plate pocket potato queen
rabbit rain ribbon ring river road rocket roof rose salt sand school sheep shirt shoe silver sister
snake snow sock spoon star stone sugar summer sun table teacher tiger tomato tongue tower town train
tree truck umbrella valley village violin wagon wall water whale window winter wolf yard zebra
"""
VOCAB = tuple(_WORDS.split())
"""Common lowercase English words (3-8 letters), the only words the suite uses."""


@dataclass(frozen=True)
class Rule:
    """One word-list transformation: its id (never shown to a model), function, Definitions and the
    explanation written under a positive example."""

    id: str
    apply: Callable[[list[str]], list[str]]
    phrasings: tuple[str, ...]
    explain: str
    """Format string with ``{out}``."""


RULES: tuple[Rule, ...] = (
    Rule("first_word", lambda w: w[:1], (
        "Output the first word of the list.",
        "Write only the word that the list begins with.",
        "Which word comes at the very start of the input? Answer with that word alone.",
        "Copy the opening word of the sequence and ignore all the others.",
        "Return the initial word and nothing else.",
        "Give the leftmost of the given words.",
    ), "The list starts with \"{out}\"."),
    Rule("last_word", lambda w: w[-1:], (
        "Output the last word of the list.",
        "Write only the word that the list ends with.",
        "Which word comes at the very end of the input? Answer with that word alone.",
        "Copy the closing word of the sequence and ignore all the others.",
        "Return the final word and nothing else.",
        "Give the rightmost of the given words.",
    ), "The list ends with \"{out}\"."),
    Rule("first_two", lambda w: w[:2], (
        "Output the first two words of the list.",
        "Write only the two words that the list begins with, in order.",
        "Which two words open the input? Answer with those words alone.",
        "Copy the opening pair of words of the sequence and drop the rest.",
        "Return the initial two words and nothing else.",
        "Give the two leftmost words, separated by a space.",
    ), "The list starts with \"{out}\"."),
    Rule("last_two", lambda w: w[-2:], (
        "Output the last two words of the list.",
        "Write only the two words that the list ends with, in order.",
        "Which two words close the input? Answer with those words alone, in their order.",
        "Copy the closing pair of words of the sequence and drop the rest.",
        "Return the final two words and nothing else.",
        "Give the two rightmost words, separated by a space.",
    ), "The list ends with \"{out}\"."),
    Rule("first_and_last", lambda w: [w[0], w[-1]], (
        "Output the first word and the last word of the list.",
        "Write the word the list begins with, then the word it ends with.",
        "Which words are at the very start and the very end of the input? Answer with those two words.",
        "Copy the opening word and the closing word of the sequence; skip everything in between.",
        "Return the initial word followed by the final word.",
        "Give the leftmost word and then the rightmost word.",
    ), "The first and the last word are \"{out}\"."),
    Rule("last_and_first", lambda w: [w[-1], w[0]], (
        "Output the last word of the list, then the first word.",
        "Write the word the list ends with, followed by the word it begins with.",
        "Which words are at the very end and the very start of the input? Answer with those two words, the end "
        "one first.",
        "Copy the closing word and then the opening word of the sequence.",
        "Return the final word followed by the initial word.",
        "Give the rightmost word and then the leftmost word.",
    ), "The last and the first word are \"{out}\"."),
    Rule("first_three", lambda w: w[:3], (
        "Output the first three words of the list.",
        "Write only the three words that the list begins with, in order.",
        "Which three words open the input? Answer with those words alone.",
        "Copy the opening three words of the sequence and drop the rest.",
        "Return the initial three words and nothing else.",
        "Give the three leftmost words, separated by spaces.",
    ), "The list starts with \"{out}\"."),
    Rule("copy_all", list, (
        "Repeat the list exactly as it is given.",
        "Write all the words of the input again, in the same order.",
        "Copy the whole sequence of words without changing anything.",
        "Output every word of the list, keeping their order.",
        "Return the input unchanged.",
        "Give back the complete list of words as written.",
    ), "The whole list is \"{out}\"."),
)
"""The rules, in a fixed order (a task's name holds the rule's index, never its id)."""

N_PHRASINGS = min(len(r.phrasings) for r in RULES)
SYNTH_PARAPHRASES = 24
"""Composed phrasings per training task, by default (``promoe data synth --paraphrases``, ``data.synth_paraphrases``)."""

def answer(rule: Rule, words: list[str]) -> str:
    """The rule's output for a word list, as the reference string."""
    return " ".join(rule.apply(list(words)))


def sample_words(rng: random.Random) -> list[str]:
    """One input list, drawn the same way for every rule (module docstring)."""
    while True:
        words = rng.sample(VOCAB, rng.randint(5, 7))
        if rng.random() < 0.5:
            i, j = rng.sample(range(len(words)), 2)
            words[j] = words[i]
        if len({answer(r, words) for r in RULES}) == len(RULES):
            return words


def _task_record(name: str, rule: Rule, p: int, split: str, n_instances: int, rng: random.Random,
                 seen: set[str], seed: int, paraphrases: list[str]) -> dict[str, Any]:
    inputs: list[list[str]] = []
    while len(inputs) < n_instances + 2:
        words = sample_words(rng)
        if " ".join(words) not in seen:  # an input appears once in the whole suite, in one task
            seen.add(" ".join(words))
            inputs.append(words)
    examples = [{"input": " ".join(w), "output": answer(rule, w), "explanation": rule.explain.format(
        out=answer(rule, w))} for w in inputs[:2]]
    return {
        "Definition": [rule.phrasings[p]],
        **({"Paraphrases": paraphrases} if paraphrases else {}),
        "Categories": ["Synthetic"],
        "Reasoning": [],
        "Domains": [],
        "Source": ["promoe data synth"],
        "Positive Examples": examples,
        "Negative Examples": [],
        "Instances": [{"id": f"{name}-{i}", "input": " ".join(w), "output": [answer(rule, w)]}
                      for i, w in enumerate(inputs[2:])],
        "_meta": {"task": name, "rule": rule.id, "phrasing": p, "split": split, "seed": seed},
    }


def build_suite(*, seed: int = 0, n_instances: int = 50, train_phrasings: int = 4,
                paraphrases: int = SYNTH_PARAPHRASES) -> dict[str, list[dict]]:
    """The suite's task records, ``{"train": [...], "test": [...]}``, deterministic for ``seed``. Each training
    task also carries ``paraphrases`` composed phrasings of its rule (:func:`composed_phrasings`, field
    ``Paraphrases``) for the router to learn from; a test task carries none."""
    if not 1 <= train_phrasings < N_PHRASINGS:
        raise DataError(f"train_phrasings={train_phrasings} leaves no training or no test phrasing",
                        field="--train-phrasings", fix=f"choose 1 to {N_PHRASINGS - 1}")
    if n_instances < 1:
        raise DataError(f"n_instances={n_instances}", field="--instances", fix="choose at least 1")
    if paraphrases < 0:
        raise DataError(f"paraphrases={paraphrases}", field="--paraphrases", fix="choose 0 or more")
    rng, seen = random.Random(seed), set()
    wordings = random.Random(f"{seed}-paraphrases")  # its own stream: the instances do not depend on it
    suite: dict[str, list[dict]] = {"train": [], "test": []}
    for r, rule in enumerate(RULES):
        for p in range(N_PHRASINGS):
            split = "train" if p < train_phrasings else "test"
            extra = (composed_phrasings(rule.id, rule.phrasings, paraphrases, wordings)
                     if split == "train" and paraphrases else [])
            suite[split].append(_task_record(f"synth_r{r}_p{p}", rule, p, split, n_instances, rng, seen, seed,
                                             extra))
    return suite


def _gzip_jsonl(records: list[dict]) -> bytes:
    buf = io.BytesIO()
    # no file name and a fixed mtime in the header: the same records give the same bytes
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
    return buf.getvalue()


def _check_out_dir(out: Path) -> None:
    """Write only into a new or empty folder, or over an earlier suite (a mistyped path loses nothing)."""
    if out.exists() and not out.is_dir():
        raise DataError("is a file, not a folder", file=str(out), fix="give a new or empty folder for --out")
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        kind = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != SUITE_KIND:
        raise DataError("folder is not empty and holds no synthetic suite (manifest.json), so it is not "
                        "overwritten", file=str(out),
                        fix="give a new or empty folder for --out (an earlier suite is replaced)")


def _readme(manifest: dict[str, Any]) -> str:
    c = manifest["counts"]
    lines = [
        "# Synthetic word-list suite (`promoe data synth`)", "",
        "Tasks in the SNI schema whose correct output is fixed by the Definition alone: the mechanism check "
        "of DESIGN §3. A task is one (rule, phrasing) pair; test tasks use phrasings of the same rules that "
        "no training task uses. Every task draws its inputs the same way (5-7 common words, half with one "
        "word repeated; only lists on which all rules give different outputs), so an input does not reveal "
        "the rule. Categories is `Synthetic` for all; the rule id is only in `_meta.rule`.", "",
        f"Seed {manifest['seed']}; {c['train_tasks']} training tasks ({c['train_instances']} instances), "
        f"{c['test_tasks']} test tasks ({c['test_instances']} instances); {manifest['n_instances']} "
        "instances and 2 positive examples per task.", "",
        "```bash", manifest["run"], "```", "",
    ]
    for rule in manifest["rules"]:
        lines += [f"## `{rule['id']}` (tasks `synth_r{rule['index']}_p*`)", "", "Training phrasings:", ""]
        lines += [f"{p}. {text}" for p, text in rule["train"]] + ["", "Held-out (test) phrasings:", ""]
        lines += [f"{p}. {text}" for p, text in rule["test"]] + [""]
    return "\n".join(lines)


def write_suite(out_dir: str | Path, *, seed: int = 0, n_instances: int = 50, train_phrasings: int = 4,
                paraphrases: int = SYNTH_PARAPHRASES) -> dict:
    """Write ``train.jsonl.gz``, ``test.jsonl.gz``, ``README.md`` and ``manifest.json`` into ``out_dir``
    and return the manifest. Same arguments, same bytes. Refuses a non-empty folder that is not an
    earlier suite."""
    out = Path(out_dir)
    _check_out_dir(out)
    suite = build_suite(seed=seed, n_instances=n_instances, train_phrasings=train_phrasings, paraphrases=paraphrases)
    blobs = {f"{split}.jsonl.gz": _gzip_jsonl(records) for split, records in suite.items()}
    manifest: dict[str, Any] = {
        "kind": SUITE_KIND, "seed": seed, "n_instances": n_instances, "train_phrasings": train_phrasings,
        "paraphrases": paraphrases,
        "counts": {f"{s}_{k}": n for s, records in suite.items() for k, n in (
            ("tasks", len(records)), ("instances", sum(len(r["Instances"]) for r in records)))},
        "rules": [{"index": i, "id": rule.id,
                   "train": [[p, t] for p, t in enumerate(rule.phrasings[:N_PHRASINGS]) if p < train_phrasings],
                   "test": [[p, t] for p, t in enumerate(rule.phrasings[:N_PHRASINGS]) if p >= train_phrasings]}
                  for i, rule in enumerate(RULES)],
        "run": run_command("DIR"),
    }
    blobs["README.md"] = _readme(manifest).encode("utf-8")
    manifest["files"] = {name: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                         for name, b in blobs.items()}
    for name, b in blobs.items():
        atomic_write_bytes(out / name, b)
    write_json(out / "manifest.json", manifest)
    return manifest


def run_command(out: str | Path) -> str:
    """How to run the experiment on a suite written to ``out`` (``DIR`` in the suite's own files, which
    are the same bytes wherever they are written)."""
    out = Path(out).as_posix()
    return (f"python run_experiment.py name=synth data.source=files data.train_files=[{out}/train.jsonl.gz] "
            f"data.test_files=[{out}/test.jsonl.gz] data.val_tasks=2")


__all__ = ["N_PHRASINGS", "RULES", "Rule", "SUITE_KIND", "SYNTH_PARAPHRASES", "VOCAB", "answer", "build_suite",
           "run_command",
           "sample_words", "write_suite"]
