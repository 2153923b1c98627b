"""The ``promoe`` command line: ``data summary | synth | clusters`` (in :mod:`promoe.cli.data`), ``score``, ``baseline heuristic``, ``model``,
``eval``, ``predict``, ``export``, ``bench``, ``config``, ``run``, ``analyze | publish`` (in :mod:`promoe.cli.results`)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import yaml

from promoe.cli.args import Parser, add_config_args, config_of
from promoe.cli.data import add_data_commands
from promoe.cli.results import add_results_commands
from promoe.config import help_lines, to_dict
from promoe.errors import PromoeError
from promoe.limits import count_arg
from promoe.rundir import guard_output

BREAKDOWNS = ("per_task", "per_instance")
"""Score keys printed only with --full (the files hold them)."""
WRITE_ERRORS = {
    errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some of your disk quota",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "a folder stands where a file is to be written: choose another path",
    errno.EACCES: "choose a folder you may write to (--output-dir)", errno.EPERM: "choose a folder you may write "
    "to (--output-dir)", errno.EROFS: "the file system is read-only: choose another folder (--output-dir)",
    errno.ELOOP: "the path goes through a symbolic link that leads back to itself: choose another path",
    errno.ENAMETOOLONG: "choose a shorter path", errno.EIO: "the disk failed to write: check it, and free some space",
    errno.EFBIG: "a file is larger than the file system allows: choose another folder (--output-dir)",
}
"""Failures to write that are the machine's, not a bug: one message with the fix instead of a traceback (torch's
and safetensors' own reports of a full disk arrive as ``OSError`` too: :func:`promoe.readback.writing`)."""


def cmd_score(args: argparse.Namespace) -> int:
    from promoe.io import read_predictions, read_references, write_json
    from promoe.metrics import score

    if args.output:
        guard_output(args.output, flag="--output", folder=False, inputs=[args.predictions, args.references])
    preds, refs = read_predictions(args.predictions), read_references(args.references)
    if not preds:
        raise PromoeError(f"{args.predictions}: holds no predictions (an empty file): give the file of "
                          "{id, prediction} lines to score")
    ids = {r.id for r in refs}
    missing, unknown = sorted(ids - set(preds)), sorted(set(preds) - ids)
    if len(unknown) == len(preds):
        raise PromoeError(f"{args.predictions}: none of its {len(preds)} prediction ids is in {args.references} "
                          f"(e.g. {unknown[0]!r}): are these the predictions for these references?")
    result = score(preds, refs)
    result["ids"] = {"references": len(ids), "missing_predictions": len(missing), "unknown_predictions": len(unknown)}
    if missing or unknown:  # the official rule: a missing prediction scores as an empty answer; said, with counts
        print(f"note: {len(missing)} of {len(ids)} references have no prediction and score as empty answers"
              + (f" (e.g. {missing[0]!r})" if missing else "")
              + f"; {len(unknown)} predictions have ids not in the references and are ignored"
              + (f" (e.g. {unknown[0]!r})" if unknown else ""), file=sys.stderr)
    if args.output:
        write_json(args.output, result)
    shown = result if args.full else {k: v for k, v in result.items() if k not in BREAKDOWNS}
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


