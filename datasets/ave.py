"""AVE annotations: ``Annotations.txt``, the split files, per-segment labels, and a writer.

``Annotations.txt`` rows are ``Category&VideoID&Quality&StartTime&EndTime``; the original
release starts with a header line holding exactly these names, the copy in many repos (and
the one in data/ of YapengTian/AVE-ECCV18) has none: a first line equal to the header (ignoring case and
spaces) is skipped. Blank lines are skipped and do not count as rows. One :class:`Sample` per
ROW (``sample_id = "row-0000"``, 0-based data row): 45 videos appear on 2-3 rows with
different events, so extraction is per video but training and evaluation are per row.

The file is UTF-8; a byte-order mark (as Windows editors write) is skipped.

Classes: the 28 published event classes :data:`AVE_CLASSES` in the release's order (the order of
first appearance in its ``Annotations.txt``: ``Church bell`` ... ``Mandolin``), fixed whatever
rows a file holds; ``background_id = 28``, so models have 29 outputs while ``classes`` holds
the 28 event names only. A file whose categories are ALL outside the published list is a
custom dataset (e.g. ``avel synth ave``): its classes are numbered by first appearance. A
file mixing published and unknown categories is an error naming the first unknown one's
line (a typo would otherwise shift every id). ``classes=`` fixes another list.

Empty segments: the release has one row with ``StartTime == EndTime == 0`` (line 27,
``Church bell&VWi2ENBuTbw&good&0&0``, a training row). It is kept (dropping it would renumber
the split files' row indices) and treated as the release's label files do:
``labels_closs.h5`` marks all 10 segments background (:func:`segment_labels` gives
``[0, 0)`` no segment) and ``mil_labels.h5`` still gives the video its category, so the
weakly supervised video label of such a row is its category
(:class:`~avel.datasets.torch_dataset.AveFeatureDataset`). ``avel validate`` reports it.

Splits: ``{train,val,test}_order.h5``, dataset ``order`` = row indices (``val`` becomes subset
``"validation"``); ``split="match"`` reads ``*_order_match.h5``, the cross-modal localization
(CML) split. Times are whole seconds in the release but any number is accepted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from avel.datasets.annotations import AnnotationError, AnnotationSet, Sample, Segment
from avel.datasets.fileio import atomic_write, atomic_write_text

__all__ = [
    "AVE_CLASSES",
    "HEADER",
    "is_header",
    "NUM_SEGMENTS",
    "CLIP_DURATION_S",
    "BACKGROUND_ID",
    "SPLIT_SUFFIXES",
    "split_files",
    "read_order",
    "load_ave",
    "segment_labels",
    "write_ave",
]

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
AVE_CLASSES = (
    "Church bell",
    "Male speech, man speaking",
    "Bark",
    "Fixed-wing aircraft, airplane",
    "Race car, auto racing",
    "Female speech, woman speaking",
    "Helicopter",
    "Violin, fiddle",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry, infant cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodents, rats, mice",
    "Accordion",
    "Mandolin",
)
"""The 28 published AVE event classes; label id = index (background is 28)."""
NUM_SEGMENTS = 10
CLIP_DURATION_S = 10.0
BACKGROUND_ID = 28
SPLIT_SUFFIXES = {"standard": "_order.h5", "match": "_order_match.h5"}
_SPLIT_STEMS = {"train": "train", "validation": "val", "test": "test"}  # subset -> file stem


def is_header(line: str) -> bool:
    """Whether ``line`` is the release's header line (case and spaces ignored)."""
    return line.strip().replace(" ", "").lower() == HEADER.lower()


def split_files(split_dir: str | os.PathLike, split: str = "standard") -> dict[str, Path]:
    """``{subset: <split_dir>/<stem><suffix>}`` for ``split`` ``"standard"`` or ``"match"``."""
    if split not in SPLIT_SUFFIXES:
        raise ValueError(f"split must be one of {list(SPLIT_SUFFIXES)}, got {split!r}")
    return {subset: Path(split_dir) / f"{stem}{SPLIT_SUFFIXES[split]}" for subset, stem in _SPLIT_STEMS.items()}


