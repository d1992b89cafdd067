"""Folder datasets (every video under a directory, without labels) and the loader dispatch."""

from __future__ import annotations

import os
from pathlib import Path

from avel.datasets.annotations import AnnotationError, AnnotationSet, Sample
from avel.datasets.unav100 import VIDEO_EXTENSIONS

__all__ = ["DATASETS", "load_folder", "load_dataset"]

DATASETS = ("unav100", "ave", "folder")


def video_files(root: Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[tuple[str, Path]]:
    """``(video_id, path)`` of every file under ``root`` whose extension (any case) is in
    ``extensions``, recursively, sorted by path; ids may repeat (see :func:`load_folder`).
    Hidden files and folders are included; symlinked folders are not followed."""
    exts = {e.lower() for e in extensions}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() in exts:
                found.append((p.relative_to(root).with_suffix("").as_posix(), p))
    return found


def load_folder(video_dir: str | os.PathLike, *, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> AnnotationSet:
    """One unlabelled sample per video file under ``video_dir``.

    Args:
        video_dir: root folder, searched recursively.
        extensions: accepted extensions with their dot, compared case-insensitively.

    Returns:
        dataset ``"folder"``, samples sorted by ``video_id`` = path relative to the root without
        its extension, ``/``-separated; ``duration_s`` and ``subset`` None, no classes,
        ``extra = {"path": str}``.

    Raises:
        AnnotationError: not a directory, or two files mapping to one id (``a.mp4`` and
            ``a.mkv``), naming both.
    """
    root = Path(video_dir)
    if not root.is_dir():
        raise AnnotationError(f"{root}: directory: not a directory")
    seen: dict[str, Path] = {}
    for vid, p in video_files(root, extensions):
        if vid in seen:
            raise AnnotationError(f"{root}: {seen[vid]} and {p} both map to video id {vid!r}; keep one")
        seen[vid] = p
    samples = [Sample(vid, vid, None, None, [], {"path": str(p)}) for vid, p in sorted(seen.items())]
    return AnnotationSet("folder", [], samples, source=root)


def load_dataset(
    name: str,
    annotations: str | os.PathLike | None = None,
    *,
    video_dir: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    split: str = "standard",
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
) -> AnnotationSet:
    """Load any supported dataset by name.

    Args:
        name: ``"unav100"`` | ``"ave"`` | ``"folder"``.
        annotations: the annotation file (UnAV-100 JSON, AVE ``Annotations.txt``); for
            ``folder`` the video directory when ``video_dir`` is not given.
        video_dir: folder datasets: the root to scan (other datasets ignore it; use
            :func:`~avel.datasets.unav100.find_video_files` to map their ids to files).
        split_dir: AVE only: folder of the split files.
        split: AVE only: ``"standard"`` or ``"match"``.
        extensions: folder datasets: accepted video extensions.

    Raises:
        ValueError: unknown ``name`` or a missing required argument.
        AnnotationError: from the loader.
    """
    if name == "folder":
        root = video_dir if video_dir is not None else annotations
        if root is None:
            raise ValueError("folder dataset: give the video directory (video_dir or annotations)")
        return load_folder(root, extensions=extensions)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    if annotations is None:
        raise ValueError(f"{name} dataset: the annotation file is required")
    if name == "unav100":
        from avel.datasets.unav100 import load_unav100

        return load_unav100(annotations)
    from avel.datasets.ave import load_ave

    return load_ave(annotations, split_dir=split_dir, split=split)
