"""Model registry: name -> (config dataclass, model class), built from YAML-friendly dicts.

``build_model("ccnet", options={...})`` turns a plain dict (from YAML) into the model's config
dataclass (nested dataclasses, lists -> tuples where the field is a tuple) and builds it.
Unknown keys and wrong types are errors naming the key path. Entries are imported lazily so
listing models does not import every model module.
"""
from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from typing import Any

from torch import nn

# name -> (module, config class, model class, one-line description)
_MODELS: dict[str, tuple[str, str, str, str]] = {
    "unav": ("avel.models.dense.unav", "UnavConfig", "UnavDetector",
             "UnAV baseline (CVPR 2023): cross-modal pyramid + TDM, dense localization"),
    "ccnet": ("avel.models.dense.ccnet", "CcnetConfig", "CcnetDetector",
              "CCNet (AAAI 2025): CMCC pyramid + MTGC, dense localization"),
    "agva": ("avel.models.ave.agva", "AgvaConfig", "AgvaNet", "AGVA baseline (ECCV 2018), AVE"),
    "ccln": ("avel.models.ave.ccln", "CclnConfig", "CclnNet", "CCLN (TMM 2025), AVE fully/weakly/CML"),
    "avlc": ("avel.models.ave.avlc", "AvlcConfig", "AvlcNet", "Long-term correlation net (TSGA+PTRF), AVE"),
    "loco": ("avel.models.dense.loco", "LocoConfig", "LocoDetector", "LoCo (AAAI 2025): LCC + CDP, dense"),
}


def register_model(name: str, *, module: str, config_class: str, model_class: str, description: str = "") -> None:
    """Add (or replace) a registry entry; the model class takes its config as the only argument."""
    _MODELS[name] = (module, config_class, model_class, description)


def available_models() -> dict[str, str]:
    """Registered names and their one-line descriptions."""
    return {name: entry[3] for name, entry in sorted(_MODELS.items())}


def resolve(name: str) -> tuple[type, type[nn.Module]]:
    """``(config class, model class)`` of a registered model."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(_MODELS)}")
    module, cfg_name, model_name, _ = _MODELS[name]
    mod = importlib.import_module(module)
    return getattr(mod, cfg_name), getattr(mod, model_name)


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return config_from_dict(tp, value, path=path)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path) if len(inner) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ValueError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        conv = [_convert(v, args[0], f"{path}[{i}]") if args else v for i, v in enumerate(value)]
        return conv if origin is list else tuple(conv)
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


def config_from_dict(cls: type, options: dict[str, Any], *, path: str = "model.options") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys / wrong types raise ``ValueError``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}")
    required = sorted(n for n, f in fields.items() if f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING and n not in options)
    if required:
        raise ValueError(f"{path}: missing required key(s) {required} for {cls.__name__}")
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}") for k, v in options.items()}
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples -> lists) suitable for YAML / JSON."""
    def plain(x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    return plain(dataclasses.asdict(cfg))


def build_model(name: str, *, options: dict[str, Any] | None = None) -> nn.Module:
    """Build registered model ``name`` from a dict of its config fields."""
    cfg_cls, model_cls = resolve(name)
    return model_cls(config_from_dict(cfg_cls, dict(options or {}), path=f"model[{name}].options"))


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Build from a checkpoint's ``{"name": ..., "options": {...}}`` model spec."""
    if "name" not in spec:
        raise KeyError(f"model spec needs a 'name' key, got keys {sorted(spec)}")
    return build_model(spec["name"], options=spec.get("options", {}))
