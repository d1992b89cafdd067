"""UnAV-100 annotations: the official JSON, its writer, and video-file lookup.

Format (``unav100_annotations.json``)::

    {"version": "unav100",
     "database": {video_id: {"duration": s, "subset": "train" | "validation" | "test",
                             "annotations": [{"segment": [start_s, end_s], "label": str, "label_id": int}]}}}

Classes are ordered by ``label_id`` (the release's ids are NOT alphabetical). Video ids may
start with ``-`` or ``_`` (1,336 of them): they are never passed where they could be read as
options, and file lookup uses exact names.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from avel.datasets.annotations import SUBSETS, AnnotationSet, Sample, Segment

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


class AnnotationError(ValueError):
    """An annotation file cannot be loaded; the message names the file and the location."""


def _fail(path: Path, where: str, message: str) -> AnnotationError:
    return AnnotationError(f"{path}: {where}: {message}")


def load_unav100(path: str | os.PathLike) -> AnnotationSet:
    """Parse the official UnAV-100 annotation JSON into an :class:`AnnotationSet`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise _fail(path, "top level", 'expected an object with a "database" mapping')
    names: dict[int, str] = {}
    samples: list[Sample] = []
    for vid, entry in database.items():
        where = f"database/{vid}"
        if not isinstance(entry, dict):
            raise _fail(path, where, "expected an object")
        for key in ("duration", "subset", "annotations"):
            if key not in entry:
                raise _fail(path, where, f"missing key {key!r}")
        if entry["subset"] not in SUBSETS:
            raise _fail(path, f"{where}/subset", f"{entry['subset']!r} is not one of {SUBSETS}")
        try:
            duration = float(entry["duration"])
        except (TypeError, ValueError):
            raise _fail(path, f"{where}/duration", f"expected a number, got {entry['duration']!r}") from None
        segments = []
        for k, ann in enumerate(entry["annotations"]):
            w = f"{where}/annotations[{k}]"
            try:
                start, end = (float(x) for x in ann["segment"])
                label, label_id = str(ann["label"]), int(ann["label_id"])
            except (KeyError, TypeError, ValueError):
                raise _fail(path, w, 'expected {"segment": [start_s, end_s], "label": str, "label_id": int}') from None
            if names.setdefault(label_id, label) != label:
                raise _fail(path, w, f"label_id {label_id} is {label!r} here but {names[label_id]!r} elsewhere")
            segments.append(Segment(start, end, label, label_id))
        samples.append(Sample(vid, vid, duration, entry["subset"], segments))
    ids = sorted(names)
    if ids != list(range(len(ids))):
        raise _fail(path, "database", f"label_id values must be 0..C-1 without gaps, got {ids[:5]}...{ids[-5:]}")
    by_label: dict[str, int] = {}
    for i, name in names.items():
        if by_label.setdefault(name, i) != i:
            raise _fail(path, "database", f"label {name!r} has two label_ids ({by_label[name]} and {i})")
    return AnnotationSet("unav100", [names[i] for i in ids], samples, source=path)


def write_unav100(annset: AnnotationSet, path: str | os.PathLike) -> None:
    """Write ``annset`` in the official format (atomically: temp file + rename)."""
    path = Path(path)
    database = {}
    for s in annset:
        database[s.video_id] = {
            "duration": s.duration_s,
            "subset": s.subset,
            "annotations": [{"segment": [g.start_s, g.end_s], "label": g.label, "label_id": g.label_id}
                            for g in s.segments],
        }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"version": "unav100", "database": database}), encoding="utf-8")
    os.replace(tmp, path)


def find_video_files(video_ids: Iterable[str], video_dir: str | os.PathLike,
                     extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> tuple[dict[str, Path], list[str]]:
    """Map ids to ``<video_dir>/<id><ext>`` (first extension that exists); returns (found, missing)."""
    video_dir = Path(video_dir)
    present = {entry.name for entry in os.scandir(video_dir)} if video_dir.is_dir() else set()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for vid in video_ids:
        for ext in extensions:
            if f"{vid}{ext}" in present:
                found[vid] = video_dir / f"{vid}{ext}"
                break
        else:
            missing.append(vid)
    return found, missing
