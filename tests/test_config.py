"""Config: presets, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from promoe import registry
from promoe.config import (
    CONFIG_DIR,
    CompareConfig,
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    help_lines,
    load_config,
    presets,
    to_dict,
)
from promoe.errors import ConfigError
from promoe.registry import config_value


def test_presets_and_overrides_apply() -> None:
    smoke = load_config("smoke")
    assert smoke.name == "smoke"
    assert smoke.data.train_collections == ["sni"]  # the official protocol: SNI training tasks only
    assert smoke.data.val_tasks == 2 and smoke.data.max_train_instances_per_task == 4
    assert smoke.model.backbone == "tiny-llama" and smoke.train.steps == 4
    assert smoke.data.test_max_instances_per_task == 1
    assert smoke.data.split_seed == DataConfig().split_seed  # untouched keys keep their defaults

    cfg = load_config("default", ["data.val_tasks=3", "prompt.n_pos_examples=2", "data.root=",
                                  "data.test_positive_examples=false", "data.train_collections=[sni,niv1]"])
    assert cfg.data.val_tasks == 3 and cfg.prompt.n_pos_examples == 2
    assert cfg.data.root is None and cfg.data.test_positive_examples is False
    assert cfg.data.train_collections == ["sni", "niv1"]
    assert cfg.data.source == "offline" and cfg.data.max_subtasks_per_family == 20
    assert load_config("default").data.val_tasks == DataConfig().val_tasks


@pytest.mark.parametrize(("override", "named"), [
    ("data.nope=1", "'data.nope'"),
    ("nope=1", "'nope'"),
    ("data.val_tasks=abc", "data.val_tasks"),
    ("data.val_tasks=true", "data.val_tasks"),
    ("data.val_tasks=1.5", "data.val_tasks"),
    ("data.source=ftp", "data.source"),
    ("data.train_collections=sni", "data.train_collections"),
    ("data.root=5", "data.root"),
    ("data=3", "data"),
    ("data.val_tasks", "data.val_tasks"),
    ("train.steps=[", "train.steps=["),  # not YAML
])
def test_bad_override_names_the_key(override: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("default", [override])
    assert named in str(info.value) and "default.yaml" in str(info.value)


def test_unknown_key_under_a_section_names_its_section() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("default", ["data.nope=1"])
    msg = str(info.value)
    assert "data." in msg and "nope" in msg and "val_tasks" in msg  # lists the valid keys


@pytest.mark.parametrize(("text", "named"), [
    ("name: mine\nbogus_key: 1\n", "'bogus_key'"),
    ("data:\n  bogus_key: 1\n", "'data.bogus_key'"),
    ("data:\n  val_tasks: many\n", "data.val_tasks"),
])
def test_preset_file_with_bad_key(tmp_path: Path, text: str, named: str) -> None:
    preset = tmp_path / "mine.yaml"
    preset.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(preset))
    assert named in str(info.value) and "mine.yaml" in str(info.value)


def test_preset_file_from_tmp_path(tmp_path: Path) -> None:
    preset = tmp_path / "mine.yaml"
    preset.write_text("name: mine\ndata:\n  val_tasks: 7\n")
    cfg = load_config(str(preset), ["data.split_seed=2"])
    assert (cfg.name, cfg.data.val_tasks, cfg.data.split_seed) == ("mine", 7, 2)


def test_unknown_preset_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_preset"):
        load_config("no_such_preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(listy))


def test_configs_are_data_never_code(tmp_path: Path) -> None:
    """A YAML tag that would build a Python object (run a command) is refused, in a file or an override."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(evil))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("default", [f"name=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


