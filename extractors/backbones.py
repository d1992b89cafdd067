"""Backbones by configuration: a YAML file names a family, a model and a sampling plan.

A backbone file (``configs/backbones/<name>.yaml``)::

    name: clip_vit_b16            # the extractor (and store stream) name; defaults to the file stem
    family: clip_image            # a family of avel.extractors.families (see docs/extractors.md)
    description: CLIP ViT-B/16 image tower, one frame per second
    config: {model: ViT-B-16, fps: 1.0}          # fields of the family's config (the "full" preset)
    weights: /ckpt/open_clip_vit_b16.safetensors  # optional default: a local file, a directory or a hub name
    tiny: {}                      # optional overrides of the family's tiny preset (random-init tests only)

:func:`backbone_class` turns it into an :class:`~avel.extractors.base.Extractor` subclass named
``name`` whose ``full`` preset is ``config`` and whose ``tiny`` preset is the family's tiny
preset updated by ``config``'s plan-independent fields and ``tiny``. Everything else (weights,
random init only through ``random_init`` / ``--random-weights``, the recorded digest) is the
family's. Files are found in ``configs/backbones/`` of this repository and in the directories
of the ``AVEL_BACKBONES`` environment variable (``os.pathsep``-separated); a path to a ``.yaml``
file is accepted wherever an extractor name is.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from avel.datasets.config_schema import YamlError, check_fields, dataclass_from_dict, read_yaml
from avel.extractors.base import Extractor

Family = Literal["tv_video", "hf_video", "tv_image", "timm_image", "clip_image", "hf_audio", "torchaudio_audio"]
FAMILIES: tuple[str, ...] = typing.get_args(Family)
# Tiny presets keep the family's small architecture: these config fields are not copied from ``config``.
_ARCH_FIELDS = {"model", "model_cfg", "architecture", "processor", "params", "bundle"}
_CACHE: dict[Path, type[Extractor]] = {}


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed backbone file (see module doc)."""

    name: str
    family: str
    path: Path
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    tiny: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _BackboneFile:
    """The keys of a backbone file, as written (see module doc)."""

    family: Family
    name: str | None = None
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    tiny: dict[str, Any] = field(default_factory=dict)


def backbone_dirs() -> list[Path]:
    """Where backbone files are looked up: this repository's ``configs/backbones`` then ``AVEL_BACKBONES``."""
    dirs = [Path(__file__).resolve().parent.parent / "configs" / "backbones"]
    dirs += [Path(p) for p in os.environ.get("AVEL_BACKBONES", "").split(os.pathsep) if p]
    return [d for d in dirs if d.is_dir()]


def list_backbones() -> dict[str, Path]:
    """``{name: file}`` of every backbone file found (first directory wins)."""
    out: dict[str, Path] = {}
    for d in backbone_dirs():
        for f in sorted(d.glob("*.yaml")):
            out.setdefault(load_backbone_file(f).name, f)
    return out


def load_backbone_file(path: str | Path) -> BackboneSpec:
    """Parse and check a backbone file; errors name the file and the key."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except YamlError as e:
        raise ValueError(f"cannot read backbone file: {e}") from None
    raw = dataclass_from_dict(_BackboneFile, data, source=str(path))
    return BackboneSpec(
        name=raw.name or path.stem,
        family=raw.family,
        path=path.resolve(),
        description=raw.description,
        config=raw.config,
        weights=raw.weights,
        tiny=raw.tiny,
    )


def backbone_class(
    spec_or_path: BackboneSpec | str | Path, family_class: Callable[[str], type[Extractor]]
) -> type[Extractor]:
    """The extractor class of a backbone file (cached per file).

    Args:
        spec_or_path: a parsed file or its path.
        family_class: name -> family class (``avel.extractors.get``; passed in so this module
            does not import the registry, which imports it).
    """
    spec = spec_or_path if isinstance(spec_or_path, BackboneSpec) else load_backbone_file(spec_or_path)
    if spec.path in _CACHE and _CACHE[spec.path].name == spec.name:
        return _CACHE[spec.path]
    family = family_class(spec.family)

    for key, values in (("config", spec.config), ("tiny", spec.tiny)):
        if "preset" in values:
            raise ValueError(f"{spec.path}: {key}.preset: set by the extractor, not by a backbone file")
        check_fields(family.config_cls, values, path=key, source=str(spec.path))
    full = {**family.presets["full"], **spec.config}
    tiny = {
        **family.presets["tiny"],
        **{k: v for k, v in spec.config.items() if k not in _ARCH_FIELDS and k not in family.presets["tiny"]},
        **spec.tiny,
    }
    cls = type(
        f"Backbone_{spec.name}",
        (family,),
        {
            "name": spec.name,
            "presets": {"full": full, "tiny": tiny},
            "family": spec.family,
            "default_weights": spec.weights,
            "backbone_file": str(spec.path),
            "__module__": family.__module__,
            "__doc__": f"{spec.description or spec.name} (backbone file {spec.path}; family {spec.family})",
        },
    )
    try:  # validate the values now, naming the file on error
        family.make_config("full", **spec.config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{spec.path}: config: {e}") from e
    _CACHE[spec.path] = cls
    return cls


def find_backbone(name: str, family_class: Callable[[str], type[Extractor]]) -> type[Extractor] | None:
    """The class of backbone ``name`` (a name found by :func:`list_backbones` or a ``.yaml`` path), else None."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return backbone_class(name, family_class)
    path = list_backbones().get(name)
    return backbone_class(path, family_class) if path else None
