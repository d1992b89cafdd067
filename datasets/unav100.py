"""UnAV-100 annotations: the official JSON, its writer, and video-file lookup.

Format (``unav100_annotations.json``)::

    {"version": "unav100",
     "database": {video_id: {"duration": s, "subset": "train" | "validation" | "test",
                             "annotations": [{"segment": [start_s, end_s], "label": str, "label_id": int}]}}}

Classes are ordered by ``label_id`` (the release's ids are NOT alphabetical); every label must
map to exactly one id and the ids must be ``0..C-1`` without gaps. Video ids may start with
``-`` or ``_`` (1,336 of them): lookup compares exact directory entries, never globs, never
passes an id where it could be read as an option, and never skips names starting with a dot.

:func:`load_unav100` rejects files whose STRUCTURE is wrong (bad JSON, missing keys, wrong
types, unknown subset, inconsistent label ids, a video id twice) with one
:class:`AnnotationError`; it accepts semantically odd events (start >= end, past the
duration, duplicates): :func:`avel.datasets.validate.validate` reports those, and all
problems at once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

from avel.datasets.annotations import SUBSETS, AnnotationError, AnnotationSet, Sample, Segment
from avel.datasets.fileio import atomic_write_text

__all__ = [
    "AnnotationError",
    "VIDEO_EXTENSIONS",
    "load_unav100",
    "write_unav100",
    "find_video_files",
    "find_duplicate_video_files",
    "read_json_with_duplicates",
    "json_number",
    "json_type",
]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
VERSION = "unav100"


class JsonObject(dict):
    """A JSON object that remembers keys it saw more than once (``duplicate_keys``);
    ``json`` itself silently keeps the last value, which would hide a repeated video id."""

    duplicate_keys: list[str]


def _object_pairs(pairs: list[tuple[str, object]]) -> JsonObject:
    obj = JsonObject()
    obj.duplicate_keys = []
    for key, value in pairs:
        if key in obj:
            obj.duplicate_keys.append(key)
        obj[key] = value
    return obj


def read_json_with_duplicates(path: Path):
    """``json.loads`` of ``path`` whose objects are :class:`JsonObject` (raises
    ``OSError``, ``UnicodeDecodeError`` or ``json.JSONDecodeError``)."""
    return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_object_pairs)


def json_type(x) -> str:
    """The JSON name of ``x``'s type (for messages)."""
    for t, name in (
        (bool, "boolean"),
        (dict, "object"),
        (list, "array"),
        (str, "string"),
        (int, "number"),
        (float, "number"),
    ):
        if isinstance(x, t):
            return name
    return "null" if x is None else type(x).__name__


def _fail(path: Path, where: str, message: str) -> AnnotationError:
    return AnnotationError(f"{path}: {where}: {message}")


