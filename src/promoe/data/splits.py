"""Train / validation / test task sets, following the SNI protocol.

* test: the official test list; offline, all 119 test tasks: the 103 complete ones with the official
  first 100 evaluation instances, the 16 others with what the test-task export has (2–6 instances);
  every task capped at ``test_max_instances_per_task`` / ``test_max_per_task`` (``headline_max_per_task`` when
  the headline rows score more; the other rows score the first ``test_max_per_task``);
* train: the SNI training tasks (the extra collections NIv1 and BIG-bench when chosen), keeping only
  tasks on the SNI training list where a task has an SNI name, dropping BIG-bench tasks that share a
  source dataset with an SNI test task, and capping BIG-bench families with hundreds of subtasks;
* validation: held-out *training* tasks (whole families) spread over the training categories,
  chosen deterministically by a seeded hash; test tasks are never used for selection;
* ``source=files``: a researcher's own training and test task files, validation from the training ones.

The selection rules are in :mod:`promoe.data.protocol`. Every task considered gets a
:class:`~promoe.data.protocol.Decision` (kept or why not) and every accepted quirk of the
official data a :class:`~promoe.data.schema.Quirk`; ``promoe data summary`` and ``splits.json`` show both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from promoe.config import DataConfig
from promoe.data.location import data_root
from promoe.data.protocol import (
    Decision,
    build_test_tasks,
    cap_instances,
    carve_validation,
    drop_demonstrated,
    select_training_tasks,
)
from promoe.data.schema import Quirk, QuirkLog, Task, task_from_record
from promoe.data.sources import (
    check_unique_ids,
    load_tasks,
    read_categories,
    read_hf_sni,
    read_repo_layout,
    read_split_list,
    read_task_package,
    read_test_meta,
)
from promoe.errors import DataError

log = logging.getLogger(__name__)

OFFICIAL_TEST_INSTANCES = 100
"""Upstream puts a test task's official evaluation instances first; the official reference file takes 100."""

NOT_IN_PACKAGE = "on the SNI training list but not in the offline package (sni/manifest.json says why)"

COLLECTION_FILES = {"sni": "sni/train.jsonl.gz", "niv1": "bigbench/niv1.jsonl.gz",
                    "bigbench": "bigbench/bigbench.jsonl.gz"}
"""Offline training packages, relative to the data root."""


@dataclass
class TaskSplits:
    """The task sets of an experiment and the record of how they were chosen."""

    train: list[Task]
    val: list[Task]
    test: list[Task]
    decisions: list[Decision] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    """Which files each part was read from (recorded in every run)."""
    quirks: list[Quirk] = field(default_factory=list)
    """Quirks of the official data met while reading it, each read as the official code does."""
    capped: dict[str, int] = field(default_factory=dict)
    """Instances left out by the per-task caps, per split (``train`` includes validation)."""
    test_available: dict[str, int] = field(default_factory=dict)
    """Real (non-demonstration) test instances each test task has before the caps."""
    test_per_task: int | None = None
    """How many real instances the configuration scores per test task (tasks with fewer are named)."""

    def short_test_tasks(self) -> dict[str, int]:
        """Test tasks scored on fewer real instances than ``test_per_task``, with how many they have
        (fewest first)."""
        n = {t.name: sum(i.origin == "instance" for i in t.instances) for t in self.test}
        short = {k: v for k, v in n.items() if self.test_per_task is not None and v < self.test_per_task}
        return dict(sorted(short.items(), key=lambda kv: (kv[1], kv[0])))


def load_splits(cfg: DataConfig) -> TaskSplits:
    """Build train / validation / test tasks for the configured source."""
    splits = {"offline": _offline, "sni_repo": _from_repo, "hf": _from_hf, "files": _from_files,
              "synth": _from_synth}[cfg.source](cfg)
    log.info("tasks: %d train, %d validation, %d test (%d candidates left out)", len(splits.train),
             len(splits.val), len(splits.test), sum(not d.kept for d in splits.decisions))
    return splits