# -- presets that inherit --------------------------------------------------------------------------


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_child_preset_overrides_its_parent(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", "name: base\ndata:\n  val_tasks: 7\n  split_seed: 3\ntrain:\n  steps: 9\n")
    child = _write(tmp_path, "child.yaml", "inherit: base.yaml\nname: child\ndata:\n  val_tasks: 5\n")
    cfg = load_config(str(child))
    assert (cfg.name, cfg.data.val_tasks) == ("child", 5)  # the child's values win
    assert (cfg.data.split_seed, cfg.train.steps) == (3, 9)  # the rest comes from the parent, section by section
    assert load_config(str(child), ["data.val_tasks=1"]).data.val_tasks == 1  # overrides come last


def test_inherit_chains_and_shipped_parents(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "inherit: full\nname: a\ntrain:\n  steps: 3\n")
    _write(tmp_path, "b.yaml", "inherit: a.yaml\nname: b\ncompare:\n  fewshot_tasks: 5\n")
    c = load_config(str(_write(tmp_path, "c.yaml", "inherit: b.yaml\neval:\n  max_new_tokens: 7\n")))
    full = load_config("full")
    assert (c.name, c.train.steps, c.compare.fewshot_tasks, c.eval.max_new_tokens) == ("b", 3, 5, 7)
    assert (c.compare.icl_models, c.data.test_max_per_task) == (full.compare.icl_models, 2)  # full <- default


def test_inherit_cycle_is_refused_naming_the_files(tmp_path: Path) -> None:
    _write(tmp_path, "x.yaml", "inherit: y.yaml\n")
    _write(tmp_path, "y.yaml", "inherit: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle") as info:
        load_config(str(tmp_path / "x.yaml"))
    assert "x.yaml" in str(info.value) and "y.yaml" in str(info.value)
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(_write(tmp_path, "self.yaml", "inherit: self.yaml\n")))


@pytest.mark.parametrize(("parent", "named"), [
    ("no_such_preset", "no_such_preset"),
    ("missing.yaml", "missing.yaml"),
    ("3", "3"),
    ("[default]", "expected a preset name"),
])
def test_unknown_parent_is_refused(tmp_path: Path, parent: str, named: str) -> None:
    child = _write(tmp_path, "child.yaml", f"inherit: {parent}\nname: child\n")
    with pytest.raises(ConfigError, match="inherit") as info:
        load_config(str(child))
    assert named in str(info.value) and "child.yaml" in str(info.value)


def test_bad_key_in_a_parent_names_the_parent(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", "data:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="base.yaml") as info:
        load_config(str(_write(tmp_path, "child.yaml", "inherit: base.yaml\n")))
    assert "data.bogus" in str(info.value)