def read_order(path: Path) -> np.ndarray:
    """Row indices of one split file (dataset ``order``), as int64 ``(N,)``.

    Raises:
        AnnotationError: unreadable file, no ``order`` dataset, or non-integer values.
    """
    try:
        with h5py.File(path, "r") as h:
            if "order" not in h or not isinstance(h["order"], h5py.Dataset):
                raise AnnotationError(f"{path}: order: no dataset 'order' (keys: {list(h.keys())})")
            order = np.asarray(h["order"][()])
    except OSError as e:
        raise AnnotationError(f"{path}: file: cannot open as HDF5 ({e})") from e
    if order.dtype.kind not in "iu":
        if order.dtype.kind != "f" or not np.all(np.isfinite(order)) or np.any(order != np.round(order)):
            raise AnnotationError(f"{path}: order: expected integer row indices, got dtype {order.dtype}")
    return order.reshape(-1).astype(np.int64)


def load_ave(
    annotations_path: str | os.PathLike,
    *,
    split_dir: str | os.PathLike | None = None,
    split: str = "standard",
    classes: Sequence[str] | None = None,
) -> AnnotationSet:
    """Parse ``Annotations.txt`` and assign subsets from the split files.

    Args:
        annotations_path: the ``&``-separated annotation file.
        split_dir: folder with the ``*_order*.h5`` files. Default: the folder of
            ``annotations_path``, where the standard files are optional (all three absent:
            every ``subset`` is None). When ``split_dir`` is given, ``split="match"``, or only
            some files exist, all three are required.
        split: ``"standard"`` (``*_order.h5``) or ``"match"`` (``*_order_match.h5``, CML).
        classes: event class names fixing the label ids (default: :data:`AVE_CLASSES`, or a
            custom file's own classes by first appearance; see the module doc).

    Returns:
        dataset ``"ave"``, ``background_id = len(classes)`` (28 for the release), samples in
        row order with ``duration_s = 10``, ``extra = {"row", "quality", "line"}``.

    Raises:
        AnnotationError: the first bad line / split file, naming the file and line (also a
            category outside the published classes in a file that otherwise uses them).
    """
    path = Path(annotations_path)
    files = split_files(split_dir if split_dir is not None else path.parent, split)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a BOM is skipped
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: file: cannot read: {e}") from e
    rows: list[tuple[int, str, str, str, float, float]] = []  # line, category, vid, quality, start, end
    first = True
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if first and is_header(line):
            first = False
            continue
        first = False
        parts = line.strip().split("&")
        if len(parts) != 5:
            raise AnnotationError(
                f"{path}: line {lineno}: expected 5 '&'-separated fields ({HEADER}), got {len(parts)}"
            )
        category, vid, quality, start, end = (p.strip() for p in parts)
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise AnnotationError(
                f"{path}: line {lineno}: StartTime/EndTime must be numbers, got {start!r}, {end!r}"
            ) from None
        if not (math.isfinite(start_s) and math.isfinite(end_s)):
            raise AnnotationError(f"{path}: line {lineno}: StartTime/EndTime must be finite, got {start!r}, {end!r}")
        if not category or not vid:
            raise AnnotationError(f"{path}: line {lineno}: Category and VideoID must not be empty")
        rows.append((lineno, category, vid, quality, start_s, end_s))
    names = _class_list(path, rows, classes)
    samples: list[Sample] = []
    for row, (lineno, category, vid, quality, start_s, end_s) in enumerate(rows):
        samples.append(
            Sample(
                f"row-{row:04d}",
                vid,
                CLIP_DURATION_S,
                None,
                [Segment(start_s, end_s, category, names.index(category))],
                {"row": row, "quality": quality, "line": lineno},
            )
        )
    present = [f.exists() for f in files.values()]
    if split_dir is None and split == "standard" and not any(present):
        return AnnotationSet("ave", names, samples, source=path, background_id=len(names))
    for subset, f in files.items():
        if not f.exists():
            expected = ", ".join(p.name for p in files.values())
            raise AnnotationError(f"{f}: file: missing split file (expected {expected})")
        order = read_order(f)
        bad = order[(order < 0) | (order >= len(samples))]
        if bad.size:
            raise AnnotationError(f"{f}: row indices {bad[:5].tolist()} outside 0..{len(samples) - 1}")
        for r in order.tolist():
            if samples[r].subset is not None:
                where = "twice in this file" if samples[r].subset == subset else f"also in subset {samples[r].subset!r}"
                raise AnnotationError(f"{f}: order: row {r} is {where}")
            samples[r].subset = subset
    return AnnotationSet("ave", names, samples, source=path, background_id=len(names))


