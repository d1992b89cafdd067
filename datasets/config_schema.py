"""The one way avel validates configuration: a nested dict (YAML file, JSON, a checkpoint's
spec, CLI options) -> config dataclass, checked by pydantic.

Every config of the package is a plain (mostly frozen) dataclass: extractor configs
(:func:`avel.extractors.base.merge_config`), model configs (``model.options``,
:func:`avel.models.registry.config_from_dict`), the training config
(:func:`avel.training.config.load_config`), the extraction job (``ExtractConfig.from_yaml``) and
the cluster section. :func:`dataclass_from_dict` builds one from a mapping through a pydantic
schema derived from the dataclass annotations (cached per class): unknown keys
(``extra='forbid'``), missing required keys, values of the wrong type and values the
dataclass's ``__post_init__`` refuses are one :class:`ConfigValueError` whose message names the
source (file or CLI option), the key path and what was expected::

    configs/x.yaml: optim.lr: expected a number, got 'fast'

so a typo never falls back to a default silently. Keyword construction, attribute access,
``dataclasses.replace`` and ``asdict`` stay those of the dataclass.

Types (strict enough for YAML): ``bool`` only true / false; ``int`` not a bool, a float or a
string; ``float`` a number (an int is converted); ``str`` a string; ``list[T]``, ``tuple[T, ...]``
and fixed ``tuple[A, B]`` from a list or tuple; ``dict[K, V]`` a mapping (values checked);
``Literal[...]`` one of its values; ``X | None``; other unions take the first member that
accepts the value; nested dataclasses recursively (an instance passes as it is; an empty
section, ``None``, means the defaults); ``Any`` and other classes unchecked.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, Required, TypedDict


class ConfigError(ValueError):
    """A configuration file, job file or option value is invalid (the user's settings, not the data)."""


class ConfigValueError(ValueError):
    """A mapping does not fit a config dataclass (:func:`dataclass_from_dict`): the message names
    the source, the key path and what was expected. A ``ValueError`` (not a :class:`ConfigError`):
    the caller decides whether it is the user's settings (a config file, an option: exit code 2)
    or bad input data (a checkpoint's spec: exit code 3)."""


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


class Sources:
    """Where the keys of one merged mapping came from: a file, with some keys set on the command
    line (``avel train cfg.yaml --set optim.lr=3e-4``): a message about a key names the option
    that set it (or set a section above it), any other the file."""

    def __init__(self, file: str, options: Mapping[str, str] | None = None) -> None:
        self.file = file
        self.options = dict(options or {})  # dotted key -> the option that set it ("--set optim.lr=x")

    def __call__(self, key_path: str) -> str:
        for key, option in self.options.items():
            if key_path == key or key_path.startswith((key + ".", key + "[")):
                return f"{option} (over {self.file})"
        return self.file

    def __str__(self) -> str:
        return self.file


Source = str | Sources | None
"""``source`` of :func:`dataclass_from_dict`: a file or option name, or :class:`Sources`."""


def dataclass_from_dict(cls: type, data: Any, *, path: str = "", source: Source = None) -> Any:
    """Build dataclass ``cls`` from ``data`` (a mapping), checking keys and value types (pydantic).

    Args:
        cls: the dataclass.
        data: its fields as a mapping; an instance of ``cls`` is returned as it is.
        path: key path of ``data`` for messages (``"optim"``, ``"model[loco].options"``);
            ``""`` is the top level.
        source: where ``data`` came from (a file, ``--set key=value``, :class:`Sources`);
            prefixes the message.

    Raises:
        ConfigValueError: ``"<source>: <key path>: <what was expected>, got <value>"``.
    """
    if isinstance(data, cls):
        return data
    try:
        return _adapter(cls, False).validate_python(data)
    except ValidationError as e:
        raise ConfigValueError(_message(e, cls, path, source)) from None


def check_fields(cls: type, data: Any, *, path: str = "", source: Source = None) -> None:
    """Check that ``data`` sets only fields of dataclass ``cls``, each with a value of its type.

    The checks of :func:`dataclass_from_dict` without building ``cls``: fields it leaves out are
    not an error (a config before the fields derived from the data are filled in). Raises
    :class:`ConfigValueError` naming the key path.
    """
    try:
        _adapter(cls, True).validate_python(data)
    except ValidationError as e:
        raise ConfigValueError(_message(e, cls, path, source)) from None


def field_names(cls: type) -> list[str]:
    """The keys a mapping for dataclass ``cls`` may set (its ``init`` fields), sorted."""
    return sorted(f.name for f in dataclasses.fields(cls) if f.init)


# -- the pydantic schema of a dataclass ------------------------------------------------------


@functools.cache
def _adapter(cls: type, partial: bool) -> TypeAdapter:
    return TypeAdapter(_dataclass_type(cls, partial))


def _dataclass_type(cls: type, partial: bool = False) -> Any:
    """A mapping of the init fields of ``cls`` (a ``TypedDict`` with ``extra='forbid'``) turned
    into ``cls(**fields)``; an instance of ``cls`` passes unchanged. ``partial``: every field
    optional and no instance built (:func:`check_fields`)."""
    hints = typing.get_type_hints(cls, include_extras=False)
    items: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        tp = _field_type(hints[f.name])
        items[f.name] = Required[tp] if required and not partial else NotRequired[tp]
    keys = TypedDict(cls.__name__, items)  # type: ignore[misc]  # functional form
    keys.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]

    def build(value: Any, handler: Any) -> Any:
        if isinstance(value, cls):
            return value
        if value is None:  # an empty YAML section (``cluster:``): the defaults
            value = {}
        if not isinstance(value, Mapping):
            raise PydanticCustomError(
                "config_mapping",
                "expected a mapping for {cls}, got {kind} {value}",
                {"cls": cls.__name__, "kind": type(value).__name__, "value": repr(value)},
            )
        fields = handler(dict(value))
        return fields if partial else cls(**fields)  # __post_init__'s ValueError: a value_error

    return Annotated[keys, WrapValidator(build)]


