"""Typed experiment configuration: dataclasses + YAML presets + ``a.b=c`` overrides.

Defaults live in the dataclasses below; a preset (``promoe/configs/<name>.yaml``, shipped with the
package, or any .yaml file) holds only what differs from them, or, with a top-level
``inherit: <preset name or .yaml path>``, only what differs from that parent preset (chains allowed).
Command-line ``key=value`` overrides are applied last, then every section's ``validate()`` checks the
values (ranges, cross-checks, row names against :mod:`promoe.registry`). Unknown keys, wrong types and
bad values are errors that name the file (or override), the key and the fix. Configs are data: values
are parsed with :func:`promoe.limits.load_yaml` (safe tags only, within size, depth and alias-expansion limits)
and nothing is imported or evaluated from them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from promoe.config.experts import OUTPUT_CLUSTERS, ExpertsConfig
from promoe.config.fields import build, check_fields, merge, overrides_tree, require, setting, to_dict
from promoe.config.fields import help_lines as fields_help
from promoe.config.sections import (
    DATA_ENV,
    CompareConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    PromptConfig,
    TrainConfig,
)
from promoe.errors import ConfigError
from promoe.limits import load_yaml, read_text
from promoe.registry import arch, config_value, selected
from promoe.text import visible

__all__ = ["CONFIG_DIR", "DATA_ENV", "CompareConfig", "DataConfig", "EvalConfig", "ExperimentConfig", "ExpertsConfig", "ModelConfig",
           "PromptConfig", "TrainConfig", "help_lines", "load_config", "preset_path", "presets", "to_dict"]

CONFIG_DIR: Traversable = resources.files("promoe") / "configs"
"""The presets shipped with the package (package data, so an installed package has them too)."""

INHERIT = "inherit"
"""Top-level preset key naming the parent preset (a name in :data:`CONFIG_DIR` or a .yaml path)."""


@dataclass
class ExperimentConfig:
    """The whole experiment."""

    name: str = setting("default", "Run name; results go to <output_dir>/<name>.")
    output_dir: str = setting("results", "Folder that receives one sub-folder per run.")
    seed: int = setting(0, "Global seed.", lo=0, lt=2**32)  # numpy's generator takes no other
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)

    def validate(self) -> None:
        """Check every section, then what involves several; a :class:`ConfigError` names the key and the fix."""
        check_fields(self, "")
        for key in ("name", "output_dir"):
            require(visible(getattr(self, key)), key, getattr(self, key), "is blank (no visible character)",
                    "give it a value")
        # the run folder is <output_dir>/<name>: a name with a path in it would put it (and what --overwrite
        # empties) anywhere on the disk
        require("/" not in self.name and "\\" not in self.name and self.name not in {".", ".."}, "name", self.name,
                "is not a plain folder name (the run folder must stay inside output_dir)",
                "give a name without / or \\ (e.g. name=my_run), and choose the parent folder with --output-dir")
        if self.model.n_experts == 1 and (routed := self.routed()):  # before model.top_k's bound: the cause first
            raise ConfigError(f"model.n_experts=1 with {', '.join(routed)}: these route among experts, and with one "
                              "expert every routing weight is 1, so routers, their statistics and every row compared "
                              "through them mean nothing: set model.n_experts=2 or more, or keep dense rows only "
                              "(train.models=[dense], experts.specialise=false, no moe or promoe in compare's lists)")
        for f in dataclasses.fields(self):
            if dataclasses.is_dataclass(section := getattr(self, f.name)):
                section.validate()
        self.check_meaning()
        if self.compare.uses_positive_examples and self.data.test_positive_examples:
            raise ConfigError("compare.icl_models / compare.fewshot_models show the test tasks' positive examples "
                              "to the models, so they cannot also be scored: set data.test_positive_examples=false "
                              "(or empty both lists)")
        if "upcycled" in self.train.models and not self.experts.specialise:
            raise ConfigError("train.models: `upcycled` is the end-to-end upcycled MoE kept next to `moe` over "
                              "specialised experts; without experts.specialise=true it is `moe` itself: remove it "
                              "from train.models (or set experts.specialise=true)")
        if self.data.headline_max_per_task is not None and not self.eval.headline_rows:
            raise ConfigError(f"data.headline_max_per_task={self.data.headline_max_per_task} sets how many instances "
                              "the headline rows score, but eval.headline_rows names none: name them (e.g. "
                              "eval.headline_rows=[promoe,moe]) or unset data.headline_max_per_task")
        if self.compare.router_only_models and not self.prompt.with_definition:
            raise ConfigError("compare.router_only_models add the router-only condition to a run with standard "
                              "prompts, but this run's prompt.condition is router_only already: its model rows are "
                              "that condition; set compare.router_only_models=[]")
        if self.compare.icl_models and not self.prompt.with_definition:
            raise ConfigError("compare.icl_models show Definition + examples in the prompt, but "
                              "prompt.condition=router_only prompts hold the instance input alone: set "
                              "compare.icl_models=[] (or prompt.condition=standard)")

    def routed(self) -> list[str]:
        """The selected settings that route among experts: models with a router (``moe``, ``promoe``, ``upcycled``)
        trained or under a condition (the router and ablation rows need them trained), and specialisation."""
        out = []
        for key in ("train.models", *(r.select for r in selected(self, "condition"))):
            if models := [m for m in config_value(self, key) if arch(m) in ("moe", "promoe")]:
                out.append(f"{key}=[{', '.join(models)}]")
        return out + (["experts.specialise=true"] if self.experts.specialise else [])

    def check_meaning(self) -> None:
        """Refuse settings that are each valid but together cannot give a meaningful result (keys and fix named)."""
        if self.experts.specialise and self.experts.clusters == "output" and self.model.n_experts != OUTPUT_CLUSTERS:
            raise ConfigError(f"experts.clusters=output makes {OUTPUT_CLUSTERS} clusters (label, span, free text), one "
                              f"per expert, but model.n_experts={self.model.n_experts}: set "
                              f"model.n_experts={OUTPUT_CLUSTERS}, or choose another experts.clusters")
        for key, value, what, off in (
                ("experts.from_run", self.experts.from_run, "starts from another run's specialised experts", "unset it"),
                ("train.route_targets", self.train.route_targets or None, "pulls each task's routing toward its "
                 "specialised expert", "set it to 0")):
            if value is not None and not self.experts.specialise:
                raise ConfigError(f"{key}={value!r} {what}, but experts.specialise=false (no experts are "
                                  f"specialised), so it would be ignored: set experts.specialise=true, or {off}")


def preset_path(name: str) -> Path | Traversable:
    """The file of a shipped preset (in :data:`CONFIG_DIR`), or ``name`` itself when it is a .yaml path."""
    return Path(name) if Path(name).suffix in (".yaml", ".yml") else CONFIG_DIR / f"{name}.yaml"


def presets() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(q.name.removesuffix(".yaml") for q in CONFIG_DIR.iterdir() if q.name.endswith(".yaml"))


def read_yaml(path: Path | Traversable) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config {str(path)!r} not found; presets: {presets()}")
    try:  # within the limits of promoe.limits: an alias bomb or a deep nest is refused before it is built
        text = read_text(path, "config_bytes") if isinstance(path, Path) else path.read_text(encoding="utf-8")
        data = load_yaml(text, str(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {str(path)!r} cannot be read as UTF-8 text ({type(e).__name__}: {e}): save it "
                          "as UTF-8 YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must be a mapping of keys to values")
    return data


def preset_tree(path: Path | Traversable, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """Preset ``path`` as plain data: its parent's (``inherit:``, followed to the root) merged with its
    own values. A parent .yaml path is relative to the folder of the file that names it."""
    here = str(path.resolve()) if isinstance(path, Path) else str(path)
    if here in _chain:
        cycle = " -> ".join([*_chain[_chain.index(here):], here])
        raise ConfigError(f"presets inherit in a cycle: {cycle}; remove one of these `{INHERIT}:` keys")
    tree = read_yaml(path)
    parent = tree.pop(INHERIT, None)
    try:
        build(ExperimentConfig, tree, "")  # this file's keys and types, so that errors name it
        if parent is None:
            return tree
        if not isinstance(parent, str) or not parent.strip():
            raise ConfigError(f"{INHERIT}: expected a preset name or a .yaml path, got {parent!r}")
        up = preset_path(parent.strip())
        if isinstance(up, Path) and not up.is_absolute() and isinstance(path, Path):
            up = path.parent / up
        if not up.is_file():
            raise ConfigError(f"{INHERIT}: {parent!r} not found ({str(up)!r}); presets: {presets()}")
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None
    return merge(preset_tree(up, (*_chain, here)), tree)


def load_config(preset: str = "default", overrides: list[str] | None = None) -> ExperimentConfig:
    """Build the config of ``preset`` (a shipped preset's name or a .yaml path) with ``key=value``
    overrides applied (values parsed as YAML), and check it (:meth:`ExperimentConfig.validate`)."""
    path = preset_path(preset)
    tree = preset_tree(path)
    try:
        cfg_tree = overrides_tree(overrides or [])
        cfg = build(ExperimentConfig, merge(tree, cfg_tree), "")
        cfg.validate()
        return cfg
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None


def help_lines(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """``key = default  -- help`` for every config key, for ``promoe config --keys``."""
    return fields_help(cls, prefix)
