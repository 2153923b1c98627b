"""``promoe data summary``: what the task sets hold and why candidates were left out."""

from __future__ import annotations

from collections import Counter, defaultdict

from promoe.data.schema import QUIRK_RULES, Quirk, Task
from promoe.data.splits import TaskSplits


def _count_table(title: str, counts: dict[str, tuple[int, int]], limit: int | None = None) -> list[str]:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    shown = rows if limit is None else rows[:limit]
    width = max([len(k) for k, _ in shown] + [len(title)])
    lines = [f"  {title:<{width}}  tasks  instances"]
    lines += [f"  {k:<{width}}  {t:>5}  {n:>9}" for k, (t, n) in shown]
    if len(shown) < len(rows):
        rest = rows[len(shown):]
        lines.append(f"  {'(' + str(len(rest)) + ' more)':<{width}}  {sum(t for _, (t, _) in rest):>5}"
                     f"  {sum(n for _, (_, n) in rest):>9}")
    return lines


def _by(tasks: list[Task], key) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t in tasks:
        out[key(t)][0] += 1
        out[key(t)][1] += len(t.instances)
    return {k: (v[0], v[1]) for k, v in out.items()}


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only in the task they name."""
    for prefix in ("is SNI test task", "shares a source dataset", "family "):
        if reason.startswith(prefix):
            return {"is SNI test task": "is an SNI test task",
                    "shares a source dataset": "shares a source dataset with an SNI test task",
                    "family ": "BIG-bench family capped"}[prefix]
    if reason.endswith("(SNI excluded it)"):
        return "not on the SNI training list (SNI excluded it)"
    return reason


def summarize(splits: TaskSplits, *, categories: int = 15, show_excluded: bool = False) -> str:
    """A plain-text report of the splits: per split, per category, per source, and left-out tasks."""
    lines = []
    for name, tasks in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        n_inst = sum(len(t.instances) for t in tasks)
        n_cat = len({t.category for t in tasks})
        lines.append(f"{name}: {len(tasks)} tasks, {n_inst} instances, {n_cat} categories")
        if not tasks:
            continue
        lines += _count_table("collection", _by(tasks, lambda t: t.collection))
        origins = Counter(i.origin for t in tasks for i in t.instances)
        if len(origins) > 1:
            lines.append("  instances by origin: " + ", ".join(f"{k} {v}" for k, v in sorted(origins.items())))
        lines += _count_table("category", _by(tasks, lambda t: t.category), limit=categories)
        lines.append("")
    pool = splits.train + splits.val
    lines.append(f"meta-training pool (train + val): {len(pool)} tasks over "
                 f"{len({t.category for t in pool})} categories")
    lines += _test_notes(splits)
    lines += _drop_notes(splits)
    left = [d for d in splits.decisions if not d.kept]
    lines.append(f"left out: {len(left)} candidate tasks")
    by_reason = Counter((d.collection, _reason_kind(d.reason)) for d in left)
    for (coll, reason), n in sorted(by_reason.items()):
        lines.append(f"  {coll:<9} {n:>4}  {reason}")
    if show_excluded:
        lines += [f"    {d.task}: {d.reason}" for d in sorted(left, key=lambda d: d.task)]
    if splits.sources:
        lines.append("sources: " + "; ".join(f"{k} <- {v}" for k, v in splits.sources.items()))
    return "\n".join(lines)


def _test_notes(splits: TaskSplits) -> list[str]:
    """Test instances available before the caps, and the tasks scored on fewer than the others."""
    if not splits.test_available:
        return []
    lines = [f"test instances available: {sum(splits.test_available.values())} in "
             f"{len(splits.test_available)} tasks"]
    target = splits.test_per_task
    short = splits.short_test_tasks()
    if short:
        lines.append(f"  {len(short)} test tasks have fewer than {target} real instances "
                     f"({sum(v == 0 for v in short.values())} have none):")
        lines += [f"    {k}: {v}" for k, v in short.items()]
    return lines + [""]


def _drop_notes(splits: TaskSplits) -> list[str]:
    """Instances left out by caps, and every quirk of the official data with how it was read."""
    lines = [f"instances left out by the per-task caps: {n} {split}"
             for split, n in splits.capped.items() if n]
    by_kind: dict[str, list[Quirk]] = defaultdict(list)
    for q in splits.quirks:
        by_kind[q.kind].append(q)
    for kind, found in sorted(by_kind.items()):
        tasks = len({q.task for q in found})
        of = "test-data" if kind == "demonstration_input" else "official-data"  # the first: of any source
        lines.append(f"{of} quirk {kind}: {len(found)} in {tasks} tasks -> {QUIRK_RULES[kind]}")
        if kind != "empty_reasoning":
            lines += [f"    {q.task} {q.where}".rstrip() for q in found]
    return lines + ([""] if lines else [])
