"""The SNI task-selection protocol as pure functions over task lists (no files read here).

Which training candidates are kept (:func:`select_training_tasks`, each with a :class:`Decision`), which
training families are held out for validation (:func:`carve_validation`), how test tasks get their
scored instances (:func:`build_test_tasks`, without the ones a demonstration shows: :func:`drop_demonstrated`);
:mod:`promoe.data.splits` applies them to a data source.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, replace

from promoe.data.prompts import shown_input
from promoe.data.schema import QuirkLog, Task
from promoe.data.sources import positive_example_instances


@dataclass(frozen=True)
class Decision:
    """What happened to one candidate task."""

    task: str
    collection: str
    kept: bool
    reason: str
    split: str = "train"



def stable_hash(*parts: object) -> int:
    """A hash that is the same on every machine and Python run (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def cap_instances(task: Task, n: int) -> Task:
    """Keep the first ``n`` instances (upstream puts the evaluation instances first)."""
    return task if len(task.instances) <= n else replace(task, instances=task.instances[:n])


def select_training_tasks(
    candidates: list[Task], *, train_list: set[str], test_list: set[str], max_per_family: int, seed: int
) -> tuple[list[Task], list[Decision]]:
    """Apply the SNI training protocol to candidate tasks; return the kept ones and every decision."""
    decisions: list[Decision] = []
    kept: list[Task] = []
    by_family: dict[str, list[Task]] = defaultdict(list)
    for t in candidates:
        sni_name = t.meta.get("sni_task") or (t.name if t.collection == "sni" else None)
        overlap = t.meta.get("sni_test_dataset_overlap")
        if sni_name and sni_name in test_list:
            reason = f"is SNI test task {sni_name}"
        elif sni_name and sni_name not in train_list:
            reason = f"{sni_name} is not on the SNI training list (SNI excluded it)"
        elif overlap:
            reason = f"shares a source dataset with SNI test task(s) {', '.join(overlap)}"
        elif not t.instances:
            reason = "has no instances"
        else:
            by_family[t.family].append(t)
            continue
        decisions.append(Decision(t.name, t.collection, False, reason))
    for family, members in by_family.items():
        members = sorted(members, key=lambda t: stable_hash(seed, t.name))
        for i, t in enumerate(members):
            if i < max_per_family:
                kept.append(t)
                decisions.append(Decision(t.name, t.collection, True, "training task"))
            else:
                decisions.append(Decision(t.name, t.collection, False,
                                          f"family {family} capped at {max_per_family} subtasks"))
    kept.sort(key=lambda t: t.name)
    return kept, decisions


def carve_validation(tasks: list[Task], n_tasks: int, seed: int) -> tuple[list[Task], list[Task]]:
    """Hold out whole families (about ``n_tasks`` tasks) of the training tasks for validation.

    Families are taken round-robin over the categories (in a seeded order), so validation spreads over
    the training categories; a category first gives away all but one of its families, and only when
    that is not enough does it give its last one (training always keeps at least one family). A task with a
    labelled group of its own (``_meta.rule``: phrasings of one rule, as in the synthetic suite and task files
    written like it) spreads by that label instead of its category, so every rule keeps training phrasings.
    """
    families: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        families[t.family].append(t)
    by_category: dict[str, list[str]] = defaultdict(list)
    for f in sorted(families, key=lambda f: stable_hash("val", seed, f)):
        first = families[f][0]
        by_category[f"rule:{first.meta['rule']}" if first.meta.get("rule") is not None else first.category].append(f)
    categories = sorted(by_category, key=lambda c: stable_hash("val-category", seed, c))
    val_families: set[str] = set()
    n = 0
    for keep in (1, 0):  # first leave every category one training family, then only the whole pool one
        depth = 0
        while n < n_tasks and any(depth < len(by_category[c]) - keep for c in categories):
            for c in categories:
                fams = by_category[c]
                if (n < n_tasks and depth < len(fams) - keep and fams[depth] not in val_families
                        and len(val_families) < len(families) - 1):
                    val_families.add(fams[depth])
                    n += len(families[fams[depth]])
            depth += 1
    train = [t for t in tasks if t.family not in val_families]
    val = [t for t in tasks if t.family in val_families]
    return train, val


def build_test_tasks(
    meta_tasks: list[Task], complete_tasks: list[Task], *, max_instances: int | None, positive_examples: bool,
    max_total: int | None = None,
) -> list[Task]:
    """The offline test set: every test task's first instances (+ positive examples, tagged).

    A complete test task replaces the export's first instances by its own (real ids, all references)
    under the same cap as every other task, so that no task dominates (``max_instances=None``: no cap).
    """
    complete = {t.name: t for t in complete_tasks}
    out = []
    for t in meta_tasks:
        full = complete.get(t.name)
        instances = (full or t).instances[:max_instances]
        if positive_examples:
            instances = instances + positive_example_instances(t)
        out.append(replace(t, instances=instances[:max_total],
                           reasoning=full.reasoning if full else t.reasoning,
                           domains=full.domains if full else t.domains,
                           source=full.source if full else t.source))
    return out


def drop_demonstrated(tasks: list[Task], quirks: QuirkLog) -> list[Task]:
    """The test tasks without their real instances whose input is one of the task's positive examples' inputs as a
    prompt shows it (:func:`~promoe.data.prompts.shown_input`: stripped, whitespace runs as one space): a
    demonstration would show its answer, so it is never scored. Each is recorded in ``quirks``
    (``demonstration_input``; upstream, task1531's Instances[63] is its 4th positive example with a trailing
    space). A positive example scored as itself (``origin="positive_example"``) stays: it is never its own
    demonstration (:func:`promoe.data.prompts.demonstrations`)."""
    out = []
    for t in tasks:
        shown = {shown_input(ex.input): j for j, ex in reversed(list(enumerate(t.positive_examples)))}
        kept = []
        for k, inst in enumerate(t.instances):
            j = shown.get(shown_input(inst.input)) if inst.origin == "instance" else None
            if j is None:
                kept.append(inst)
            else:
                quirks.add(t.name, "demonstration_input", f"Instances[{k}] ({inst.id}) = Positive Examples[{j}]")
        out.append(t if len(kept) == len(t.instances) else replace(t, instances=tuple(kept)))
    return out
