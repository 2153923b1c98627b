"""Arguments every command that reads a config takes: ``--preset``, ``--data-root`` and ``key=value``."""

from __future__ import annotations

import argparse
from dataclasses import replace

from promoe.config import DATA_ENV, ExperimentConfig, load_config, presets


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help=f"config preset ({', '.join(presets())}) or a .yaml path")
    p.add_argument("--data-root", help=f"folder with the offline data packages (default: ${DATA_ENV})")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. data.val_tasks=10 (see `promoe config --keys`)")


def config_of(args: argparse.Namespace) -> ExperimentConfig:
    cfg = load_config(args.preset, args.overrides)
    if getattr(args, "data_root", None):
        cfg.data = replace(cfg.data, root=args.data_root)
    return cfg