def _finish(pool: list[Task], test_tasks: list[Task], decisions: list[Decision], cfg: DataConfig,
            sources: dict[str, str], quirks: QuirkLog | None = None, val_names: set[str] | None = None) -> TaskSplits:
    """Cap, carve validation (``val_names``, else :func:`carve_validation`), build the test set without the
    instances a demonstration shows (:func:`drop_demonstrated`, recorded in ``quirks``); ``test_tasks`` hold every
    instance they have."""
    if both := sorted({t.name for t in pool} & {t.name for t in test_tasks}):  # names compared cleaned (promoe.text)
        raise DataError(f"{len(both)} task(s) are both training and test tasks, e.g. {both[0]}",
                        file="; ".join(sources.values()), fix="a test task must be unseen: remove it from the training data")
    if cfg.max_test_tasks is not None and cfg.max_test_tasks < len(test_tasks):
        stride = len(test_tasks) / cfg.max_test_tasks
        test_tasks = [test_tasks[int(i * stride)] for i in range(cfg.max_test_tasks)]
    check_unique_ids(test_tasks, sources.get("test", "the test tasks"))  # scored together
    quirks = quirks if quirks is not None else QuirkLog()
    test_tasks = drop_demonstrated(test_tasks, quirks)  # whatever the source: before the caps and the counts
    available = {t.name: len(t.instances) for t in test_tasks}
    test = build_test_tasks(test_tasks, [], max_instances=cfg.test_max_instances_per_task,
                            positive_examples=cfg.test_positive_examples, max_total=cfg.scored_per_task)
    n_pool = sum(len(t.instances) for t in pool)
    pool = [cap_instances(t, cfg.max_train_instances_per_task) for t in pool]
    if not pool:
        raise DataError("no training task is left (every candidate was left out or none was given)",
                        field="data.train_collections / data.train_files",
                        fix="choose training collections or files that hold tasks (`promoe data summary "
                            "--show-excluded` says why each was left out)")
    if cfg.val_tasks >= len(pool):
        raise DataError(f"data.val_tasks={cfg.val_tasks} leaves no training task ({len(pool)} in the pool)",
                        field="data.val_tasks", fix="hold out fewer validation tasks or add training tasks")
    if val_names is None:
        train, val = carve_validation(pool, cfg.val_tasks, cfg.split_seed)
    else:
        train, val = [t for t in pool if t.name not in val_names], [t for t in pool if t.name in val_names]
    val_names = {t.name for t in val}
    decisions = [replace(d, split="val") if d.kept and d.task in val_names else d for d in decisions]
    decisions += [Decision(t.name, t.collection, True, "test task", split="test") for t in test]
    capped = {"train": n_pool - sum(len(t.instances) for t in pool),
              "test": sum(available.values()) - sum(i.origin == "instance" for t in test for i in t.instances)}
    per_task = min(n for n in (cfg.test_max_instances_per_task, cfg.scored_per_task) if n is not None)
    return TaskSplits(train, val, test, decisions, sources, quirks=_used_quirks(quirks, train + val + test),
                      capped=capped, test_available=available, test_per_task=per_task)


def _used_quirks(quirks: QuirkLog | None, tasks: list[Task]) -> list[Quirk]:
    """The quirks of the tasks and instances the run uses (not of left-out tasks or capped instances)."""
    if quirks is None:
        return []
    kept = {t.name: {i.id for i in t.instances} for t in tasks}
    return [q for q in quirks.quirks if q.task in kept and (not q.instance or q.instance in kept[q.task])]


def _offline(cfg: DataConfig) -> TaskSplits:
    root = data_root(cfg)
    quirks = QuirkLog()
    train_list = set(read_split_list(root / "sni/splits/default/train_tasks.txt"))
    test_list = set(read_split_list(root / "sni/splits/default/test_tasks.txt"))
    meta = read_test_meta(root / "sni/test_task_meta.jsonl.gz")
    complete = read_task_package(root / "sni/test.jsonl.gz", collection="sni", quirks=quirks)
    missing = test_list - {t.name for t in meta}
    if missing:
        raise DataError(f"{len(missing)} test tasks of the split list are missing, e.g. {min(missing)}",
                        file=str(root / "sni/test_task_meta.jsonl.gz"), fix="use the complete package")
    # every test task with all it has: a complete task's own instances (real ids, every reference)
    # replace the export's first ones
    test = build_test_tasks(meta, complete, max_instances=None, positive_examples=False)
    sources = {"test": "sni/test_task_meta.jsonl.gz + sni/test.jsonl.gz"}
    candidates = []
    for name in cfg.train_collections:
        if name not in COLLECTION_FILES:
            raise DataError(f"unknown collection {name!r}", field="data.train_collections",
                            fix=f"choose from {sorted(COLLECTION_FILES)}")
        candidates += read_task_package(root / COLLECTION_FILES[name], collection=name,
                                        quirks=quirks if name == "sni" else None)
        sources[f"train:{name}"] = COLLECTION_FILES[name]
    pool, decisions = select_training_tasks(candidates, train_list=train_list, test_list=test_list,
                                            max_per_family=cfg.max_subtasks_per_family, seed=cfg.split_seed)
    if "sni" in cfg.train_collections:  # the official list's tasks the package lacks
        have = {t.meta.get("sni_task") or t.name for t in candidates}
        decisions += [Decision(n, "sni", False, NOT_IN_PACKAGE) for n in sorted(train_list - have)]
    return _finish(pool, test, decisions, cfg, sources, quirks)


def _from_repo(cfg: DataConfig) -> TaskSplits:
    if not cfg.sni_repo:
        raise DataError("data.source is sni_repo but no repository is given", field="data.sni_repo",
                        fix="set data.sni_repo=<clone of allenai/natural-instructions>")
    quirks = QuirkLog()
    train_tasks, lacking = read_repo_layout(cfg.sni_repo, split="train", quirks=quirks)
    test_tasks, missing = read_repo_layout(cfg.sni_repo, split="test", quirks=quirks)
    if missing:
        raise DataError(f"{len(missing)} test task files are missing, e.g. {missing[0]}",
                        file=str(Path(cfg.sni_repo) / "tasks"), fix="use a complete clone")
    # upstream's first 100 instances of a test task are the official evaluation instances
    test_tasks = [cap_instances(t, OFFICIAL_TEST_INSTANCES) for t in test_tasks]
    train_list = {t.name for t in train_tasks}
    pool, decisions = select_training_tasks(train_tasks, train_list=train_list, test_list=set(),
                                            max_per_family=cfg.max_subtasks_per_family, seed=cfg.split_seed)
    decisions += [Decision(n, "sni", False, "on the SNI training list but has no file under tasks/")
                  for n in lacking]
    return _finish(pool, test_tasks, decisions, cfg, {"repo": str(cfg.sni_repo)}, quirks)


