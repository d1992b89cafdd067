"""The extractor registry: name -> class, filled by one line per backbone in ``_REGISTRY``.

Classes are imported lazily (``avel extractors list`` and ``get`` import only what they need),
so a backbone with heavy imports costs nothing until it is used. To add a backbone, write
``extractors/<file>.py`` with an :class:`avel.extractors.base.Extractor` subclass and add one
line ``"name": ("avel.extractors.<file>", "ClassName")`` below (see docs/extractors.md).
A name may also be registered at run time with :func:`register` (plugins, tests). Names not in
the table are looked up as backbone files (``configs/backbones/<name>.yaml``, ``AVEL_BACKBONES``, or
a ``.yaml`` path; :mod:`avel.extractors.backbones`).
"""

from __future__ import annotations

import importlib

from avel.extractors.base import Extractor

# name -> (module, class name)
_REGISTRY: dict[str, tuple[str, str]] = {
    "i3d": ("avel.extractors.i3d", "I3DTwoStream"),
    "i3d_rgb": ("avel.extractors.i3d", "I3DRgb"),
    "i3d_flow": ("avel.extractors.i3d", "I3DFlow"),
    "vggish": ("avel.extractors.vggish", "VGGishExtractor"),
    "vgg19": ("avel.extractors.vgg19", "VGG19Extractor"),
    "onepeace_image": ("avel.extractors.onepeace", "OnePeaceImageExtractor"),
    "onepeace_audio": ("avel.extractors.onepeace", "OnePeaceAudioExtractor"),
    "onepeace_video_k400": ("avel.extractors.onepeace", "OnePeaceVideoK400Extractor"),
    # backbone families (configured by name; configs/backbones/*.yaml, avel.extractors.backbones)
    "tv_video": ("avel.extractors.families.video", "TorchvisionVideo"),
    "hf_video": ("avel.extractors.families.video", "HFVideo"),
    "tv_image": ("avel.extractors.families.image", "TorchvisionImage"),
    "timm_image": ("avel.extractors.families.image", "TimmImage"),
    "clip_image": ("avel.extractors.families.image", "OpenClipImage"),
    "hf_audio": ("avel.extractors.families.audio", "HFAudio"),
    "torchaudio_audio": ("avel.extractors.families.audio", "TorchaudioAudio"),
}

_RUNTIME: dict[str, type[Extractor]] = {}


def register(cls: type[Extractor]) -> type[Extractor]:
    """Register ``cls`` under ``cls.name`` at run time (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Extractor)) or not cls.name:
        raise TypeError(f"register needs an Extractor subclass with a non-empty name, got {cls!r}")
    if cls.name in _REGISTRY or (cls.name in _RUNTIME and _RUNTIME[cls.name] is not cls):
        raise ValueError(f"extractor name {cls.name!r} is already registered")
    _RUNTIME[cls.name] = cls
    return cls


def list_extractors() -> list[str]:
    """All registered extractor names and backbone-file names (:mod:`avel.extractors.backbones`), sorted."""
    from avel.extractors.backbones import list_backbones

    return sorted(set(_REGISTRY) | set(_RUNTIME) | set(list_backbones()))


def get(name: str) -> type[Extractor]:
    """The extractor class registered as ``name``."""
    if name in _RUNTIME:
        return _RUNTIME[name]
    if name not in _REGISTRY:
        from avel.extractors.backbones import find_backbone

        backbone = find_backbone(name, get)
        if backbone is not None:
            if backbone.name in _REGISTRY or backbone.name in _RUNTIME:
                raise ValueError(
                    f"backbone file {getattr(backbone, 'backbone_file', name)}: name {backbone.name!r} is a built-in "
                    f"extractor; pick another name"
                )
            return backbone
        raise KeyError(f"unknown extractor {name!r}; registered: {', '.join(list_extractors())}")
    module, attr = _REGISTRY[name]
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Extractor)) or cls.name != name:
        raise TypeError(f"registry entry {name!r} -> {module}.{attr} is not an Extractor named {name!r}")
    return cls
