"""Typed configs: one dataclass per family, a YAML/JSON file and ``key=value`` overrides on top.

Resolution order (later wins): dataclass defaults -> preset -> config file -> ``key=value``.
Unknown keys are an error that names the nearest valid key, so a typo never silently trains
with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, preset or override that cannot be applied."""


def config_fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _nearest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(choices))}"


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (often a string from the command line) to the field's type."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, Any)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: cannot use {value!r}")
    if origin is typing.Literal:
        if value not in args:
            str_args = [str(a) for a in args]
            if str(value) in str_args:
                return args[str_args.index(str(value))]
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [v.strip() for v in text.split(",") if v.strip()] if text else []
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, key) for v in value]
        return tuple(items) if origin is tuple or annotation is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={value!r} is not a boolean; use true or false")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not an integer")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not an integer") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}={value!r} is not an integer")
        return int(as_float)
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not a number") from None
    if annotation is str:
        return str(value)
    return value


def apply_overrides(config: T, overrides: Mapping[str, Any], *, source: str = "override") -> T:
    """Return a copy of ``config`` with ``overrides`` applied and type-checked.

    Raises:
        ConfigError: on an unknown key (naming the nearest valid one) or a value of the wrong type.
    """
    fields = config_fields(type(config))
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown {source} key {key!r} for {type(config).__name__}{_nearest(key, fields)}")
        changes[key] = _coerce(value, hints.get(key, Any), key)
    new = dataclasses.replace(config, **changes)
    validate = getattr(new, "validate", None)
    if callable(validate):
        validate()
    return new


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """Parse ``["key=value", ...]`` from the command line."""
    result = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (for example max_steps=100)")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        result[key] = value
    return result


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (a ``family`` key, if present, is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:
        raise ConfigError(f"config file {str(path)!r} could not be parsed: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of key: value, not {type(data).__name__}")
    data = dict(data)
    data.pop("family", None)
    return data


def resolve_config(
    cls: type[T],
    *,
    preset: str | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> T:
    """Build a config: defaults -> preset -> file -> overrides.

    Args:
        cls: the config dataclass.
        preset: name of a preset in ``presets``.
        presets: the family's presets (name -> partial config).
        config_file: a YAML or JSON file of overrides.
        overrides: ``key=value`` strings or a mapping.

    Returns:
        The resolved, validated config.
    """
    config = cls()
    if preset:
        presets = presets or {}
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(presets)) or '(none)'}")
        config = apply_overrides(config, presets[preset], source="preset")
    if config_file:
        config = apply_overrides(config, load_config_file(config_file), source=f"config file {Path(config_file).name}")
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        config = apply_overrides(config, overrides)
    return config


def resolve_run_config(
    cls: type[T],
    out: str | Path,
    *,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
) -> T:
    """A training run's config: on ``--resume`` the run's saved ``config.json``, else defaults and
    preset; then the config file and ``key=value`` overrides on top (e.g. ``max_steps`` to train longer).

    Naming a preset with ``--resume`` starts from that preset instead of the saved config.
    """
    saved = Path(out) / "config.json"
    if resume and saved.is_file() and not preset:
        data = {k: v for k, v in json.loads(saved.read_text(encoding="utf-8")).items() if k != "family"}
        config = apply_overrides(cls(), data, source="saved config")
        if config_file:
            config = apply_overrides(config, load_config_file(config_file), source=f"config file {config_file}")
        if overrides:
            config = apply_overrides(config, parse_overrides(list(overrides)))
        return config
    return resolve_config(cls, preset=preset, presets=presets, config_file=config_file,
                          overrides=list(overrides) or None)


def config_to_dict(config) -> dict[str, Any]:
    """The config as a JSON-ready dict."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, strict: bool = True) -> T:
    """Rebuild a config saved by :func:`config_to_dict` (unknown keys error unless ``strict=False``)."""
    fields = config_fields(cls)
    if not strict:
        data = {k: v for k, v in data.items() if k in fields}
    return apply_overrides(cls(), dict(data), source="saved config")
