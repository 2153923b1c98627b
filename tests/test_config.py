"""Config: presets, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoe.config import DataConfig, load_config
from promoe.errors import ConfigError


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