def _from_hf(cfg: DataConfig) -> TaskSplits:
    categories = None
    root = cfg.root or None
    if root and (Path(root) / "sni/task_categories.tsv").exists():
        categories = read_categories(Path(root) / "sni/task_categories.tsv")
    quirks = QuirkLog()
    train_tasks = read_hf_sni(cfg.hf_dataset, split="train", categories=categories, quirks=quirks)
    test_tasks = [cap_instances(t, OFFICIAL_TEST_INSTANCES)
                  for t in read_hf_sni(cfg.hf_dataset, split="test", categories=categories, quirks=quirks)]
    pool, decisions = select_training_tasks(train_tasks, train_list={t.name for t in train_tasks},
                                            test_list=set(), max_per_family=cfg.max_subtasks_per_family,
                                            seed=cfg.split_seed)
    return _finish(pool, test_tasks, decisions, cfg, {"hf": cfg.hf_dataset}, quirks)


def _from_files(cfg: DataConfig) -> TaskSplits:
    """A researcher's own collection: every task of ``train_files`` trains (validation carved from them),
    every task of ``test_files`` is scored. Files are read strictly (no official-data quirks)."""
    for key in ("train_files", "test_files"):
        if not getattr(cfg, key):
            raise DataError(f"data.source is files but data.{key} is empty", field=f"data.{key}",
                            fix=f"data.{key}=[my_tasks.jsonl, ...] (task .json files, .jsonl(.gz) packages "
                                "or folders of task files)")
    train_tasks = _read_files(cfg.train_files)
    test_tasks = _read_files(cfg.test_files)
    both = sorted({t.name for t in train_tasks} & {t.name for t in test_tasks})
    if both:
        raise DataError(f"{len(both)} task(s) are both training and test tasks, e.g. {both[0]}",
                        field="data.train_files / data.test_files",
                        fix="a test task must be unseen: remove it from the training files")
    names = {t.name for t in train_tasks}
    pool, decisions = select_training_tasks(train_tasks, train_list=names, test_list=set(),
                                            max_per_family=cfg.max_subtasks_per_family, seed=cfg.split_seed)
    sources = {"train": ", ".join(cfg.train_files), "test": ", ".join(cfg.test_files)}
    return _finish(pool, test_tasks, decisions, cfg, sources)


def _from_synth(cfg: DataConfig) -> TaskSplits:
    """The synthetic suite (:mod:`promoe.data.synth`), the same tasks as ``promoe data synth --seed
    <split_seed>`` writes, read as that suite's files are. Validation mirrors the test split: the last
    ``ceil(val_tasks / rules)`` training phrasings of every rule (unseen Definitions of known rules)."""
    from promoe.data.synth import RULES, build_suite

    suite = build_suite(seed=cfg.split_seed, n_instances=cfg.synth_instances, paraphrases=cfg.synth_paraphrases)
    per_rule = -(-cfg.val_tasks // len(RULES))
    phrasings = max(r["_meta"]["phrasing"] for r in suite["train"]) + 1
    if per_rule >= phrasings:
        raise DataError(f"data.val_tasks={cfg.val_tasks} holds out {per_rule} of the {phrasings} training "
                        "phrasings of every rule, leaving none to train on", field="data.val_tasks",
                        fix=f"hold out at most {(phrasings - 1) * len(RULES)} validation tasks")
    val_names = {r["_meta"]["task"] for r in suite["train"] if r["_meta"]["phrasing"] >= phrasings - per_rule}
    tasks = {split: [task_from_record(r, file=f"synth:{split}", collection="user") for r in records]
             for split, records in suite.items()}
    pool, decisions = select_training_tasks(tasks["train"], train_list={t.name for t in tasks["train"]},
                                            test_list=set(), max_per_family=cfg.max_subtasks_per_family,
                                            seed=cfg.split_seed)
    return _finish(pool, tasks["test"], decisions, cfg, {"synth": f"promoe data synth --seed {cfg.split_seed} "
                                                                  f"--instances {cfg.synth_instances} --paraphrases "
                                                                  f"{cfg.synth_paraphrases}"},
                   val_names=val_names)


def _read_files(paths: list[str]) -> list[Task]:
    """Every task of the given files and folders, read strictly; a task in two files is an error."""
    tasks: dict[str, Task] = {}
    for path in paths:
        for t in load_tasks(path):
            if t.name in tasks:
                raise DataError(f"task {t.name!r} is also in {tasks[t.name].path}", file=t.path,
                                task=t.name, fix="keep each task in one file")
            tasks[t.name] = t
    return list(tasks.values())
