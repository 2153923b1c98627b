"""The parser every command line uses (:class:`Parser`), and the arguments every command that reads a config
takes: ``--preset``, ``--data-root`` and ``key=value``."""

from __future__ import annotations

import argparse
from dataclasses import replace

from promoe.config import DATA_ENV, ExperimentConfig, load_config, presets


class Parser(argparse.ArgumentParser):
    """``argparse``, whose usage errors (a missing option, a count out of range) are one ``error:`` line with exit
    status 2, as every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


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
