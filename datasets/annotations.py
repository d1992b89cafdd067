"""Dataset-independent annotation types.

Every dataset parser (UnAV-100, AVE, folder) returns an :class:`AnnotationSet`: a list of
samples, each pointing at one video of the feature store. UnAV-100 has one sample per video;
AVE has one sample per annotation ROW (a video may appear on several rows), so a sample has
its own ``sample_id`` besides the ``video_id`` that keys the store.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUBSETS = ("train", "validation", "test")


class AnnotationError(ValueError):
    """An annotation file cannot be loaded; the message names the file, the location
    (``line 17``, ``database/<vid>/annotations[2]``) and what was expected."""


@dataclass(frozen=True)
class Segment:
    """One labelled event, ``[start_s, end_s)`` in seconds from the video start."""

    start_s: float
    end_s: float
    label: str
    label_id: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Sample:
    """One training / evaluation item.

    Args:
        sample_id: unique within the set (UnAV-100: the video id; AVE: ``row-<index>``).
        video_id: key of the video in the feature store and of its file on disk.
        duration_s: annotated duration, or None when unknown (folder datasets).
        subset: ``"train"``, ``"validation"``, ``"test"`` or None.
        segments: the labelled events, possibly empty.
        extra: dataset-specific fields (AVE: row index, quality).
    """

    sample_id: str
    video_id: str
    duration_s: float | None
    subset: str | None
    segments: list[Segment] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class AnnotationSet:
    """Samples of one dataset plus its class list (``classes[label_id] == label``)."""

    dataset: str
    classes: list[str]
    samples: list[Sample]
    source: Path | None = None
    background_id: int | None = None  # AVE: 28; None for datasets without a background class

    def __post_init__(self) -> None:
        self._by_id = {s.sample_id: s for s in self.samples}
        if len(self._by_id) != len(self.samples):
            raise ValueError(f"{self.source}: duplicate sample ids")

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, sample_id: str) -> Sample:
        return self._by_id[sample_id]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, name: str | None) -> list[Sample]:
        """Samples of one subset (``None``: all)."""
        if name is None:
            return list(self.samples)
        if name not in SUBSETS:
            raise ValueError(f"unknown subset {name!r}; expected one of {SUBSETS}")
        return [s for s in self.samples if s.subset == name]

    def video_ids(self) -> list[str]:
        """Unique video ids in first-appearance order (what extraction needs)."""
        return list(dict.fromkeys(s.video_id for s in self.samples))

    def label_id(self, label: str) -> int:
        try:
            return self.classes.index(label)
        except ValueError:
            raise KeyError(f"unknown label {label!r}; known: {len(self.classes)} classes") from None


def unsafe_id_reason(video_id: str) -> str | None:
    """Why ``video_id`` cannot be used, or None when it is safe.

    Ids are store keys, not paths, but users export them as file names; an id containing a
    path separator component ``..``, an absolute path, NUL or control characters is refused.
    Leading ``-`` / ``_``, spaces and unicode are fine (UnAV-100 has 1,336 such ids).
    """
    if not video_id:
        return "empty video id"
    if "\x00" in video_id or any(unicodedata.category(c) == "Cc" for c in video_id):
        return "video id contains control characters"
    if video_id.startswith("/") or os.path.isabs(video_id):
        return "video id is an absolute path"
    parts = video_id.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts):
        return "video id would escape the store directory ('..' or '.' component)"
    return None
