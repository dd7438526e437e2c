"""Loading: YAML, then dotted overrides (`learner.lr=3e-5`), built into the typed sections and checked.

Unknown keys and bad values raise `ConfigError` naming the dotted key and what it accepts, before Ray starts.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Literal

import yaml

from ol_ray.config.checks import check
from ol_ray.config.schema import Config
from ol_ray.errors import ConfigError


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from defaults when `path` is None), apply `key.sub=value` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return from_dict(raw)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `section.key=value` in a nested dict; the value is parsed as YAML (numbers, booleans, null, lists)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like section.key=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:  # absent, or an empty section in the YAML
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = text


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from plain nested dicts (what YAML gives)."""
    cfg = _build(Config, raw, prefix="")
    check(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts, for summary.json and checkpoints."""
    return dataclasses.asdict(cfg)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = prefix + unknown[0]
        section = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"unknown config key {where!r}; {section} takes: {', '.join(names)}")
    values = {}
    for name in names:
        if name not in raw:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], prefix + name + ".")
        else:
            values[name] = _coerce(raw[name], hint, prefix + name)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping such as {{name: 1}}; got {value!r}")
        return {str(name): _coerce(amount, args[1], f"{key}.{name}") for name, amount in value.items()}
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list; got {value!r}")
        if dataclasses.is_dataclass(args[0]):
            return tuple(_build(args[0], item, f"{key}[{i}].") for i, item in enumerate(value))
        return tuple(_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer; got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 5e-5 as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string; got {value!r}")
    raise ConfigError(f"{key}: unsupported type {hint}")


def load_run_config(run_dir: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config of the run in `run_dir` (its config.yaml, which a resume's overrides also went into), with
    `overrides` and the run directory itself."""
    saved = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(saved):
        raise ConfigError(f"{run_dir}: no config.yaml there, so it is not an ol_ray run directory")
    return load_config(saved, [*overrides, f"output.run_dir={os.path.abspath(run_dir)}"])
