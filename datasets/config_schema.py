"""Strict nested dict (YAML, JSON, a checkpoint's spec) -> config dataclass, one rule for all.

Used by the model registry (``model.options``), the training config and the extraction job
config: unknown keys, missing required keys and values of the wrong type are a ``ValueError``
naming the key path and what was expected, so a typo never falls back to a default silently.

Types checked from the dataclass annotations: ``bool`` (only true / false), ``int`` (not bool),
``float`` (an int is accepted and converted), ``str``, ``list[T]``, ``tuple[T, ...]`` and
fixed ``tuple[A, B]`` (from a list), ``dict`` (a mapping; values unchecked), ``X | None`` and
other unions (the first member that accepts the value), nested dataclasses (recursively),
``Any`` (unchecked). Classes with a parser of their own go in ``parsers``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

Parser = Callable[[Any, str], Any]  # (value, key path) -> instance


class ConfigError(ValueError):
    """A configuration file, job file or option value is invalid (the user's settings, not the data)."""


class YamlError(ConfigError):
    """A YAML file or value cannot be read: one line naming the source, line and column."""


def parse_yaml(text: str, *, source: str = "<yaml>") -> Any:
    """Parse YAML text with the safe loader (plain data only: mappings, lists, strings, numbers,
    booleans, null). Every YAML file and ``--set`` value of avel is read through this function.

    Raises:
        YamlError: invalid YAML, or a tag that would build a Python object
            (``!!python/object/apply:os.system``): ``"<source>: line L column C: <problem>"``.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: same rules, ~10x faster
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f": line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        if isinstance(e, yaml.constructor.ConstructorError) and "tag" in problem:
            problem += " (only plain YAML data is accepted: python/* and other custom tags are refused)"
        raise YamlError(f"{source}{where}: invalid YAML: {problem}") from None


MAX_YAML_BYTES = 256 << 10
"""Config and job files are a few KB; a larger file is refused before it is parsed."""


def read_yaml(path: Any) -> Any:
    """:func:`parse_yaml` of a file (UTF-8, a BOM tolerated); unreadable files and files over
    :data:`MAX_YAML_BYTES` are a :class:`YamlError` too."""
    from pathlib import Path

    try:
        size = Path(path).stat().st_size
        if size > MAX_YAML_BYTES:
            raise YamlError(f"{path}: {size} bytes, more than the {MAX_YAML_BYTES} a config file may have")
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise YamlError(f"{path}: cannot read as UTF-8 text ({getattr(e, 'strerror', None) or e})") from None
    return parse_yaml(text, source=str(path))


def dataclass_from_dict(cls: type, data: Any, *, path: str = "", parsers: Mapping[type, Parser] | None = None) -> Any:
    """Build dataclass ``cls`` from ``data`` (a mapping), checking keys and value types.

    Args:
        cls: the dataclass.
        data: its fields as a mapping; an instance of ``cls`` is returned as it is.
        path: key path of ``data`` for messages (``"optim"``, ``"model[loco].options"``);
            ``""`` is the top level.
        parsers: ``{class: parser(value, path)}`` for fields whose class parses itself.
    """
    if isinstance(data, cls):
        return data
    where = path or "top level"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; expected some of {sorted(fields)}")
    required = sorted(
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in data
    )
    if required:
        raise ValueError(f"{where}: missing required key(s) {required} for {cls.__name__}")
    return cls(**{k: _convert(v, hints[k], f"{path}.{k}" if path else k, parsers or {}) for k, v in data.items()})


def check_fields(cls: type, data: Any, *, path: str = "", parsers: Mapping[type, Parser] | None = None) -> None:
    """Check that ``data`` sets only fields of dataclass ``cls``, each with a value of its type.

    The checks of :func:`dataclass_from_dict` without building ``cls``: fields it leaves out are
    not an error (a config before the fields derived from the data are filled in). Raises
    ``ValueError`` naming the key path.
    """
    where = path or "top level"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields, key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; expected some of {sorted(fields)}")
    for k, v in data.items():
        _convert(v, hints[k], f"{path}.{k}" if path else k, parsers or {})


def _convert(value: Any, tp: Any, path: str, parsers: Mapping[type, Parser]) -> Any:
    if tp in parsers:
        return parsers[tp](value, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return dataclass_from_dict(tp, value, path=path, parsers=parsers)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for member in (a for a in args if a is not type(None)):
            try:
                return _convert(value, member, path, parsers)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{path}: expected one of {args}, got {value!r}")
    if tp is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ValueError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]", parsers) for i, (v, a) in enumerate(zip(value, args)))
        items = [_convert(v, args[0], f"{path}[{i}]", parsers) if args else v for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {value!r}")
        return value
    return value
