"""``promoe data``: ``summary`` (tasks per split, category and source), ``synth`` (the synthetic suite of the
mechanism check) and ``clusters`` (the clusters of training tasks experts would specialise on)."""

from __future__ import annotations

import argparse
from collections import Counter

from promoe.cli.args import add_config_args, config_of
from promoe.data.synth import SYNTH_PARAPHRASES
from promoe.limits import count_arg, seed_arg


def cmd_data_summary(args: argparse.Namespace) -> int:
    from promoe.data.sources import load_tasks
    from promoe.data.splits import TaskSplits, load_splits
    from promoe.data.summary import summarize

    if args.tasks:
        tasks = [t for f in args.tasks for t in load_tasks(f)]
        splits = TaskSplits(train=[], val=[], test=tasks, sources={"tasks": ", ".join(args.tasks)})
    else:
        splits = load_splits(config_of(args).data)
    print(summarize(splits, show_excluded=args.show_excluded))
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from promoe.data.synth import run_command, write_suite

    m = write_suite(args.out, seed=args.seed, n_instances=args.instances, train_phrasings=args.train_phrasings,
                  paraphrases=args.paraphrases)
    c = m["counts"]
    print(f"wrote {c['train_tasks']} training tasks ({c['train_instances']:,} instances) and {c['test_tasks']} "
          f"test tasks ({c['test_instances']:,} instances), {len(m['rules'])} rules, seed {m['seed']}, to {args.out} "
          "(train.jsonl.gz, test.jsonl.gz, README.md, manifest.json)")
    print(f"run on it:\n  {run_command(args.out)}\n(presets cap the scored instances per test task, the "
          f"default at 2: add data.test_max_per_task=N to score more, null for all {m['n_instances']})")
    return 0


def cmd_data_clusters(args: argparse.Namespace) -> int:
    from promoe.data.clusters import cluster_splits
    from promoe.data.splits import load_splits
    from promoe.io import write_json
    from promoe.model.task_encoder import build_task_encoder

    cfg = config_of(args)
    splits = load_splits(cfg.data)
    tasks = splits.train + splits.val + splits.test
    vectors = build_task_encoder(cfg.model).encode([t.definition for t in tasks]).float().numpy()
    emb = {t.name: v for t, v in zip(tasks, vectors, strict=True)}
    n = args.n or cfg.model.n_experts
    clusters, held = cluster_splits(splits, emb, n, args.method, seed=cfg.seed, cluster_file=args.given,
                                    meta_key=args.key)
    category = {t.name: t.category for t in tasks}
    print(f"{n} clusters of {len(splits.train)} training tasks by {args.method}; validation and test tasks go "
          "to the nearest centroid" + (f" or their _meta.{args.key}" if args.method == "meta" else
                                       " or the kind of output of their examples" if args.method == "output" else ""))
    print(f"{'cluster':>7} {'train':>6} {'val':>4} {'test':>5}  most frequent training categories")
    for c in range(n):
        members = [t for t, k in clusters.assignment.items() if k == c]
        top = Counter(category[t] for t in members).most_common(3)
        print(f"{c:>7} {len(members):>6} {sum(k == c for k in held['val'].values()):>4} "
              f"{sum(k == c for k in held['test'].values()):>5}  " + ", ".join(f"{k} ({v})" for k, v in top))
    if args.out:
        write_json(args.out, {**clusters.to_json(), **held})
        print(f"wrote {args.out}")
    return 0


def add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="inspect task data").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("summary", help="tasks and instances per split, category and source")
    add_config_args(p)
    p.add_argument("--tasks", nargs="+", help="summarise these task files instead of the configured splits")
    p.add_argument("--show-excluded", action="store_true", help="list every left-out task and why")
    p.set_defaults(func=cmd_data_summary)
    p = data.add_parser("synth", help="write the synthetic word-list suite of the mechanism check (held-out "
                                      "phrasings of known rules) as SNI-schema task packages")
    p.add_argument("--out", required=True, help="new or empty folder (or an earlier suite, which is replaced)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the word lists (same seed, same bytes)")
    p.add_argument("--instances", type=count_arg(), default=50, help="instances per task")
    p.add_argument("--train-phrasings", type=count_arg(), default=4,
                   help="phrasings per rule that training tasks use; test tasks use the others")
    p.add_argument("--paraphrases", type=count_arg(lo=0), default=SYNTH_PARAPHRASES,
                   help="composed phrasings of its rule that each training task carries (field Paraphrases) for "
                        "the router to learn from; never a hand-written (held-out) phrasing")
    p.set_defaults(func=cmd_data_synth)
    p = data.add_parser("clusters", help="cluster the training tasks as experts would specialise on them")
    add_config_args(p)
    p.add_argument("--method", choices=("description", "category", "given", "meta", "output"), default="description",
                   help="k-means of description embeddings, whole categories, --given, each task's _meta --key, or "
                        "the kind of output (label, span, free text: --n 3)")
    p.add_argument("--key", default="rule", help="the _meta label that makes the clusters (with --method meta)")
    p.add_argument("--n", type=count_arg("size"), help="how many clusters (default: model.n_experts)")
    p.add_argument("--given", help="JSON file {task: cluster} (with --method given)")
    p.add_argument("--out", help="write the clusters (assignment, centroids, validation and test tasks) as JSON")
    p.set_defaults(func=cmd_data_clusters)
