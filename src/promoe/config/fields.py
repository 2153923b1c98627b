"""Dataclass configs from plain data: fields with help and bounds, type coercion with errors that
name the key, dotted overrides, merging of preset trees, and the checks declared on the fields.

Generic: nothing here knows the experiment's keys (:mod:`promoe.config` declares them)."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal

import yaml

from promoe.errors import ConfigError
from promoe.limits import beyond, limit, load_yaml


def setting(default: Any, help: str, **bounds: float | str) -> Any:
    """A dataclass field with a help text (shown by ``promoe config --keys``) and the bounds its value
    must keep (``lo``: at least, ``gt``: above, ``lt``: below; checked by :func:`check_fields`). An int without
    ``lt`` is a count: at most the limit ``hi`` of :mod:`promoe.limits` (default ``count``)."""
    meta = {"help": help, **bounds}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def shown(value: Any, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters: an error names a value, it does not print a huge one."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 5]} ...{text[-1]}"


def require(ok: Any, key: str, value: Any, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={shown(value)} {problem}: {fix}")


def check_fields(obj: Any, section: str) -> None:
    """The bounds declared on ``obj``'s fields (numbers with a bound are also finite; unset optional
    keys pass; an int without an upper bound is a count, at most its limit in :mod:`promoe.limits`, so that
    a 10^9 is refused before anything is allocated for it) and its row names: registered for their key at check
    time, each listed once."""
    for f in dataclasses.fields(obj):
        value, key, meta = getattr(obj, f.name), f"{section}.{f.name}".lstrip("."), f.metadata
        if "choices" in meta:  # names valid for this key, asked at check time
            valid = meta["choices"]()
            bad = [n for n in value if n not in valid]
            require(not bad, key, value, f"names {bad[0]!r} (not a row)" if bad else "",
                     f"choose from {valid}")
            twice = [n for n in dict.fromkeys(value) if value.count(n) > 1]
            require(not twice, key, value, f"lists {twice[0]!r} twice" if twice else "", "name each row once")
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
        if isinstance(value, int) and not isinstance(value, bool) and "lt" not in bounds:
            name = meta.get("hi", "count")
            if value > limit(name):
                raise ConfigError(str(beyond(name, f"{key}={value}", f"set it to at most {limit(name):,}")))



def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def coerce(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {shown(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {shown(value)} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {shown(value)}")
        return [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {shown(value)}")
        return build(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 5e-4 (no dot) as a string
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {shown(value)}")
    return value


def build(cls: type, values: dict[str, Any], where: str) -> Any:
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
        setattr(obj, key, coerce(value, hints[key], sub))
    return obj


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    node[leaf] = value


def overrides_tree(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", ...]`` as a nested tree (values parsed as YAML, so data only)."""
    cfg_tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. data.val_tasks=10)")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw, f"override {key.strip()}") if raw.strip() else None
        except yaml.YAMLError as e:
            problem = str(e).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote a plain "
                              f"string, e.g. {key.strip()}='\"...\"'") from None
        set_dotted(cfg_tree, key.strip(), value)
    return cfg_tree


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out



def help_lines(cls: type, prefix: str = "") -> list[str]:
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


def to_dict(cfg: Any) -> dict[str, Any]:
    """A resolved config as plain data (what a run writes to ``config.yaml``)."""
    return dataclasses.asdict(cfg)
