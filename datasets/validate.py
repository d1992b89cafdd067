"""Validation of annotation files: report every problem at once.

Loaders stop at the first fatal problem (:class:`~avel.datasets.annotations.AnnotationError`);
:func:`validate` keeps going and returns every :class:`Problem` it finds, each naming the file,
the location (``line 17``, ``database/<vid>/annotations[2]/segment``, ``order[5]``) and what was
expected. It also reports what loaders accept but what is surely wrong: events with
``start >= end``, outside the video, or repeated.

Checks:
    UnAV-100: invalid JSON (line, column), missing / repeated keys, wrong types, unknown
    subset, non-positive duration, ``start >= end``, start < 0 or end past the duration (by
    more than :data:`DURATION_TOLERANCE_S`), duplicate events in a video, a label with
    several ids or an id with several labels, ids not ``0..C-1``, missing video files.
    AVE: field count, non-numeric or empty fields, ``start >= end`` (an empty event is named as
    such), an event outside the 10-s clip, duplicate rows, a category outside the 28 published
    classes in a file that uses them, and for both splits (``*_order.h5``, ``*_order_match.h5``) missing
    files, missing ``order`` dataset, non-integer values, indices out of range, rows listed
    twice; missing video files.
    Both: video ids that cannot be file names (``..`` components, absolute paths, separators,
    control characters).
    Folder: not a directory, no videos, two files for one id, empty files.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from avel.datasets.annotations import SUBSETS, AnnotationError, unsafe_id_reason
from avel.datasets.ave import AVE_CLASSES, CLIP_DURATION_S, HEADER, SPLIT_SUFFIXES, is_header, read_order, split_files
from avel.datasets.folder import DATASETS, video_files
from avel.datasets.unav100 import (
    VIDEO_EXTENSIONS,
    JsonObject,
    find_duplicate_video_files,
    find_video_files,
    json_number,
    json_type,
    read_json_with_duplicates,
)

__all__ = ["DURATION_TOLERANCE_S", "Problem", "validate"]

DURATION_TOLERANCE_S = 0.05
"""An event may end this much after the annotated duration: durations in the release are
rounded to 0.01 s, segment ends to 0.00001 s (the real file never exceeds its durations)."""


@dataclass(frozen=True)
class Problem:
    """One problem of one file.

    Args:
        file: the file (or directory) it is in.
        location: where in it: ``line 17``, ``database/<vid>/annotations[2]``, ``order[4]``,
            ``file``, ``top level``.
        message: what is wrong and what was expected.
    """

    file: str
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.location}: {self.message}"


def validate(
    dataset: str,
    annotations_path: str | os.PathLike | None = None,
    *,
    video_dir: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
) -> list[Problem]:
    """Every problem of an annotation file, its split files and its videos.

    Args:
        dataset: ``"unav100"`` | ``"ave"`` | ``"folder"``.
        annotations_path: the annotation file; for ``folder`` the video directory when
            ``video_dir`` is not given.
        video_dir: when given, every annotated video must have a file ``<id><ext>`` there
            (``folder``: the directory to check).
        split_dir: AVE: folder of the split files. Default: next to ``annotations_path``,
            where they are optional (none of the standard ones there: splits not checked).

    Returns:
        the problems in file order; empty when clean.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    if dataset == "folder":
        root = video_dir if video_dir is not None else annotations_path
        if root is None:
            raise ValueError("folder dataset: give the video directory")
        return _validate_folder(Path(root))
    if annotations_path is None:
        raise ValueError(f"{dataset}: the annotation file is required")
    if dataset == "unav100":
        return _validate_unav100(Path(annotations_path), video_dir)
    return _validate_ave(Path(annotations_path), video_dir, split_dir)


def _repeated(obj, f: str, where: str) -> list[Problem]:
    keys = obj.duplicate_keys if isinstance(obj, JsonObject) else []
    return [
        Problem(f, f"{where}/{k}" if where else k, "key appears more than once (JSON keeps only the last)")
        for k in dict.fromkeys(keys)
    ]


