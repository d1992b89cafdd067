"""Validation of annotation files: report every problem at once.

Loaders stop at the first fatal problem (:class:`~avel.datasets.unav100.AnnotationError`);
:func:`validate` keeps going and returns every :class:`Problem` it finds, each naming the file,
the location (``line 17``, ``database/<vid>/annotations[2]``) and what was expected.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from avel.datasets.annotations import SUBSETS
from avel.datasets.ave import CLIP_DURATION_S, HEADER
from avel.datasets.unav100 import VIDEO_EXTENSIONS, find_video_files

DURATION_TOLERANCE_S = 0.5
"""Segments may end up to this much after the annotated duration (rounding in the release)."""


@dataclass(frozen=True)
class Problem:
    file: str
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.location}: {self.message}"


def validate(dataset: str, annotations_path: str | os.PathLike | None = None, *,
             video_dir: str | os.PathLike | None = None,
             split_dir: str | os.PathLike | None = None) -> list[Problem]:
    """All problems of an annotation file (and of its split files / videos when given)."""
    if dataset == "unav100":
        return _validate_unav100(Path(annotations_path), video_dir)
    if dataset == "ave":
        return _validate_ave(Path(annotations_path), video_dir, split_dir)
    if dataset == "folder":
        return _validate_folder(Path(video_dir or annotations_path))
    raise ValueError(f"unknown dataset {dataset!r}; expected unav100, ave or folder")


def _number(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _validate_unav100(path: Path, video_dir) -> list[Problem]:
    f = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        return [Problem(f, "file", f"cannot read ({e.strerror})")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return [Problem(f, f"line {e.lineno} column {e.colno}", f"invalid JSON: {e.msg}")]
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        return [Problem(f, "top level", 'expected {"version": ..., "database": {video_id: {...}}}')]
    problems: list[Problem] = []
    names: dict[int, set[str]] = {}
    ids_of: dict[str, set[int]] = {}
    for vid, entry in data["database"].items():
        where = f"database/{vid}"
        if not isinstance(entry, dict):
            problems.append(Problem(f, where, "expected an object with duration, subset, annotations"))
            continue
        for key in ("duration", "subset", "annotations"):
            if key not in entry:
                problems.append(Problem(f, where, f"missing key {key!r}"))
        duration = _number(entry.get("duration"))
        if "duration" in entry and (duration is None or duration <= 0):
            problems.append(Problem(f, f"{where}/duration", f"expected a positive number, got {entry['duration']!r}"))
        if "subset" in entry and entry["subset"] not in SUBSETS:
            problems.append(Problem(f, f"{where}/subset", f"{entry['subset']!r} is not one of {list(SUBSETS)}"))
        anns = entry.get("annotations", [])
        if not isinstance(anns, list):
            problems.append(Problem(f, f"{where}/annotations", "expected a list"))
            continue
        seen = Counter()
        for k, ann in enumerate(anns):
            w = f"{where}/annotations[{k}]"
            if not isinstance(ann, dict):
                problems.append(Problem(f, w, "expected an object"))
                continue
            seg, label, label_id = ann.get("segment"), ann.get("label"), ann.get("label_id")
            if not (isinstance(seg, list) and len(seg) == 2 and all(_number(x) is not None for x in seg)):
                problems.append(Problem(f, f"{w}/segment", f"expected [start_s, end_s] numbers, got {seg!r}"))
                seg = None
            if not isinstance(label, str) or not label:
                problems.append(Problem(f, f"{w}/label", f"expected a class name, got {label!r}"))
            if isinstance(label_id, bool) or not isinstance(label_id, int) or label_id < 0:
                problems.append(Problem(f, f"{w}/label_id", f"expected a non-negative integer, got {label_id!r}"))
                label_id = None
            if isinstance(label, str) and label_id is not None:
                names.setdefault(label_id, set()).add(label)
                ids_of.setdefault(label, set()).add(label_id)
            if seg is not None:
                start, end = float(seg[0]), float(seg[1])
                if start >= end:
                    problems.append(Problem(f, f"{w}/segment", f"start {start:g} >= end {end:g}"))
                if start < 0:
                    problems.append(Problem(f, f"{w}/segment", f"start {start:g} < 0"))
                if duration is not None and end > duration + DURATION_TOLERANCE_S:
                    problems.append(Problem(f, f"{w}/segment", f"end {end:g} after the duration {duration:g} s "
                                                               f"(tolerance {DURATION_TOLERANCE_S} s)"))
                key = (round(start, 6), round(end, 6), label)
                seen[key] += 1
                if seen[key] == 2:
                    problems.append(Problem(f, w, f"duplicate event {label!r} [{start:g}, {end:g}]"))
        if video_dir is not None:
            _, missing = find_video_files([vid], video_dir)
            if missing:
                problems.append(Problem(f, where, f"no video file {vid}{{{','.join(VIDEO_EXTENSIONS)}}} in {video_dir}"))
    for label_id, labels in sorted(names.items()):
        if len(labels) > 1:
            problems.append(Problem(f, "database", f"label_id {label_id} is used for several labels {sorted(labels)}"))
    for label, ids in sorted(ids_of.items()):
        if len(ids) > 1:
            problems.append(Problem(f, "database", f"label {label!r} has several label_ids {sorted(ids)}"))
    if names and sorted(names) != list(range(max(names) + 1)):
        gaps = sorted(set(range(max(names) + 1)) - set(names))
        problems.append(Problem(f, "database", f"label_id values must be 0..C-1 without gaps; missing {gaps[:10]}"))
    return problems


def _validate_ave(path: Path, video_dir, split_dir) -> list[Problem]:
    f = str(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        return [Problem(f, "file", f"cannot read ({e.strerror})")]
    problems: list[Problem] = []
    rows: list[tuple[int, str, str, float, float]] = []
    seen: dict[tuple, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if lineno == 1 and line.strip().replace(" ", "") == HEADER:
            continue
        parts = line.rstrip("\r").split("&")
        loc = f"line {lineno}"
        if len(parts) != 5:
            problems.append(Problem(f, loc, f"expected 5 '&'-separated fields ({HEADER}), got {len(parts)}"))
            continue
        category, vid, _quality, start, end = parts
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            problems.append(Problem(f, loc, f"StartTime/EndTime must be numbers, got {start!r}, {end!r}"))
            continue
        if not category:
            problems.append(Problem(f, loc, "empty Category"))
        if not vid:
            problems.append(Problem(f, loc, "empty VideoID"))
        if start_s >= end_s:
            problems.append(Problem(f, loc, f"start {start_s:g} >= end {end_s:g}"))
        if start_s < 0 or end_s > CLIP_DURATION_S:
            problems.append(Problem(f, loc, f"segment [{start_s:g}, {end_s:g}] outside the {CLIP_DURATION_S:g}-s clip"))
        key = (category, vid, start_s, end_s)
        if key in seen:
            problems.append(Problem(f, loc, f"duplicate of line {seen[key]}"))
        seen.setdefault(key, lineno)
        rows.append((lineno, category, vid, start_s, end_s))
        if video_dir is not None:
            _, missing = find_video_files([vid], video_dir)
            if missing:
                problems.append(Problem(f, loc, f"no video file for {vid!r} in {video_dir}"))
    split_dir = Path(split_dir) if split_dir is not None else path.parent
    owner: dict[int, str] = {}
    for stem in ("train", "val", "test"):
        sf = split_dir / f"{stem}_order.h5"
        if not sf.exists():
            continue
        try:
            with h5py.File(sf, "r") as h:
                if "order" not in h:
                    problems.append(Problem(str(sf), "file", f"no dataset 'order' (keys {list(h.keys())})"))
                    continue
                order = np.asarray(h["order"][()]).reshape(-1)
        except OSError as e:
            problems.append(Problem(str(sf), "file", f"cannot open as HDF5 ({e})"))
            continue
        for r in order.tolist():
            if not 0 <= r < len(rows):
                problems.append(Problem(str(sf), f"order[{r}]", f"row index {r} outside 0..{len(rows) - 1}"))
            elif r in owner:
                problems.append(Problem(str(sf), f"row {r}", f"also in {owner[r]}"))
            else:
                owner[r] = sf.name
    return problems


def _validate_folder(root: Path) -> list[Problem]:
    if not root.is_dir():
        return [Problem(str(root), "directory", "not a directory")]
    problems = []
    seen: dict[str, Path] = {}
    count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            count += 1
            vid = p.relative_to(root).with_suffix("").as_posix()
            if vid in seen:
                problems.append(Problem(str(p), "file", f"same video id {vid!r} as {seen[vid]}"))
            seen[vid] = p
            if p.stat().st_size == 0:
                problems.append(Problem(str(p), "file", "empty file (0 bytes)"))
    if count == 0:
        problems.append(Problem(str(root), "directory", f"no video files ({', '.join(VIDEO_EXTENSIONS)})"))
    return problems
