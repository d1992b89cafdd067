"""AVE annotations: ``Annotations.txt``, the split files, per-segment labels, and a writer.

``Annotations.txt`` rows are ``Category&VideoID&Quality&StartTime&EndTime`` (the release has
a header line with exactly these names; the copy in many repos has none: both are accepted).
One :class:`Sample` per ROW (``sample_id = "row-0000"``): 45 videos appear on several rows
with different events, so extraction is per video but training is per row.

Classes: the 28 event classes in order of first appearance; ``background_id = 28`` (29
classes counting background). ``classes`` holds the 28 event names only.

Splits: ``{train,val,test}_order.h5`` (dataset ``order``: row indices); ``split="match"``
uses ``*_order_match.h5`` (the cross-modal localization split).
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from avel.datasets.annotations import AnnotationSet, Sample, Segment
from avel.datasets.unav100 import AnnotationError

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
NUM_SEGMENTS = 10
CLIP_DURATION_S = 10.0
_SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}


def load_ave(annotations_path: str | os.PathLike, *, split_dir: str | os.PathLike | None = None,
             split: str = "standard") -> AnnotationSet:
    """Parse ``Annotations.txt`` (+ split files from ``split_dir``, default: its folder)."""
    path = Path(annotations_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    samples: list[Sample] = []
    classes: list[str] = []
    row = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if lineno == 1 and line.strip().replace(" ", "") == HEADER:
            continue
        parts = line.rstrip("\r").split("&")
        if len(parts) != 5:
            raise AnnotationError(f"{path}: line {lineno}: expected 5 '&'-separated fields "
                                  f"({HEADER}), got {len(parts)}")
        category, vid, quality, start, end = parts
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise AnnotationError(f"{path}: line {lineno}: StartTime/EndTime must be numbers, got "
                                  f"{start!r}, {end!r}") from None
        if category not in classes:
            classes.append(category)
        samples.append(Sample(f"row-{row:04d}", vid, CLIP_DURATION_S, None,
                              [Segment(start_s, end_s, category, classes.index(category))],
                              {"row": row, "quality": quality, "line": lineno}))
        row += 1
    split_dir = Path(split_dir) if split_dir is not None else path.parent
    suffix = {"standard": "_order.h5", "match": "_order_match.h5"}.get(split)
    if suffix is None:
        raise ValueError(f"split must be 'standard' or 'match', got {split!r}")
    for subset, stem in _SPLIT_FILES.items():
        f = split_dir / f"{stem}{suffix}"
        if not f.exists():
            continue
        with h5py.File(f, "r") as h:
            if "order" not in h:
                raise AnnotationError(f"{f}: no dataset 'order' (keys: {list(h.keys())})")
            order = np.asarray(h["order"][()]).reshape(-1)
        bad = order[(order < 0) | (order >= len(samples))]
        if bad.size:
            raise AnnotationError(f"{f}: row indices {bad[:5].tolist()} outside 0..{len(samples) - 1}")
        for r in order.tolist():
            if samples[r].subset not in (None, subset):
                raise AnnotationError(f"{f}: row {r} is also in subset {samples[r].subset!r}")
            samples[r].subset = subset
    return AnnotationSet("ave", classes, samples, source=path, background_id=len(classes))


def segment_labels(sample: Sample, *, num_segments: int = NUM_SEGMENTS, background_id: int = 28) -> np.ndarray:
    """Per-segment class ids: segment ``t`` covers ``[t, t+1)`` s and is labelled when
    ``start <= t < end``, else background."""
    labels = np.full(num_segments, background_id, np.int64)
    t = np.arange(num_segments)
    for seg in sample.segments:
        labels[(t >= seg.start_s) & (t < seg.end_s)] = seg.label_id
    return labels


def write_ave(annset: AnnotationSet, out_dir: str | os.PathLike) -> None:
    """Write ``Annotations.txt`` (with the header line) and the split files.

    The ``*_order_match.h5`` files repeat the standard split (for synthetic data every event
    is usable for cross-modal localization; evaluation excludes full-length events itself).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(annset, key=lambda s: s.extra.get("row", 0))
    lines = [HEADER]
    for s in rows:
        if len(s.segments) != 1:
            raise ValueError(f"AVE rows carry exactly one event; sample {s.sample_id} has {len(s.segments)}")
        g = s.segments[0]
        start = int(g.start_s) if float(g.start_s).is_integer() else g.start_s
        end = int(g.end_s) if float(g.end_s).is_integer() else g.end_s
        lines.append(f"{g.label}&{s.video_id}&{s.extra.get('quality', 'good')}&{start}&{end}")
    tmp = out / ".Annotations.txt.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out / "Annotations.txt")
    for subset, stem in _SPLIT_FILES.items():
        order = np.array([i for i, s in enumerate(rows) if s.subset == subset], np.int64)
        for suffix in ("_order.h5", "_order_match.h5"):
            with h5py.File(out / f"{stem}{suffix}", "w") as h:
                h.create_dataset("order", data=order)
