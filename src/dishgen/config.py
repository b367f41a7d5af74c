"""Typed configs: one dataclass per family, a YAML/JSON file and ``key=value`` overrides on top.

Resolution order (later wins): dataclass defaults -> preset -> config file -> ``key=value``.
Unknown keys are an error that names the nearest valid key, so a typo never silently trains
with a default.

Each field may declare the values it accepts with :func:`checked` (a range, a multiple, a power
of two, a list of choices); :func:`validate_config` checks every field of a config against them,
then the config's own ``validate()`` (rules that tie two fields together), before any work starts.
Every problem is one :class:`ConfigError` line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dishgen.errors import DishgenError

T = TypeVar("T")

MAX_CONFIG_FILE_BYTES = 4 * 1024 * 1024  # a config is a few KB; anything this big is the wrong file
MAX_SEED = 2**32 - 1  # numpy and torch seeds alike
MINUTES = "a number of minutes >= 0 (0 turns it off)"  # max_minutes, checkpoint_every_minutes


class ConfigError(DishgenError, ValueError):
    """A config file, preset or override that cannot be applied."""


@dataclasses.dataclass(frozen=True)
class Allowed:
    """The values a config field accepts (for a list or tuple field: each of its items).

    Attributes:
        min: the smallest value (``None``: no lower bound).
        max: the largest value (``None``: no upper bound).
        min_open: ``min`` itself is excluded.
        max_open: ``max`` itself is excluded.
        multiple_of: the value must be a multiple of this.
        power_of_two: the value must be a power of two.
        choices: the only values allowed.
        non_empty: a string or list must not be empty.
        text: what is allowed, in words, where the words built from the above would not say it well.
    """

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    multiple_of: int | None = None
    power_of_two: bool = False
    choices: tuple | None = None
    non_empty: bool = False
    text: str | None = None

    def describe(self) -> str:
        """What is allowed, in words (``a multiple of 16 between 16 and 1024``)."""
        if self.text:
            return self.text
        if self.choices is not None:
            return "one of " + ", ".join(_show(c) for c in self.choices)
        words = []
        if self.power_of_two:
            words.append("a power of two")
        elif self.multiple_of:
            words.append(f"a multiple of {self.multiple_of}")
        low, high = _num(self.min), _num(self.max)
        if self.min is not None and self.max is not None:
            if self.min_open or self.max_open:
                words.append(f"in {'(' if self.min_open else '['}{low}, {high}{')' if self.max_open else ']'}")
            else:
                words.append(f"between {low} and {high}")
        elif self.min is not None:
            words.append(f"> {low}" if self.min_open else f"at least {low}")
        elif self.max is not None:
            words.append(f"< {high}" if self.max_open else f"at most {high}")
        if self.non_empty:
            words.append("non-empty")
        return " ".join(words) or "any value"

    def accepts(self, value: Any) -> bool:
        """Whether one (non-list) value is allowed."""
        if self.choices is not None and value not in self.choices:
            return False
        if self.non_empty and isinstance(value, str) and not value.strip():
            return False
        numeric = any(x is not None and x is not False for x in
                      (self.min, self.max, self.multiple_of, self.power_of_two or None))
        if not numeric:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return False
        if self.max is not None and (value >= self.max if self.max_open else value > self.max):
            return False
        if self.multiple_of and value % self.multiple_of:
            return False
        if self.power_of_two and (value < 1 or int(value) != value or int(value) & (int(value) - 1)):
            return False
        return True


def checked(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **allowed) -> Any:
    """A dataclass field that declares the values it accepts (see :class:`Allowed`).

    Example::

        resolution: int = checked(64, multiple_of=16, min=16, max=1024)
        batch_size: int = checked(32, min=1)

    Args:
        default: the default value.
        default_factory: for a list default.
        **allowed: the keyword arguments of :class:`Allowed`.

    Returns:
        A ``dataclasses.field`` carrying the rule in its metadata.
    """
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"allowed": Allowed(**allowed)})


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:g}" if isinstance(x, float) else str(x)


def _show(value: Any, limit: int = 60) -> str:
    """A value as it is shown in an error: numbers plain, strings quoted, long ones shortened."""
    text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_config(config: Any) -> Any:
    """Check every field of a config against what it declares (:func:`checked`), then the
    config's own ``validate()`` for rules that tie fields together.

    Called when a config is resolved and again at the start of every trainer, before any work.

    Args:
        config: a config dataclass instance.

    Returns:
        The same config.

    Raises:
        ConfigError: one line naming the key, its value and what is allowed.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue  # an Optional field that is off; a non-Optional None fails its rule below
        allowed: Allowed | None = f.metadata.get("allowed")
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                what = allowed.describe() if allowed else "a finite number"
                raise ConfigError(f"{f.name}={_show(value)} must be {what}")
        if allowed is None:
            continue
        if allowed.non_empty and isinstance(value, (list, tuple, str)) and not value:
            raise ConfigError(f"{f.name}={_show(value)} must be {allowed.describe()}")
        if not all(allowed.accepts(item) for item in items):
            raise ConfigError(f"{f.name}={_show(value)} must be {allowed.describe()}")
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as err:  # a model config's own check (e.g. CGANConfig.validate)
            raise ConfigError(str(err)) from None
    return config


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
        raise ConfigError(errors[0] if errors else f"{key}: cannot use {_show(value)}")
    if origin is typing.Literal:
        if value not in args:
            str_args = [str(a) for a in args]
            if str(value) in str_args:
                return args[str_args.index(str(value))]
            raise ConfigError(f"{key}={_show(value)} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        return _coerce_sequence(value, annotation, key)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int, float)) else ""
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={_show(value)} is not a boolean; use true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (str, float)) and not isinstance(value, bool):
            try:
                return int(value) if isinstance(value, str) else _integral(value)
            except (ValueError, OverflowError):
                try:
                    return _integral(float(value))
                except (ValueError, OverflowError):
                    pass
        raise ConfigError(f"{key}={_show(value)} is not an integer")
    if annotation is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except (ValueError, OverflowError):
                pass
        raise ConfigError(f"{key}={_show(value)} is not a number")
    if annotation is str:
        if isinstance(value, (list, tuple, dict, set)) or value is None:
            raise ConfigError(f"{key}={_show(value)} must be a single text value, not a {type(value).__name__}")
        return str(value)
    return value