def _validate_unav100(path: Path, video_dir) -> list[Problem]:
    f = str(path)
    try:
        data = read_json_with_duplicates(path)
    except json.JSONDecodeError as e:
        return [Problem(f, f"line {e.lineno} column {e.colno}", f"invalid JSON: {e.msg}")]
    except (OSError, UnicodeDecodeError) as e:
        return [Problem(f, "file", f"cannot read: {e}")]
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        return [Problem(f, "top level", 'expected an object {"version": "unav100", "database": {video_id: {...}}}')]
    problems = _repeated(data, f, "")
    if "version" not in data:
        problems.append(Problem(f, "top level", "missing key 'version' (expected \"unav100\")"))
    database = data["database"]
    problems += _repeated(database, f, "database")
    names: dict[int, set[str]] = {}
    ids_of: dict[str, set[int]] = {}
    for vid, entry in database.items():
        where = f"database/{vid}"
        reason = unsafe_id_reason(vid)
        if reason is not None or "/" in vid or "\\" in vid:
            problems.append(
                Problem(f, where, f"video id {vid!r} cannot be a file name ({reason or 'contains a path separator'})")
            )
        if not isinstance(entry, dict):
            problems.append(Problem(f, where, 'expected an object {"duration", "subset", "annotations"}'))
            continue
        problems += _repeated(entry, f, where)
        for key in ("duration", "subset", "annotations"):
            if key not in entry:
                problems.append(Problem(f, where, f"missing key {key!r}"))
        duration = json_number(entry.get("duration"))
        if "duration" in entry and (duration is None or duration <= 0):
            problems.append(Problem(f, f"{where}/duration", f"expected a positive number, got {entry['duration']!r}"))
            duration = None
        if "subset" in entry and entry["subset"] not in SUBSETS:
            problems.append(Problem(f, f"{where}/subset", f"expected one of {list(SUBSETS)}, got {entry['subset']!r}"))
        anns = entry.get("annotations", [])
        if not isinstance(anns, list):
            problems.append(Problem(f, f"{where}/annotations", f"expected an array, got {json_type(anns)}"))
            continue
        first_of: dict[tuple, int] = {}
        for k, ann in enumerate(anns):
            w = f"{where}/annotations[{k}]"
            if not isinstance(ann, dict):
                problems.append(Problem(f, w, 'expected an object {"segment", "label", "label_id"}'))
                continue
            problems += _repeated(ann, f, w)
            for key in ("segment", "label", "label_id"):
                if key not in ann:
                    problems.append(Problem(f, w, f"missing key {key!r}"))
            seg, label, label_id = ann.get("segment"), ann.get("label"), ann.get("label_id")
            if "segment" in ann and not (
                isinstance(seg, list) and len(seg) == 2 and all(json_number(x) is not None for x in seg)
            ):
                problems.append(Problem(f, f"{w}/segment", f"expected [start_s, end_s] numbers, got {seg!r}"))
            if "label" in ann and (not isinstance(label, str) or not label):
                problems.append(Problem(f, f"{w}/label", f"expected a non-empty class name, got {label!r}"))
            if "label_id" in ann and (isinstance(label_id, bool) or not isinstance(label_id, int) or label_id < 0):
                problems.append(Problem(f, f"{w}/label_id", f"expected an integer >= 0, got {label_id!r}"))
            label_name = label if isinstance(label, str) and label else None
            label_num = (
                label_id if isinstance(label_id, int) and not isinstance(label_id, bool) and label_id >= 0 else None
            )
            if label_name is not None and label_num is not None:
                names.setdefault(label_num, set()).add(label_name)
                ids_of.setdefault(label_name, set()).add(label_num)
            if not (isinstance(seg, list) and len(seg) == 2 and all(json_number(x) is not None for x in seg)):
                continue
            start, end = float(seg[0]), float(seg[1])
            if start >= end:
                problems.append(Problem(f, f"{w}/segment", f"start {start:g} >= end {end:g} (expected start < end)"))
            if start < 0:
                problems.append(Problem(f, f"{w}/segment", f"start {start:g} < 0"))
            if duration is not None and end > duration + DURATION_TOLERANCE_S:
                problems.append(
                    Problem(
                        f,
                        f"{w}/segment",
                        f"end {end:g} after the duration {duration:g} s (tolerance {DURATION_TOLERANCE_S} s)",
                    )
                )
            event = (round(start, 6), round(end, 6), label_name)
            if event in first_of:
                problems.append(
                    Problem(
                        f, w, f"duplicate event {label!r} [{start:g}, {end:g}] (same as annotations[{first_of[event]}])"
                    )
                )
            first_of.setdefault(event, k)
    for label_id, labels in sorted(names.items()):
        if len(labels) > 1:
            problems.append(
                Problem(
                    f,
                    "database",
                    f"label_id {label_id} is used for several labels {sorted(labels)} (expected one label per id)",
                )
            )
    for label, ids in sorted(ids_of.items()):
        if len(ids) > 1:
            problems.append(
                Problem(
                    f, "database", f"label {label!r} has several label_ids {sorted(ids)} (expected one id per label)"
                )
            )
    if names and sorted(names) != list(range(max(names) + 1)):
        gaps = sorted(set(range(max(names) + 1)) - set(names))
        problems.append(Problem(f, "database", f"label_id values must be 0..C-1 without gaps; missing {gaps[:10]}"))
    if video_dir is not None:
        _, missing = find_video_files(list(database), video_dir)
        exts = ",".join(VIDEO_EXTENSIONS)
        problems += [Problem(f, f"database/{vid}", f"no video file {vid}{{{exts}}} in {video_dir}") for vid in missing]
        problems += [
            Problem(f, f"database/{vid}", f"several files for one id: {[p.name for p in paths]} (keep one)")
            for vid, paths in find_duplicate_video_files(list(database), video_dir).items()
        ]
    return problems


