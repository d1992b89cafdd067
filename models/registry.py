"""Model registry: name -> (config dataclass, model class), built from YAML-friendly dicts.

``build_model("ccnet", options={...})`` turns a plain dict (from YAML) into the model's config
dataclass (nested dataclasses, lists -> tuples where the field is a tuple) and builds it.
Unknown keys and wrong types are errors naming the key path. Entries are imported lazily so
listing models does not import every model module.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from torch import nn

from avel.datasets.config_schema import dataclass_from_dict

# name -> (module, config class, model class, one-line description)
_MODELS: dict[str, tuple[str, str, str, str]] = {
    "unav": (
        "avel.models.dense.unav",
        "UnavConfig",
        "UnavDetector",
        "UnAV baseline (CVPR 2023): cross-modal pyramid + TDM, dense localization",
    ),
    "ccnet": (
        "avel.models.dense.ccnet",
        "CcnetConfig",
        "CcnetDetector",
        "CCNet (AAAI 2025): CMCC pyramid + MTGC, dense localization",
    ),
    "agva": ("avel.models.ave.agva", "AgvaConfig", "AgvaNet", "AGVA baseline (ECCV 2018), AVE"),
    "ccln": ("avel.models.ave.ccln", "CclnConfig", "CclnNet", "CCLN (TMM 2025), AVE fully/weakly/CML"),
    "avlc": ("avel.models.ave.avlc", "AvlcConfig", "AvlcNet", "Long-term correlation net (TSGA+PTRF), AVE"),
    "loco": ("avel.models.dense.loco", "LocoConfig", "LocoDetector", "LoCo (AAAI 2025): LCC + CDP, dense"),
}


# Inputs of the probe of ``avel models info`` (input_dims = (visual_dim, audio_dim), seq_len T, num_classes C):
# the features of the setting each model's paper reports its size in.
DENSE_PROBE = {"input_dims": (1536, 1536), "seq_len": 256, "num_classes": 100}  # UnAV-100, ONE-PEACE, LoCo table 3
AVE_PROBE = {"input_dims": (512, 128), "seq_len": 10, "num_classes": 29}  # AVE: VGG-19 pool5 7x7x512, VGGish 128
_PROBES: dict[str, dict[str, Any]] = {
    "unav": DENSE_PROBE,
    "ccnet": DENSE_PROBE,
    "loco": DENSE_PROBE,
    "agva": AVE_PROBE,
    "ccln": AVE_PROBE,
    "avlc": AVE_PROBE,
}


def register_model(
    name: str,
    *,
    module: str,
    config_class: str,
    model_class: str,
    description: str = "",
    probe: dict[str, Any] | None = None,
) -> None:
    """Add (or replace) a registry entry; the model class takes its config as the only argument.

    ``probe``: default inputs of ``avel models info`` (keys of :data:`DENSE_PROBE`; default that).
    """
    _MODELS[name] = (module, config_class, model_class, description)
    _PROBES[name] = dict(probe or DENSE_PROBE)


def probe_inputs(name: str) -> dict[str, Any]:
    """Default ``input_dims``, ``seq_len`` and ``num_classes`` of ``avel models info NAME``."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(_MODELS)}")
    return dict(_PROBES.get(name, DENSE_PROBE))


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


def config_from_dict(cls: type, options: dict[str, Any], *, path: str = "model.options") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown or missing keys and wrong types raise
    ``ValueError`` naming the key path (:func:`avel.datasets.config_schema.dataclass_from_dict`)."""
    return dataclass_from_dict(cls, options, path=path)


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