def json_number(x) -> float | None:
    """``x`` as a finite float, or None when it is not a JSON number (bools excluded)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def load_unav100(path: str | os.PathLike) -> AnnotationSet:
    """Parse the official UnAV-100 annotation JSON.

    Args:
        path: the JSON file (``unav100_annotations.json``).

    Returns:
        dataset ``"unav100"``: one :class:`Sample` per video (``sample_id == video_id``) in file
        order, ``classes[label_id] == label``.

    Raises:
        AnnotationError: on the first structural problem, naming the file and the key path.
    """
    path = Path(path)
    try:
        data = read_json_with_duplicates(path)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(path, "file", f"cannot read: {e}") from e
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, JsonObject):  # every object read_json_with_duplicates returns is one
        raise _fail(path, "top level", 'expected an object {"version": ..., "database": {video_id: {...}}}')
    if database.duplicate_keys:
        raise _fail(path, f"database/{database.duplicate_keys[0]}", "video id appears more than once")
    names: dict[int, str] = {}
    ids_of: dict[str, int] = {}
    samples: list[Sample] = []
    for vid, entry in database.items():
        where = f"database/{vid}"
        if not vid:
            raise _fail(path, where, "empty video id")
        if not isinstance(entry, dict):
            raise _fail(path, where, 'expected an object {"duration", "subset", "annotations"}')
        for key in ("duration", "subset", "annotations"):
            if key not in entry:
                raise _fail(path, where, f"missing key {key!r}")
        if entry["subset"] not in SUBSETS:
            raise _fail(path, f"{where}/subset", f"expected one of {list(SUBSETS)}, got {entry['subset']!r}")
        duration = json_number(entry["duration"])
        if duration is None or duration <= 0:
            raise _fail(path, f"{where}/duration", f"expected a positive number, got {entry['duration']!r}")
        if not isinstance(entry["annotations"], list):
            raise _fail(path, f"{where}/annotations", f"expected an array, got {json_type(entry['annotations'])}")
        segments = []
        for k, ann in enumerate(entry["annotations"]):
            w = f"{where}/annotations[{k}]"
            seg = ann.get("segment") if isinstance(ann, dict) else None
            label = ann.get("label") if isinstance(ann, dict) else None
            label_id = ann.get("label_id") if isinstance(ann, dict) else None
            if not (
                isinstance(seg, list)
                and len(seg) == 2
                and all(json_number(x) is not None for x in seg)
                and isinstance(label, str)
                and label
                and isinstance(label_id, int)
                and not isinstance(label_id, bool)
                and label_id >= 0
            ):
                raise _fail(
                    path,
                    w,
                    'expected {"segment": [start_s, end_s], "label": non-empty str, '
                    f'"label_id": int >= 0}}, got {ann!r}',
                )
            if names.setdefault(label_id, label) != label:
                raise _fail(path, w, f"label_id {label_id} is {label!r} here but {names[label_id]!r} elsewhere")
            if ids_of.setdefault(label, label_id) != label_id:
                raise _fail(path, w, f"label {label!r} has label_id {label_id} here but {ids_of[label]} elsewhere")
            segments.append(Segment(float(seg[0]), float(seg[1]), label, label_id))
        samples.append(Sample(vid, vid, duration, entry["subset"], segments))
    ids = sorted(names)
    if ids != list(range(len(ids))):
        gaps = sorted(set(range(ids[-1] + 1)) - set(ids))
        raise _fail(path, "database", f"label_id values must be 0..C-1 without gaps; missing {gaps[:10]}")
    return AnnotationSet("unav100", [names[i] for i in ids], samples, source=path)


def write_unav100(annset: AnnotationSet, path: str | os.PathLike) -> None:
    """Write ``annset`` in the official format, atomically (temp file in the same folder +
    rename), so a reader never sees a half-written file.

    Args:
        annset: samples with a duration and a subset; one entry per sample, keyed by
            ``video_id`` (which must therefore be unique); ``label_id`` must index ``classes``.
        path: output JSON file; its folder must exist.

    Raises:
        ValueError: a sample that the format cannot hold, naming the sample.
    """
    path = Path(path)
    database: dict[str, dict] = {}
    for s in annset:
        if s.video_id in database:
            raise ValueError(f"{path}: video id {s.video_id!r} appears on two samples; UnAV-100 has one per video")
        if s.subset not in SUBSETS or s.duration_s is None:
            raise ValueError(
                f"{path}: sample {s.sample_id!r} needs a subset in {list(SUBSETS)} and a duration, "
                f"got subset={s.subset!r}, duration_s={s.duration_s!r}"
            )
        for g in s.segments:
            if not 0 <= g.label_id < len(annset.classes) or annset.classes[g.label_id] != g.label:
                raise ValueError(
                    f"{path}: sample {s.sample_id!r}: label {g.label!r} with id {g.label_id} "
                    f"does not match the class list"
                )
        database[s.video_id] = {
            "duration": s.duration_s,
            "subset": s.subset,
            "annotations": [
                {"segment": [g.start_s, g.end_s], "label": g.label, "label_id": g.label_id} for g in s.segments
            ],
        }
    atomic_write_text(path, json.dumps({"version": VERSION, "database": database}))


def find_video_files(
    video_ids: Iterable[str], video_dir: str | os.PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> tuple[dict[str, Path], list[str]]:
    """Map each id to ``<video_dir>/<id><ext>``.

    The directory is listed once and names are compared exactly (no globbing, so ids with
    ``-``, ``_``, ``[`` or a leading ``.`` are safe); when several extensions exist the first in
    ``extensions`` wins here; :func:`find_duplicate_video_files` lists those ids (extraction
    rejects them, ``avel validate`` reports them).

    Args:
        video_ids: ids to look up (duplicates are looked up once).
        video_dir: flat folder of videos; a missing folder means every id is missing.
        extensions: accepted extensions with their dot, in order of preference.

    Returns:
        ``(found, missing)``: ``found[id]`` is the path, ``missing`` the ids without a file, in
        input order.
    """
    video_dir = Path(video_dir)
    present = {entry.name for entry in os.scandir(video_dir) if entry.is_file()} if video_dir.is_dir() else set()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for vid in dict.fromkeys(video_ids):
        for ext in extensions:
            if f"{vid}{ext}" in present:
                found[vid] = video_dir / f"{vid}{ext}"
                break
        else:
            missing.append(vid)
    return found, missing


def find_duplicate_video_files(
    video_ids: Iterable[str], video_dir: str | os.PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> dict[str, list[Path]]:
    """``{id: [paths]}`` for the ids that have a file under more than one extension
    (``abc.mp4`` and ``abc.mkv``): which one holds the video is the user's call."""
    video_dir = Path(video_dir)
    present = {entry.name for entry in os.scandir(video_dir) if entry.is_file()} if video_dir.is_dir() else set()
    out: dict[str, list[Path]] = {}
    for vid in dict.fromkeys(video_ids):
        paths = [video_dir / f"{vid}{ext}" for ext in extensions if f"{vid}{ext}" in present]
        if len(paths) > 1:
            out[vid] = paths
    return out
