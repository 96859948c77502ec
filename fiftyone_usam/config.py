"""Strict loading and saving of the frozen dataclass configs used across the package.

Each component defines its own frozen dataclass beside its code; this module only turns them
into plain dicts and back, refusing unknown keys so a typo in a config file is an error rather
than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from fiftyone_usam.errors import ConfigError

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Returns a JSON-serialisable dict of a dataclass config (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """Builds the dataclass ``cls`` from ``data``, refusing unknown and missing keys.

    Lists are turned into tuples where the field is annotated as a tuple, so a config read back
    from JSON compares equal to the one written.

    Args:
        cls: a dataclass type.
        data: the values, e.g. parsed from JSON or YAML.
        source: where ``data`` came from, for error messages (a file path, say).

    Raises:
        ConfigError: on unknown keys, missing required keys, or a value of the wrong kind.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
            f"valid settings are: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required settings
        raise ConfigError(f"{source}: {e}") from None


def load_config(cls: type[T], path: str | Path) -> T:
    """Reads a JSON or YAML file into the dataclass ``cls`` (strictly, see `config_from_dict`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
    return config_from_dict(cls, data or {}, source=str(path))


def _coerce(annotation: Any, value: Any) -> Any:
    """Turns JSON lists into tuples where the annotation asks for a tuple."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(members[0], value) if len(members) == 1 else value
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v) for v in value)
    return value
