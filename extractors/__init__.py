"""avel.extractors: feature extractors behind one interface and one registry.

``get(name)`` returns an :class:`Extractor` subclass; ``Cls.from_checkpoint(path, device=...)``
a ready eval module; ``list_extractors()`` the registered names. See docs/extractors.md and
:mod:`avel.extractors.base` for the interface.
"""

from avel.extractors.base import (
    NO_WEIGHTS,
    RANDOM_WEIGHTS,
    CheckpointReport,
    DecodeSpec,
    Extractor,
    ExtractorConfig,
    Windows,
    cut_audio_windows,
    cut_video_windows,
)
from avel.extractors.registry import get, list_extractors, register
from avel.extractors.weights import CheckpointMismatch, sha256_file

__all__ = [
    "NO_WEIGHTS",
    "RANDOM_WEIGHTS",
    "CheckpointMismatch",
    "CheckpointReport",
    "DecodeSpec",
    "Extractor",
    "ExtractorConfig",
    "Windows",
    "cut_audio_windows",
    "cut_video_windows",
    "get",
    "list_extractors",
    "register",
    "sha256_file",
]