def cmd_baseline_heuristic(args: argparse.Namespace) -> int:
    from promoe.data.splits import load_splits
    from promoe.io import write_json
    from promoe.stages.heuristics import run_heuristics

    guard_output(args.output_dir, flag="--output-dir", folder=True)
    splits = load_splits(config_of(args).data)
    results = run_heuristics(splits.test, args.output_dir)
    summary = {name: {k: r[k] for k in ("rougeL", "exact_match", "rougeL_task_mean",
                                        "exact_match_task_mean", "n", "n_tasks")}
               for name, r in results.items()}
    write_json(Path(args.output_dir) / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_model_summary(args: argparse.Namespace) -> int:
    from promoe.model.build import param_counts
    from promoe.model.moe_model import MODEL_KINDS
    from promoe.setup import Setup

    cfg = config_of(args)
    setup = Setup.load(cfg)
    bb = setup.backbone
    base = sum(p.numel() for p in bb.model.parameters())
    m = cfg.model
    print(f"backbone {m.backbone} ({bb.family}): {base:,} parameters; MoE positions: "
          f"{m.moe_layers if m.moe_layers is not None else f'top {m.n_moe_layers}'}, "
          f"{m.n_experts} experts, top-{m.top_k}, promoe mode {m.proactive_mode}")
    cols = ("total", "activated", "trainable", "moe_ffn_total", "moe_ffn_activated", "hypernetwork_per_task")
    print(f"{'model':<8}" + "".join(f"{c:>22}" for c in cols))
    for kind in MODEL_KINDS:
        counts = param_counts(setup.model(kind))
        print(f"{kind:<8}" + "".join(f"{counts[c]:>22,}" for c in cols))
    return 0


def cmd_model_check(args: argparse.Namespace) -> int:
    from promoe.model_check import check_models

    rows = check_models(config_of(args), steps=args.steps, batch_size=args.batch_size, n_test=args.n_test)
    print(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from promoe.inference import eval_task_file

    result = eval_task_file(args.run, args.model, args.tasks, args.output_dir)
    print(json.dumps({k: v for k, v in result.items() if k not in BREAKDOWNS}, indent=2, ensure_ascii=False))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from promoe.inference import predict_one

    out = predict_one(args.run, args.model, args.definition, args.input)
    print(f"answer: {out['answer']}")
    for row in out["routing"]:
        experts = ", ".join(f"{e} ({100 * w:.0f}%)" for e, w in row["experts"].items())
        print(f"  layer {row['layer']}: experts {experts}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from promoe.export import export_task_model

    m = export_task_model(args.run, args.model, args.definition, args.out, overwrite=args.overwrite)
    p = m["params"]
    print(f"exported {m['architecture']} to {args.out}")
    print(f"  parameters: {p['exported_total']:,} exported vs {p['moe_total']:,} in the full MoE model "
          f"({p['ratio']:.1%}; {p['moe_activated']:,} activated per token)")
    for row in m["layers"]:
        chosen = zip(row["experts"], row["weights"], strict=True)
        experts = ", ".join(f"{e} ({100 * w:.0f}%)" for e, w in chosen)
        print(f"  layer {row['layer']}: experts {experts}")
    if m["padding"]["used"]:
        print(f"  zero padding: {m['padding']['wasted_params']:,} parameters (see the warning above)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from promoe.benchmarks.suite import run_suite, write

    res = run_suite(quick=args.quick, run_dir=args.run, preset=args.preset)
    md = write(res, args.json)
    print(md.read_text(encoding="utf-8"), end="")
    print(f"results: {args.json} and {md}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.keys:
        print("\n".join(help_lines()))
    else:
        print(yaml.safe_dump(to_dict(config_of(args)), sort_keys=False), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from promoe.experiment import run, run_seeds

    cfg = config_of(args)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    for seed in args.seeds or []:  # --seeds bypasses the config's own check of `seed`
        replace(cfg, seed=seed).validate()
    print(run_seeds(cfg, args.seeds, overwrite=args.overwrite) if args.seeds and len(args.seeds) > 1 else
          run(replace(cfg, seed=args.seeds[0]) if args.seeds else cfg, overwrite=args.overwrite))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="promoe", description="PRo-MoE: proactive routing for MoE models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_commands(sub)

    p = sub.add_parser("score", help="score predictions against references (official SNI formats)")
    p.add_argument("--predictions", required=True, help="JSON Lines of {id, prediction}")
    p.add_argument("--references", required=True,
                   help="JSON Lines of {id, references, task_id, task_category, track}")
    p.add_argument("--output", help="write the full result (with per_task and per_instance) as JSON here")
    p.add_argument("--full", action="store_true", help="also print per_task and per_instance")
    p.set_defaults(func=cmd_score)

    base = sub.add_parser("baseline", help="model-free baselines").add_subparsers(dest="baseline", required=True)
    p = base.add_parser("heuristic", help="copy-input and copy-demonstration baselines on the test tasks")
    p.add_argument("--output-dir", required=True, help="folder for predictions, references and scores")
    add_config_args(p)
    p.set_defaults(func=cmd_baseline_heuristic)

    model = sub.add_parser("model", help="inspect models").add_subparsers(dest="model_command", required=True)
    p = model.add_parser("summary", help="total / activated / trainable parameters of dense, moe and promoe")
    add_config_args(p)
    p.set_defaults(func=cmd_model_summary)
    p = model.add_parser("check", help="build every model, check it reproduces the backbone, train a few "
                                       "steps on training tasks and generate for test tasks")
    p.add_argument("--steps", type=count_arg(), default=3, help="training steps per model")
    p.add_argument("--batch-size", type=count_arg("size"), default=4, help="training examples per step")
    p.add_argument("--n-test", type=count_arg(), default=4, help="test instances to generate answers for")
    add_config_args(p)
    p.set_defaults(func=cmd_model_check)

    p = sub.add_parser("eval", help="score a trained model zero-shot on a task file (SNI schema)")
    p.add_argument("--run", required=True, help="run folder written by run_experiment.py")
    p.add_argument("--model", required=True, help="dense, moe, promoe, or backbone (untrained)")
    p.add_argument("--tasks", required=True, help="task .json, .jsonl(.gz) package or folder of task files")
    p.add_argument("--output-dir", help="where predictions and scores go (default: RUN/user_eval/<file>)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="answer one instance of a new task with a trained model")
    p.add_argument("--run", required=True, help="run folder written by run_experiment.py")
    p.add_argument("--model", required=True, help="dense, moe, promoe, or backbone (untrained)")
    p.add_argument("--definition", required=True, help="the task's instruction (its Definition)")
    p.add_argument("--input", required=True, help="the instance input")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a task's sub-network of a task-routed model as a plain Hugging "
                                      "Face checkpoint (needs model.proactive_mode: task, or dense)")
    p.add_argument("--run", required=True, help="run folder written by run_experiment.py")
    p.add_argument("--model", required=True,
                   help="promoe (trained with proactive_mode task), dense, or backbone")
    p.add_argument("--definition", required=True, help="the task's instruction (its Definition)")
    p.add_argument("--out", required=True, help="new or empty folder for the checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="performance benchmarks: MoE layer, generation throughput, default "
                                     "experiment time and memory (JSON + Markdown)")
    p.add_argument("--quick", action="store_true", help="fewer points and repeats (a few minutes)")
    p.add_argument("--json", required=True, type=Path, help="write the results here (and a .md table beside it)")
    p.add_argument("--run", type=Path, default=Path("results/default"),
                   help="finished default run whose times.json gives stage times and peak memory")
    p.add_argument("--preset", default="default", help="config preset of the generation benchmark's models")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("config", help="print the resolved config, or every key with its help")
    p.add_argument("--keys", action="store_true", help="list every config key with its default and help")
    add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("run", help="run the experiment (same as python run_experiment.py)")
    p.add_argument("--output-dir", help="parent folder of the run folder (default: config output_dir)")
    p.add_argument("--seeds", type=int, nargs="+", help="run once per seed (into RUN/seeds/<seed>/) and "
                                                        "aggregate the overall scores into mean ± CI")
    p.add_argument("--overwrite", action="store_true",
                   help="delete what the run folder holds and run again from the start (default: resume an "
                        "interrupted run, leave a finished one as it is)")
    add_config_args(p)
    p.set_defaults(func=cmd_run)

    add_results_commands(sub)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``key=value`` overrides may stand anywhere after the command, on either side of its
    options (``run --output-dir D a=1 --preset p b=2``), not only in one run."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if stray := [a for a in rest if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        again = ("run the same command again to resume: finished stages, trained models and scored batches are "
                 "kept" if args.command == "run" else "every file is written whole or not at all, so nothing is "
                                                      "half-written; run the command again")
        print(f"\ninterrupted (Ctrl-C): {again}", file=sys.stderr)
        return 130
    except PromoeError as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)  # one line, whatever a library said
        return 2
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        print(f"error: cannot write {e.filename or 'a file'}: {e.strerror} — {WRITE_ERRORS[e.errno]}; every file "
              "is written whole or not at all, so finished results are intact and the same command resumes",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