def _class_list(path: Path, rows: list[tuple], classes: Sequence[str] | None) -> list[str]:
    """The label list of a file's rows (see the module doc): ``classes``, the published 28, or a
    custom file's own classes by first appearance."""
    if classes is not None:
        names = list(classes)
        for lineno, category, *_ in rows:
            if category not in names:
                raise AnnotationError(f"{path}: line {lineno}: category {category!r} is not in the given classes")
        return names
    published = [r for r in rows if r[1] in AVE_CLASSES]
    if not published and rows:  # a custom dataset: none of its categories is an AVE class
        return list(dict.fromkeys(r[1] for r in rows))
    for lineno, category, *_ in rows:
        if category not in AVE_CLASSES:
            raise AnnotationError(
                f"{path}: line {lineno}: category {category!r} is not one of the 28 AVE classes "
                f"(the other rows use them; expected e.g. {AVE_CLASSES[0]!r}, see "
                f"avel.datasets.ave.AVE_CLASSES)"
            )
    return list(AVE_CLASSES)


def segment_labels(
    sample: Sample, *, num_segments: int = NUM_SEGMENTS, background_id: int = BACKGROUND_ID
) -> np.ndarray:
    """Per-segment class ids ``(num_segments,)`` int64.

    Segment ``t`` covers ``[t, t+1)`` s and takes an event's ``label_id`` when
    ``start_s <= t < end_s``, else ``background_id`` (so ``[0, 0)`` labels nothing, as in
    the release's ``labels_closs.h5``). Later segments of the sample win where events overlap.
    """
    labels = np.full(num_segments, background_id, np.int64)  # T
    t = np.arange(num_segments)
    for seg in sample.segments:
        labels[(t >= seg.start_s) & (t < seg.end_s)] = seg.label_id
    return labels


def _time(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def write_ave(annset: AnnotationSet, out_dir: str | os.PathLike) -> None:
    """Write ``Annotations.txt`` (with the release's header line) and the split files
    ``{train,val,test}_order.h5`` and ``*_order_match.h5`` (dataset ``order``, int64), each
    atomically.

    Rows are written in ``extra["row"]`` order (samples without it keep their position after
    those with one), so the written row index of a sample is its index in that order. The
    match split repeats the standard split: for synthetic data every row may serve cross-modal
    localization, and the CML evaluation excludes full-length events itself.

    Args:
        annset: samples with exactly one segment each; ``subset`` None puts a row in no split.
        out_dir: created if needed.

    Note:
        the format has no label ids: :func:`load_ave` numbers classes by first appearance
        unless given ``classes=annset.classes``.

    Raises:
        ValueError: a sample the format cannot hold (not one segment, ``&`` or a newline in a
            field, a label that does not match ``classes``), naming the sample.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(annset, key=lambda s: s.extra.get("row", float("inf")))
    lines = [HEADER]
    for s in rows:
        if len(s.segments) != 1:
            raise ValueError(f"{out}: AVE rows carry exactly one event; sample {s.sample_id!r} has {len(s.segments)}")
        g = s.segments[0]
        quality = str(s.extra.get("quality", "good"))
        for field, value in (("label", g.label), ("video_id", s.video_id), ("quality", quality)):
            if not value or any(c in value for c in "&\r\n"):
                raise ValueError(f"{out}: sample {s.sample_id!r}: {field} {value!r} is empty or holds '&' or a newline")
        if annset.classes and (not 0 <= g.label_id < len(annset.classes) or annset.classes[g.label_id] != g.label):
            raise ValueError(
                f"{out}: sample {s.sample_id!r}: label {g.label!r} with id {g.label_id} does not match the class list"
            )
        lines.append(f"{g.label}&{s.video_id}&{quality}&{_time(g.start_s)}&{_time(g.end_s)}")
    atomic_write_text(out / "Annotations.txt", "\n".join(lines) + "\n")

    def h5_writer(order: np.ndarray):
        def write(p: Path) -> None:
            with h5py.File(p, "w") as h:
                h.create_dataset("order", data=order)

        return write

    for subset in _SPLIT_STEMS:
        order = np.array([i for i, s in enumerate(rows) if s.subset == subset], np.int64)
        for split in SPLIT_SUFFIXES:
            atomic_write(split_files(out, split)[subset], h5_writer(order))