def _validate_ave(path: Path, video_dir, split_dir) -> list[Problem]:
    f = str(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is skipped
    except (OSError, UnicodeDecodeError) as e:
        return [Problem(f, "file", f"cannot read: {e}")]
    problems: list[Problem] = []
    categories: list[tuple[int, str]] = []  # (line, category) of every well-formed row
    n_rows = 0
    line_of_vid: dict[str, int] = {}
    first_line: dict[tuple, int] = {}
    first = True
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        loc = f"line {lineno}"
        if is_header(line):
            if not first:
                problems.append(Problem(f, loc, "header line allowed only as the first line"))
            first = False
            continue
        first = False
        n_rows += 1  # every non-blank data line is a row, even a broken one (split indices count them)
        parts = [p.strip() for p in line.strip().split("&")]
        if len(parts) != 5:
            problems.append(Problem(f, loc, f"expected 5 '&'-separated fields ({HEADER}), got {len(parts)}"))
            continue
        category, vid, quality, start, end = parts
        for name, value in (("Category", category), ("VideoID", vid), ("Quality", quality)):
            if not value:
                problems.append(Problem(f, loc, f"empty {name}"))
        reason = unsafe_id_reason(vid) if vid else None
        if reason is not None or "/" in vid or "\\" in vid:
            problems.append(
                Problem(f, loc, f"VideoID {vid!r} cannot be a file name ({reason or 'contains a path separator'})")
            )
        elif vid:
            line_of_vid.setdefault(vid, lineno)
        if category:
            categories.append((lineno, category))
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            problems.append(Problem(f, loc, f"StartTime/EndTime must be numbers, got {start!r}, {end!r}"))
            continue
        if start_s == end_s:
            problems.append(
                Problem(
                    f,
                    loc,
                    f"start {start_s:g} >= end {end_s:g}: an empty event (training keeps "
                    f"the row: all segments background, video label {category!r}; see "
                    f"avel.datasets.ave)",
                )
            )
        elif start_s > end_s:
            problems.append(Problem(f, loc, f"start {start_s:g} >= end {end_s:g}"))
        if start_s < 0 or end_s > CLIP_DURATION_S:
            problems.append(
                Problem(
                    f,
                    loc,
                    f"segment [{start_s:g}, {end_s:g}] outside the {CLIP_DURATION_S:g}-s "
                    f"clip (expected 0 <= start < end <= {CLIP_DURATION_S:g})",
                )
            )
        key = (category, vid, start_s, end_s)
        if key in first_line:
            problems.append(Problem(f, loc, f"duplicate of line {first_line[key]}"))
        first_line.setdefault(key, lineno)
    if any(c in AVE_CLASSES for _, c in categories):  # a published-class file: every category must be one
        problems += [
            Problem(f, f"line {n}", f"category {c!r} is not one of the 28 AVE classes")
            for n, c in categories
            if c not in AVE_CLASSES
        ]
    problems += _validate_splits(path, split_dir, n_rows)
    if video_dir is not None:
        _, missing = find_video_files(list(line_of_vid), video_dir)
        problems += [
            Problem(f, f"line {line_of_vid[vid]}", f"no video file for {vid!r} in {video_dir}") for vid in missing
        ]
        problems += [
            Problem(f, f"line {line_of_vid[vid]}", f"several files for {vid!r}: {[p.name for p in paths]} (keep one)")
            for vid, paths in find_duplicate_video_files(list(line_of_vid), video_dir).items()
        ]
    return problems


def _validate_splits(path: Path, split_dir, n_rows: int) -> list[Problem]:
    """Split files of both splits. A split none of whose files exist is skipped, except the
    standard split when ``split_dir`` was given explicitly; a partial split is a problem."""
    problems: list[Problem] = []
    for split in SPLIT_SUFFIXES:
        files = split_files(split_dir if split_dir is not None else path.parent, split)
        if not any(p.exists() for p in files.values()) and (split == "match" or split_dir is None):
            continue
        owner: dict[int, str] = {}
        for sf in files.values():
            if not sf.exists():
                problems.append(
                    Problem(
                        str(sf),
                        "file",
                        f"missing split file (the {split} split needs {', '.join(p.name for p in files.values())})",
                    )
                )
                continue
            try:
                order = read_order(sf)
            except AnnotationError as e:
                location, _, message = str(e).removeprefix(f"{sf}: ").partition(": ")
                problems.append(Problem(str(sf), location, message))
                continue
            for i, r in enumerate(order.tolist()):
                if not 0 <= r < n_rows:
                    problems.append(Problem(str(sf), f"order[{i}]", f"row index {r} outside 0..{n_rows - 1}"))
                elif r in owner:
                    problems.append(Problem(str(sf), f"order[{i}]", f"row {r} is also in {owner[r]}"))
                else:
                    owner[r] = sf.name
    return problems


def _validate_folder(root: Path) -> list[Problem]:
    if not root.is_dir():
        return [Problem(str(root), "directory", "not a directory")]
    problems = []
    seen: dict[str, Path] = {}
    found = video_files(root)
    for vid, p in found:
        if vid in seen:
            problems.append(Problem(str(p), "file", f"same video id {vid!r} as {seen[vid]} (expected one file per id)"))
        seen.setdefault(vid, p)
        if p.stat().st_size == 0:
            problems.append(Problem(str(p), "file", "empty file (0 bytes)"))
    if not found:
        problems.append(Problem(str(root), "directory", f"no video files ({', '.join(VIDEO_EXTENSIONS)})"))
    return problems


def count_by_file(problems: list[Problem]) -> Counter:
    """Number of problems per file (for summaries)."""
    return Counter(p.file for p in problems)