@pytest.mark.parametrize(("preset", "values"), [
    ("default", {"name": "default", "train.steps": 16, "experts.steps": 80, "train.batch_size": 4,
                 "data.test_max_per_task": 2,
                 "data.headline_max_per_task": None, "compare.icl_models": [], "compare.router_only_models": [],
                 "compare.ablations": ["shuffled"], "eval.backbone": False,
                 "compare.fewshot_models": [], "eval.batch_size": 16, "experts.specialise": True,
                 "model.n_experts": 3, "model.shared_expert": True, "model.expert_width": 192,
                 "experts.clusters": "output", "train.models": ["dense", "upcycled", "moe", "promoe"],
                 "compare.routers": ["uniform", "oracle"], "train.budget": "matched",
                 "train.lr_candidates": [1e-3], "train.router_lr_candidates": [3e-3], "train.paraphrases": 4}),
    ("mechanism", {"name": "mechanism", "data.source": "synth", "prompt.condition": "router_only",
                   "data.synth_instances": 24, "train.steps": 24, "experts.steps": 144,
                   "train.router_lr_candidates": [1e-3],
                   "experts.clusters": "meta", "train.models": ["moe", "promoe"],
                   "compare.routers": ["uniform", "oracle"], "compare.ablations": ["shuffled"]}),
    ("full", {"name": "full", "train.steps": 64, "experts.steps": 384, "train.batch_size": 8,
              "train.lr_candidates": [1e-4, 3e-4, 1e-3], "train.router_lr_candidates": [1e-3, 3e-3, 1e-2],
              "train.paraphrases": 32, "data.test_max_per_task": 2,
              "data.headline_max_per_task": 8, "compare.router_only_models": ["moe", "promoe"],
              "compare.ablations": ["shuffled", "empty", "random_text", "category", "paraphrase"],
              "eval.backbone": True, "compare.fewshot_k": 2,
              "compare.fewshot_tasks": 40, "compare.icl_models": ["backbone", "dense", "moe", "promoe"],
              "compare.fewshot_models": ["dense", "moe", "promoe"], "eval.max_new_tokens": 20,
              "compare.routers": ["knn", "skill", "uniform", "random", "oracle", "oracle_insample"]}),
    ("reference", {"name": "reference", "experts.steps": 384, "data.headline_max_per_task": 32,
                   "train.mixed_precision": "no", "model.dtype": "fp32", "compare.fewshot_models": ["dense", "moe", "promoe"],
                   "eval.headline_rows": ["promoe", "moe", "oracle", "uniform", "oracle_insample"]}),
    ("smoke", {"name": "smoke", "model.backbone": "tiny-llama", "model.n_experts": 4, "train.steps": 4,
               "data.test_max_per_task": None, "eval.batch_size": 8, "compare.fewshot_k": None,
               "compare.fewshot_steps": 2, "compare.icl_models": ["backbone", "dense", "moe", "promoe"]}),
    ("sni_full", {"name": "sni_full", "model.backbone": "HuggingFaceTB/SmolLM2-360M-Instruct", "train.steps": 5000,
                  "data.val_tasks": 40, "data.test_max_per_task": None, "data.test_positive_examples": False,
                  "compare.fewshot_k": None, "compare.fewshot_tasks": None, "eval.batch_size": 32,
                  "compare.fewshot_models": ["dense", "moe", "promoe"], "train.mixed_precision": "bf16"}),
])
def test_shipped_presets_resolve_as_before(preset: str, values: dict) -> None:
    cfg = load_config(preset)
    for key, value in values.items():
        assert config_value(cfg, key) == value, key


def test_presets_ship_with_the_package() -> None:
    assert {"default", "full", "reference", "smoke", "sni_full", "mechanism"} <= set(presets())
    assert str(CONFIG_DIR).endswith(str(Path("promoe") / "configs"))


