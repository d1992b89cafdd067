"""Folder datasets: every video under a directory, recursively, without labels."""
from __future__ import annotations

import os
from pathlib import Path

from avel.datasets.annotations import AnnotationSet, Sample
from avel.datasets.unav100 import VIDEO_EXTENSIONS, AnnotationError


def load_folder(video_dir: str | os.PathLike, *, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> AnnotationSet:
    """One sample per video file; ``video_id`` = path relative to the root without extension
    ("/" separators). Two files mapping to one id (``a.mp4`` and ``a.mkv``) are an error
    naming both."""
    root = Path(video_dir)
    if not root.is_dir():
        raise AnnotationError(f"{root}: not a directory")
    exts = {e.lower() for e in extensions}
    seen: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() not in exts:
                continue
            vid = p.relative_to(root).with_suffix("").as_posix()
            if vid in seen:
                raise AnnotationError(f"{root}: {seen[vid]} and {p} both map to video id {vid!r}")
            seen[vid] = p
    samples = [Sample(vid, vid, None, None, [], {"path": str(p)}) for vid, p in sorted(seen.items())]
    return AnnotationSet("folder", [], samples, source=root)
