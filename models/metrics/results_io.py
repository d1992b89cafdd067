"""Dense localization results in the ActivityNet format: read, validate, write.

Format (the file ``avel train`` writes as ``RUN/predictions_<split>.json``)::

    {"version": "...",                       # optional
     "results": {video_id: [{"segment": [start_s, end_s], "label": "Class name" | label_id, "score": p}, ...]},
     "external_data": {...}}                 # optional, kept as is

``label`` may be a class name (mapped through the annotation's class list) or an integer
``label_id``. For files written by the UnAV code base, ``"database"`` is accepted in place of
``"results"``, ``"label_id"`` in place of ``"label"`` and ``"scores"`` in place of ``"score"``.
Every entry is checked; an error names the file, the video id and the entry index.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avel.datasets.fileio import atomic_write_text


class ResultsFormatError(ValueError):
    """A results file is malformed; the message names the file, video id and entry index."""


@dataclass
class DetectionResults:
    """Parsed results file.

    Attributes:
        predictions: ``{video_id: P x 4 float64 array}``, rows ``(start_s, end_s, label_id, score)``.
        version: the file's ``"version"``, or None.
        external_data: the file's ``"external_data"``, or None.
    """

    predictions: dict[str, np.ndarray]
    version: str | None = None
    external_data: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def num_predictions(self) -> int:
        return int(sum(len(p) for p in self.predictions.values()))


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


_NUMBER_TYPES = (int, float)  # exact types: bool (a subclass of int) is not a number here


def _fast_rows(entries: list, index: Mapping[str, int] | None, num_classes: int | None) -> np.ndarray | None:
    """``P x 4`` rows of well-formed entries (JSON-decoded dicts), or None when any entry needs the
    entry-by-entry check of :func:`_checked_rows` (which then names the problem)."""
    rows = []
    try:
        for e in entries:
            seg = e["segment"] if type(e) is dict else None
            label = e.get("label", e.get("label_id"))
            score = e.get("score", e.get("scores"))
            if (
                type(seg) is not list
                or len(seg) != 2
                or type(seg[0]) not in _NUMBER_TYPES
                or type(seg[1]) not in _NUMBER_TYPES
                or type(score) not in _NUMBER_TYPES
            ):
                return None
            if type(label) is str:
                if index is None:
                    return None
                label = index[label]  # KeyError: not a class name, the checked path says so
            elif type(label) is not int:
                return None
            rows.append((seg[0], seg[1], label, score))
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    except (KeyError, TypeError, AttributeError, OverflowError):
        return None
    if not (
        np.isfinite(arr).all()
        and (arr[:, 1] >= arr[:, 0]).all()
        and (arr[:, 2] >= 0).all()
        and (num_classes is None or (arr[:, 2] < num_classes).all())
    ):
        return None
    return arr


def _checked_rows(
    entries: list, index: Mapping[str, int] | None, classes: Sequence[str] | None, where_prefix: str
) -> np.ndarray:
    """``P x 4`` rows, checking entry by entry; the first problem raises, naming the entry."""
    rows = np.zeros((len(entries), 4))
    for i, e in enumerate(entries):
        where = f"{where_prefix}[{i}]"
        if not isinstance(e, Mapping):
            raise ResultsFormatError(f"{where}: expected an object with segment, label, score")
        seg = e.get("segment")
        if not (isinstance(seg, (list, tuple)) and len(seg) == 2 and all(_number(x) is not None for x in seg)):
            raise ResultsFormatError(f'{where}: "segment" must be [start_s, end_s] (finite numbers), got {seg!r}')
        start, end = float(seg[0]), float(seg[1])
        if end < start:
            raise ResultsFormatError(f"{where}: segment end {end} < start {start}")
        score = _number(e.get("score", e.get("scores")))
        if score is None:
            raise ResultsFormatError(
                f'{where}: "score" must be a finite number, got {e.get("score", e.get("scores"))!r}'
            )
        label = e.get("label", e.get("label_id"))
        if isinstance(label, str):
            if index is None:
                raise ResultsFormatError(f"{where}: label {label!r} is a name but no class list was given")
            if label not in index:
                raise ResultsFormatError(f"{where}: label {label!r} is not one of the {len(index)} classes")
            label_id = index[label]
        elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            label_id = int(label)
            if label_id < 0 or (classes is not None and label_id >= len(classes)):
                top = len(classes) - 1 if classes is not None else "C"
                raise ResultsFormatError(f"{where}: label id {label_id} is outside 0..{top}")
        else:
            raise ResultsFormatError(f'{where}: "label" must be a class name or an integer label id, got {label!r}')
        rows[i] = (start, end, label_id, score)
    return rows


def parse_results(data: Any, *, classes: Sequence[str] | None = None, source: str = "<results>") -> DetectionResults:
    """Validate a decoded results document and convert it to arrays.

    Args:
        data: the decoded JSON object.
        classes: ``classes[label_id]`` names; required when labels are names, and used to check
            integer ids are in range.
        source: file name used in error messages.
    """
    if not isinstance(data, Mapping):
        raise ResultsFormatError(f'{source}: top level: expected an object with a "results" mapping')
    key = "results" if "results" in data else "database" if "database" in data else None
    if key is None or not isinstance(data[key], Mapping):
        raise ResultsFormatError(f'{source}: top level: expected a "results" mapping of video id -> list of entries')
    index = {name: i for i, name in enumerate(classes)} if classes is not None else None
    out: dict[str, np.ndarray] = {}
    for vid, entries in data[key].items():
        if not isinstance(entries, list):
            raise ResultsFormatError(f"{source}: {key}/{vid}: expected a list of entries, got {type(entries).__name__}")
        rows = _fast_rows(entries, index, len(classes) if classes is not None else None)
        out[str(vid)] = rows if rows is not None else _checked_rows(entries, index, classes, f"{source}: {key}/{vid}")
    version = data.get("version")
    return DetectionResults(
        out, version=None if version is None else str(version), external_data=data.get("external_data")
    )


def read_results(path: str | os.PathLike, *, classes: Sequence[str] | None = None) -> DetectionResults:
    """Read and validate a results JSON file (see the module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsFormatError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ResultsFormatError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return parse_results(data, classes=classes, source=str(path))


def results_to_json(
    predictions: Mapping[str, Any],
    *,
    classes: Sequence[str] | None = None,
    version: str = "avel",
    external_data: Any = None,
) -> dict[str, Any]:
    """Build the results document.

    Args:
        predictions: ``{video_id: rows (start_s, end_s, label_id, score)}``.
        classes: when given, labels are written as class names; otherwise as integer ids.
        version: the ``"version"`` field.
        external_data: optional ``"external_data"`` field (omitted when None).
    """
    results: dict[str, list[dict[str, Any]]] = {}
    for vid, rows in predictions.items():
        entries = []
        for start_s, end_s, label_id, score in np.asarray(rows, dtype=np.float64).reshape(-1, 4).tolist():
            lid = int(label_id)
            entries.append(
                {"segment": [start_s, end_s], "label": classes[lid] if classes is not None else lid, "score": score}
            )
        results[str(vid)] = entries
    doc: dict[str, Any] = {"version": version, "results": results}
    if external_data is not None:
        doc["external_data"] = external_data
    return doc


def write_results(
    path: str | os.PathLike,
    predictions: Mapping[str, Any],
    *,
    classes: Sequence[str] | None = None,
    version: str = "avel",
    external_data: Any = None,
) -> None:
    """Write :func:`results_to_json` atomically to ``path`` (arguments as there)."""
    path = Path(path)
    doc = results_to_json(predictions, classes=classes, version=version, external_data=external_data)
    atomic_write_text(path, json.dumps(doc))