# -- checks of the values --------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "key"), [
    ("model.n_experts=0", "model.n_experts"),
    ("model.top_k=0", "model.top_k"),
    ("model.top_k=5", "model.top_k"),  # more than the 4 experts
    ("model.n_moe_layers=0", "model.n_moe_layers"),
    ("model.moe_layers=[-1]", "model.moe_layers"),
    ("model.moe_layers=[3,3]", "model.moe_layers"),
    ("model.moe_layers=[]", "model.moe_layers"),
    ("model.expert_width=0", "model.expert_width"),
    ("model.hyper_rank=0", "model.hyper_rank"),
    ("model.d_task=0", "model.d_task"),
    ("model.router_jitter=1.0", "model.router_jitter"),
    ("model.router_noise=-0.1", "model.router_noise"),
    ("model.aux_loss_weight=-1", "model.aux_loss_weight"),
    ("train.steps=0", "train.steps"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.micro_batch_size=0", "train.micro_batch_size"),
    ("train.micro_batch_size=5", "train.micro_batch_size"),  # more than the batch of 4
    ("train.lr=0", "train.lr"),
    ("train.lr=-0.001", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.router_lr=.inf", "train.router_lr"),
    ("train.max_grad_norm=-1", "train.max_grad_norm"),
    ("train.max_grad_norm=.inf", "train.max_grad_norm"),
    ("train.weight_decay=-0.1", "train.weight_decay"),
    ("train.warmup_steps=-1", "train.warmup_steps"),
    ("train.max_length=0", "train.max_length"),
    ("train.max_target_length=0", "train.max_target_length"),
    ("train.examples_per_task=0", "train.examples_per_task"),
    ("train.temperature=0", "train.temperature"),
    ("train.eval_every=-1", "train.eval_every"),
    ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.patience=-1", "train.patience"),
    ("train.lr_pilot=0", "train.lr_pilot"),
    ("train.lr_pilot=1.5", "train.lr_pilot"),
    ("train.lr_candidates=[0.001,0]", "train.lr_candidates"),
    ("train.router_lr_candidates=[0.001,0.001]", "train.router_lr_candidates"),
    ("train.lr_candidates=[.inf]", "train.lr_candidates"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("eval.max_length=0", "eval.max_length"),
    ("data.val_tasks=-1", "data.val_tasks"),
    ("data.max_train_instances_per_task=0", "data.max_train_instances_per_task"),
    ("data.test_max_instances_per_task=0", "data.test_max_instances_per_task"),
    ("data.test_max_per_task=0", "data.test_max_per_task"),
    ("data.max_test_tasks=0", "data.max_test_tasks"),
    ("prompt.n_pos_examples=-1", "prompt.n_pos_examples"),
    ("compare.knn_k=0", "compare.knn_k"),
    ("compare.knn_temperature=0", "compare.knn_temperature"),
    ("compare.skill_temperature=-1", "compare.skill_temperature"),
    ("compare.skill_n=0", "compare.skill_n"),
    ("compare.profile_examples_per_task=0", "compare.profile_examples_per_task"),
    ("compare.fewshot_k=0", "compare.fewshot_k"),
    ("compare.fewshot_steps=0", "compare.fewshot_steps"),
    ("compare.fewshot_tasks=0", "compare.fewshot_tasks"),
    ("compare.fewshot_lr=0", "compare.fewshot_lr"),
    ("seed=-1", "seed"),
    ("seed=4294967296", "seed"),  # numpy's generator takes seeds below 2**32
    ("output_dir=''", "output_dir"),
    ("name=' '", "name"),
])
def test_out_of_range_value_is_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("default", [override])
    msg = str(info.value)
    assert msg.startswith(f"default.yaml: {key}=") and ": " in msg.split("=", 1)[1]  # the key, then the fix


@pytest.mark.parametrize("override", [
    "model.top_k=3", "model.moe_layers=[0,5]", "train.micro_batch_size=4", "train.max_grad_norm=0",
    "train.eval_every=0", "data.val_tasks=0", "compare.fewshot_k=null", "train.models=[dense]",
    "compare.routers=[]", "model.router_jitter=0.5", "seed=4294967295",
])
def test_boundary_values_are_accepted(override: str) -> None:
    load_config("default", override.split())


@pytest.mark.parametrize(("text", "value"), [("5e-4", 5e-4), ("1E-3", 1e-3), ("+2", 2.0), (".5", 0.5)])
def test_float_keys_take_exponent_notation_yaml_reads_as_text(text: str, value: float) -> None:
    assert load_config("default", [f"train.lr={text}"]).train.lr == value
    assert load_config("default", [f"experts.lr={text}"]).experts.lr == value


@pytest.mark.parametrize("text", ["fast", "1e", "1.2.3", "e5"])
def test_float_keys_refuse_other_text(text: str) -> None:
    with pytest.raises(ConfigError, match="train.lr: expected float"):
        load_config("default", [f"train.lr={text}"])


def test_dense_only_run_uses_top_k_as_its_mix_count() -> None:
    # (experts.specialise=false: the default's clusters by kind of output make 3 experts, not 4)
    cfg = load_config("default", ["train.models=[dense]", "model.n_experts=4", "model.top_k=4", "experts.specialise=false"])
    assert (cfg.train.models, cfg.model.top_k) == (["dense"], 4)


def test_validation_checks_a_saved_config(tmp_path: Path) -> None:
    """A run's config.yaml (written by to_dict) loads back, and a bad one is refused like a preset."""
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(to_dict(load_config("full"))))
    assert to_dict(load_config(str(saved))) == to_dict(load_config("full"))
    saved.write_text(yaml.safe_dump({**to_dict(load_config("full")), "seed": -3}))
    with pytest.raises(ConfigError, match="config.yaml: seed=-3"):
        load_config(str(saved))