def _field_type(tp: Any) -> Any:
    """The pydantic type that checks a value of annotation ``tp`` by the rules of the module doc."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_type(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        inner = _field_type(members[0]) if len(members) == 1 else _first_of(members)
        return inner | None if len(members) < len(args) else inner
    if origin is typing.Literal:
        return tp
    if origin is list:
        return list[_field_type(args[0]) if args else Any]  # type: ignore[misc]
    if origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return tuple[_field_type(args[0]) if args else Any, ...]  # type: ignore[misc]
        fixed: Any = tuple[tuple(_field_type(a) for a in args)]  # type: ignore[misc]
        return Annotated[fixed, WrapValidator(functools.partial(_check_length, len(args)))]
    if origin is dict or tp is dict:
        return dict[_field_type(args[0]), _field_type(args[1])] if args else dict  # type: ignore[misc]
    return {bool: StrictBool, int: StrictInt, float: StrictFloat, str: StrictStr}.get(tp, Any)


def _check_length(n: int, value: Any, handler: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(value) != n:
        raise PydanticCustomError("config_length", "expected {n} items, got {m}", {"n": n, "m": len(value)})
    return handler(value)


def _first_of(members: list[Any]) -> Any:
    """A union other than ``X | None``: the first member that accepts the value; else the first
    member's error."""
    adapters = [TypeAdapter(_field_type(m)) for m in members]

    def validate(value: Any) -> Any:
        first: ValidationError | None = None
        for adapter in adapters:
            try:
                return adapter.validate_python(value)
            except ValidationError as e:
                first = first or e
        assert first is not None
        raise PydanticCustomError("config_union", "{message}", {"message": _message(first, None, "", None, bare=True)})

    return Annotated[Any, PlainValidator(validate)]


# -- messages --------------------------------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
}


def _message(e: ValidationError, cls: type | None, path: str, source: Source, *, bare: bool = False) -> str:
    """One line for the first problem of ``e`` (unknown and missing keys of one mapping grouped):
    ``"<source>: <key path>: <what was expected>, got <value>"``."""
    errors = e.errors(include_url=False)
    first = errors[0]
    loc = first["loc"]
    kind = first["type"]
    told = 1
    if kind in ("extra_forbidden", "missing") and loc and isinstance(loc[-1], str):
        parent = loc[:-1]
        keys = sorted(str(x["loc"][-1]) for x in errors if x["type"] == kind and x["loc"][:-1] == parent)
        told = len(keys)
        owner = _owner(cls, parent)
        name = f" for {owner.__name__}" if owner else ""
        if kind == "extra_forbidden":
            text = f"unknown key(s) {keys}{name}"
            text += f"; expected some of {field_names(owner)}" if owner else ""
        else:
            text = f"missing required key(s) {keys}{name}"
        loc = parent
    elif kind in _EXPECTED:
        value = first["input"]
        shown = f"{type(value).__name__} {value!r}" if kind in ("list_type", "tuple_type", "dict_type") else repr(value)
        text = f"expected {_EXPECTED[kind]}, got {shown}"
    elif kind == "literal_error":
        text = f"expected {first['ctx']['expected']}, got {first['input']!r}"
    elif kind == "value_error":
        text = str(first["ctx"]["error"])
    else:
        text = first["msg"]
    where = key_path(path, loc)
    if bare:
        return f"{where}: {text}" if where else text
    more = len(errors) - told
    tail = f" (and {more} more problem(s))" if more else ""
    origin = source(key_path(path, first["loc"])) if isinstance(source, Sources) else source
    prefix = f"{origin}: " if origin else ""
    if not where and kind == "value_error":  # __post_init__ of the top-level class names its keys
        return f"{prefix}{text}{tail}"
    return f"{prefix}{where or 'top level'}: {text}{tail}"


def key_path(path: str, loc: tuple | list) -> str:
    """``"model.options"`` + ``("sizes", 1)`` -> ``"model.options.sizes[1]"``."""
    out = path
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _owner(cls: type | None, loc: tuple) -> type | None:
    """The dataclass whose mapping sits at key path ``loc`` below ``cls`` (for messages)."""
    for key in loc:
        if cls is None or isinstance(key, int) or not dataclasses.is_dataclass(cls):
            return None
        tp = typing.get_type_hints(cls).get(str(key))
        members = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        cls = members[0] if len(members) == 1 and isinstance(members[0], type) else None
    return cls if cls is not None and dataclasses.is_dataclass(cls) else None