def _integral(value: float) -> int:
    if not float(value).is_integer():
        raise ValueError(value)
    return int(value)


def _coerce_sequence(value: Any, annotation: Any, key: str) -> list | tuple:
    """A list (``a,b,c`` or a JSON list on the command line) of the field's item type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as err:
                raise ConfigError(f"{key}={_show(value)} is not a JSON list ({err}); "
                                  "write it as a,b,c or as [\"a\", \"b\"]") from None
        else:
            value = [v.strip() for v in text.split(",") if v.strip()] if text else []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}={_show(value)} must be a list (a,b,c on the command line)")
    is_tuple = origin is tuple or annotation is tuple
    if is_tuple and args and args[-1] is not Ellipsis:  # a fixed length, such as tuple[float, float]
        if len(value) != len(args):
            raise ConfigError(f"{key}={_show(value)} must hold exactly {len(args)} values")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    item_type = args[0] if args else Any
    items = [_coerce(v, item_type, key) for v in value]
    return tuple(items) if is_tuple else items


def apply_overrides(config: T, overrides: Mapping[str, Any], *, source: str = "override") -> T:
    """Return a copy of ``config`` with ``overrides`` applied, type-checked and validated.

    Raises:
        ConfigError: on an unknown key (naming the nearest valid one), a value of the wrong type
            or a value outside what the field allows (see :func:`validate_config`).
    """
    fields = config_fields(type(config))
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, value in _renamed_keys(type(config), overrides, announce=source != "saved config").items():
        if key not in fields:
            name = str(key)
            raise ConfigError(f"unknown {source} key {_show(name)} for {type(config).__name__}{_nearest(name, fields)}")
        changes[key] = _coerce(value, hints.get(key, Any), key)
    return validate_config(dataclasses.replace(config, **changes))


def _renamed_keys(cls, overrides: Mapping[str, Any], *, announce: bool) -> dict[str, Any]:
    """Translate keys a config class renamed (its ``RENAMED_KEYS``: old key -> (new key, old value
    -> new value)) to their new spelling, saying so once unless ``announce`` is false (a saved
    config of an earlier release is read silently)."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in renamed:
            new_key, values = renamed[key]
            new_value = values.get(value, value) if isinstance(value, str) else value
            if announce:
                from dishgen.deprecation import deprecated

                deprecated(f"{key}={value}", f"{new_key}={new_value}")
            if new_key in overrides:
                raise ConfigError(f"{key!r} is the old spelling of {new_key!r}; give {new_key} only")
            key, value = new_key, new_value
        out[key] = value
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """Parse ``["key=value", ...]`` from the command line.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    result = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {_show(item)} is not of the form key=value (for example max_steps=100)")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ConfigError(f"override {_show(item)} has an empty key")
        result[key] = value
    return result


def _parse_error(err: Exception) -> str:
    """A YAML or JSON parser's complaint on one line, with where it happened."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "msg", None) or str(err)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (a ``family`` key, if present, is dropped).

    Raises:
        ConfigError: the file is missing, unreadable, too large, not UTF-8 text, not valid YAML
            or JSON, or not a mapping of ``key: value``.
    """
    path = Path(path)
    shown = repr(str(path))
    if not path.is_file():
        raise ConfigError(f"config file {shown} does not exist (or is not a file)")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_FILE_BYTES:
            raise ConfigError(f"config file {shown} is {size} bytes; a config is a small YAML or JSON file "
                              f"(at most {MAX_CONFIG_FILE_BYTES} bytes): check the path")
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {shown} could not be read: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {shown} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                          f"{err.start}); pass a YAML or JSON file saved as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"config file {shown} holds NUL bytes, so it is binary, not YAML or JSON; check the path")
    try:
        if path.suffix.lower() == ".json":
            parsed = json.loads(text)
        else:
            import yaml

            parsed = yaml.safe_load(text)
    except Exception as err:  # yaml.YAMLError, json.JSONDecodeError, RecursionError on deep nesting
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"config file {shown} is not valid {kind}: {_parse_error(err)}") from None
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise ConfigError(f"config file {shown} must hold a mapping of key: value, not a {type(parsed).__name__}")
    parsed = dict(parsed)
    parsed.pop("family", None)
    return parsed


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


def read_run_config(out: str | Path, family: str) -> dict[str, Any] | None:
    """The saved ``config.json`` of the run directory ``out`` (``None`` when there is none),
    checked to belong to ``family`` before anything else is read from it.

    Raises:
        ConfigError: the file cannot be read or parsed, or the run belongs to another family
            (the message names the command that resumes it).
    """
    saved = Path(out) / "config.json"
    if not saved.is_file():
        return None
    try:
        data = json.loads(saved.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{str(saved)!r} could not be read ({' '.join(str(err).split())}); "
                          "it is not a dishgen run's config: choose another --out") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(saved)!r} holds a {type(data).__name__}, not a run's config: choose another --out")
    found = data.get("family")
    if found != family:
        if isinstance(found, str) and found.isidentifier():
            raise ConfigError(f"{str(out)!r} is a {found} run; resume it with `dishgen train {found} --resume`"
                              f" (or choose another --out for a new {family} run)")
        raise ConfigError(f"{str(saved)!r} names no family, so {str(out)!r} is not a dishgen run: choose another --out")
    return data


def resolve_run_config(
    cls: type[T],
    out: str | Path,
    *,
    family: str | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
) -> T:
    """A training run's config: on ``--resume`` the run's saved ``config.json``, else defaults and
    preset; then the config file and ``key=value`` overrides on top (e.g. ``max_steps`` to train longer).

    Naming a preset with ``--resume`` starts from that preset instead of the saved config.

    Args:
        cls: the family's config dataclass.
        out: the run directory.
        family: the family's name; on ``--resume`` a run of another family is refused first,
            naming the command that resumes it.
        presets: the family's presets.
        preset: a preset name.
        config_file: a YAML or JSON file of config values.
        overrides: ``key=value`` strings.
        resume: continue the run in ``out``.

    Raises:
        ConfigError: a run of another family, a bad file, key or value.
    """
    saved = None
    if resume:
        if family is not None:
            saved = read_run_config(out, family)
        elif (Path(out) / "config.json").is_file():
            saved = json.loads((Path(out) / "config.json").read_text(encoding="utf-8"))
    if saved is not None and not preset:
        retired = getattr(cls, "RETIRED_KEYS", ())  # keys an older version saved
        data = {k: v for k, v in saved.items() if k != "family" and k not in retired}
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