def test_every_section_has_a_validate() -> None:
    cfg = ExperimentConfig()
    sections = [getattr(cfg, f.name) for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
    assert len(sections) == 7 and all(callable(getattr(s, "validate", None)) for s in sections)
    cfg.validate()  # the dataclass defaults are valid


# -- row names, checked against the registry -------------------------------------------------------


@pytest.mark.parametrize(("override", "key", "valid"), [
    ("compare.routers=[knn,nearest]", "compare.routers", "'oracle'"),
    ("compare.ablations=[noise]", "compare.ablations", "'paraphrase'"),
    ("train.models=[moe,gpt]", "train.models", "'promoe'"),
    ("compare.icl_models=[copy_demo]", "compare.icl_models", "'backbone'"),
    ("compare.fewshot_models=[backbone]", "compare.fewshot_models", "'dense'"),  # not a trained model
])
def test_unknown_row_name_is_refused_naming_the_valid_ones(override: str, key: str, valid: str) -> None:
    bad = override.split("[", 1)[1].rstrip("]").split(",")[-1]
    with pytest.raises(ConfigError) as info:
        load_config("full", [override])
    msg = str(info.value)
    assert key in msg and repr(bad) in msg and valid in msg


def test_duplicate_row_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="compare.routers=.* lists 'knn' twice"):
        load_config("default", ["compare.routers=[knn,skill,knn]"])


def test_row_registered_later_is_accepted_and_a_default() -> None:
    registry.register(registry.Row("probe_router", "router", "test router", build=lambda ctx: None,
                                   select="compare.routers", needs=("moe",)), replace=True)
    try:
        assert load_config("default", ["compare.routers=[knn,probe_router]"]).compare.routers == ["knn", "probe_router"]
        assert "probe_router" in CompareConfig().routers  # defaults come from the registry
        assert any("compare.routers" in line and "'probe_router'" in line for line in help_lines())
    finally:
        registry.unregister("probe_router")
    with pytest.raises(ConfigError, match="probe_router"):
        load_config("default", ["compare.routers=[probe_router]"])


def test_defaults_of_row_keys_are_todays_lists() -> None:
    assert CompareConfig().routers == ["knn", "skill", "uniform", "random", "oracle"]
    assert CompareConfig().ablations == ["shuffled", "empty", "random_text", "category", "paraphrase"]
    assert CompareConfig().icl_models == ["backbone", "dense", "moe", "promoe"]
    assert CompareConfig().fewshot_models == TrainConfig().models == ["dense", "moe", "promoe"]


def test_scored_positive_examples_with_icl_rows_are_refused() -> None:
    with pytest.raises(ConfigError, match="set data.test_positive_examples=false"):
        load_config("full", ["data.test_positive_examples=true"])
    load_config("full", ["data.test_positive_examples=true", "compare.icl_models=[]", "compare.fewshot_models=[]", "compare.router_only_models=[]"])


def test_icl_or_fewshot_rows_refuse_to_score_positive_examples(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="test_positive_examples=false"):
        load_config("smoke", [f"output_dir={tmp_path}", "data.test_positive_examples=true"])
    assert not (tmp_path / "smoke").exists()  # refused before anything was written


def test_given_clusters_need_a_file() -> None:
    with pytest.raises(ConfigError, match="experts.cluster_file"):
        load_config("default", ["experts.specialise=true", "experts.clusters=given"])
    with pytest.raises(ConfigError, match="experts.steps"):
        load_config("default", ["experts.steps=0"])
    cfg = load_config("default", ["experts.clusters=given", "experts.cluster_file=c.json"])
    assert cfg.experts.cluster_file == "c.json" and cfg.experts.specialise  # on in the default preset
    assert not load_config("smoke").experts.specialise  # off in the dataclass default
