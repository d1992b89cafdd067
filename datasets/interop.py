"""Import and export of the feature formats users already have.

UnAV-100 release (one ``.npy`` per video and stream, ``T x D`` float32)::

    <vid>_rgb.npy                      -> stream i3d_rgb        (25 fps, 24/8 frames, 1024)
    <vid>_flow.npy                     -> stream i3d_flow       (25 fps, 24/8 frames, 1024)
    <vid>_vggish.npy                   -> stream vggish         (16 kHz, 0.96 s / 0.32 s, 128)
    <vid>_one_peace_video_finetune.npy -> stream onepeace_video (16 fps, 16/4 frames, 1536)
    <vid>_one_peace_audio.npy          -> stream onepeace_audio (16 kHz, 1 s / 0.25 s, 1536)

AVE release (row-major over the 4143 rows of Annotations.txt, key ``avadataset``)::

    visual_feature.h5  N x 10 x 7 x 7 x 512 -> stream vgg19  (16 fps, 16 frames per 1-s segment)
    audio_feature.h5   N x 10 x 128         -> stream vggish (16 kHz, 0.96 s example per 1 s)

AVE stores hold one entry per VIDEO; rows that repeat a video must carry identical features
(checked) and export writes them back once per row, in annotation order.

Imported streams record ``weights_sha256 = "unknown"`` and their source in ``provenance``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from avel.datasets.annotations import AnnotationSet, unsafe_id_reason
from avel.datasets.fileio import atomic_write
from avel.datasets.sampling import (
    AVE_VGG19,
    AVE_VGGISH,
    UNAV100_I3D,
    UNAV100_ONEPEACE_AUDIO,
    UNAV100_ONEPEACE_VIDEO,
    UNAV100_VGGISH,
    SamplingPlan,
)
from avel.datasets.store import FeatureStore, StoreError, StoreWriter, StreamSpec, VideoMeta


@dataclass(frozen=True)
class NpyStream:
    """How one ``<vid><suffix>.npy`` family maps to a store stream."""

    suffix: str
    stream: str
    extractor: str
    plan: SamplingPlan
    dim: int


UNAV_NPY_STREAMS: tuple[NpyStream, ...] = (
    NpyStream("_rgb", "i3d_rgb", "i3d", UNAV100_I3D, 1024),
    NpyStream("_flow", "i3d_flow", "i3d", UNAV100_I3D, 1024),
    NpyStream("_vggish", "vggish", "vggish", UNAV100_VGGISH, 128),
    NpyStream("_one_peace_video_finetune", "onepeace_video", "onepeace_video_k400", UNAV100_ONEPEACE_VIDEO, 1536),
    NpyStream("_one_peace_audio", "onepeace_audio", "onepeace_audio", UNAV100_ONEPEACE_AUDIO, 1536),
)

ProgressFn = Callable[[int], object]  # called with the count done; its return value is ignored


def _save_npy(path: Path, rows: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temp name
        np.save(f, rows)


@dataclass
class ImportReport:
    videos: int = 0
    skipped_existing: int = 0
    problems: list[str] = field(default_factory=list)


def _scan_npy(folder: Path, families: Iterable[NpyStream]) -> dict[str, dict[str, Path]]:
    """``{video_id: {stream: path}}`` for every recognised ``.npy`` in ``folder``."""
    # Longest suffix first: "_one_peace_video_finetune" must not be read as "..._video" + ...
    fams = sorted(families, key=lambda f: -len(f.suffix))
    found: dict[str, dict[str, Path]] = {}
    for entry in os.scandir(folder):
        if not entry.name.endswith(".npy"):
            continue
        stem = entry.name[:-4]
        for fam in fams:
            if stem.endswith(fam.suffix) and len(stem) > len(fam.suffix):
                found.setdefault(stem[: -len(fam.suffix)], {})[fam.stream] = Path(entry.path)
                break
    return found


def import_unav_npy(
    folder: str | os.PathLike,
    store: str | os.PathLike,
    *,
    annotations: AnnotationSet | None = None,
    streams: Iterable[str] | None = None,
    shard_max_videos: int = 256,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import a UnAV-style per-video ``.npy`` folder into a store.

    Args:
        folder: directory with ``<vid>_<stream>.npy`` files (see module doc).
        store: destination store (created, or extended: committed videos are skipped).
        annotations: optional UnAV-100 annotations; gives durations and restricts the import
            to annotated videos.
        streams: store stream names to import (default: every family present).
        shard_max_videos: videos per shard.
        progress: called with the number of videos done after each video.

    Every problem (wrong dim, non-2-D array, unreadable file) is reported in the returned
    :class:`ImportReport` naming the file; the other videos are still imported.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    families = [f for f in UNAV_NPY_STREAMS if streams is None or f.stream in set(streams)]
    if streams is not None:
        unknown = set(streams) - {f.stream for f in UNAV_NPY_STREAMS}
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}; known: {[f.stream for f in UNAV_NPY_STREAMS]}")
    found = _scan_npy(folder, families)
    if not found:
        raise StoreError(f"{folder}: no files named <video_id>{{{','.join(f.suffix for f in families)}}}.npy")
    present = {s for files in found.values() for s in files}
    fam_by_stream = {f.stream: f for f in families if f.stream in present}
    specs = {
        f.stream: StreamSpec(
            extractor=f.extractor,
            plan=f.plan,
            feature_shape=(f.dim,),
            dtype="float32",
            config={"source_format": "unav100-npy", "suffix": f.suffix},
            weights_sha256="unknown",
            provenance={"imported_from": str(folder.resolve())},
        )
        for f in fam_by_stream.values()
    }
    durations = {}
    if annotations is not None:
        durations = {s.video_id: s.duration_s for s in annotations}
        found = {v: files for v, files in found.items() if v in durations}
    report = ImportReport()
    with StoreWriter(
        store,
        dataset=annotations.dataset if annotations else "unav100",
        streams=specs,
        shard_max_videos=shard_max_videos,
    ) as writer:
        done = {s: writer.committed(s) for s in specs}
        for n, vid in enumerate(sorted(found), 1):
            feats = {}
            for stream, path in sorted(found[vid].items()):
                if vid in done[stream]:
                    continue
                try:
                    rows = np.load(path, allow_pickle=False)
                except (OSError, ValueError) as e:
                    report.problems.append(f"{path}: cannot read ({e})")
                    continue
                dim = fam_by_stream[stream].dim
                if rows.ndim != 2 or rows.shape[1] != dim or rows.shape[0] < 1:
                    report.problems.append(f"{path}: shape {rows.shape}, expected T x {dim} with T >= 1")
                    continue
                if rows.dtype.kind != "f":
                    report.problems.append(f"{path}: dtype {rows.dtype}, expected floating-point features")
                    continue
                if not np.all(np.isfinite(rows)):
                    report.problems.append(
                        f"{path}: NaN or Inf in rows {np.flatnonzero(~np.isfinite(rows).all(1))[:5].tolist()}"
                    )
                    continue
                feats[stream] = rows
            if not feats:
                report.skipped_existing += 1
            else:
                writer.add(
                    vid, feats, meta=VideoMeta(duration_s=durations.get(vid), extra={"imported_from": str(folder)})
                )
                report.videos += 1
            if progress:
                progress(n)
    return report


def export_unav_npy(
    store: str | os.PathLike | FeatureStore,
    folder: str | os.PathLike,
    *,
    streams: Mapping[str, str] | None = None,
    videos: Iterable[str] | None = None,
    progress: ProgressFn | None = None,
) -> int:
    """Write ``<vid><suffix>.npy`` files from a store (inverse of :func:`import_unav_npy`).

    Args:
        store: source store.
        folder: output directory (created).
        streams: ``{store_stream: suffix}``; default maps the known streams present in the
            store to their release suffix (``i3d_rgb`` -> ``_rgb``, ...).
        videos: subset of video ids (default all).
        progress: called with the number of videos done.

    Files are written atomically (temp + rename). Returns the number of files written.
    """
    st = store if isinstance(store, FeatureStore) else FeatureStore(store)
    if streams is None:
        streams = {f.stream: f.suffix for f in UNAV_NPY_STREAMS if f.stream in st.streams}
        if not streams:
            raise StoreError(
                f"{st.root}: none of the UnAV streams {[f.stream for f in UNAV_NPY_STREAMS]} "
                f"are in this store (it has {sorted(st.streams)}); pass streams explicitly"
            )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for n, vid in enumerate(videos or st.videos(), 1):
        if not is_safe_video_id(vid):
            raise StoreError(f"video id {vid!r} cannot be used as a file name in {out}")
        for stream, suffix in streams.items():
            if not st.has(vid, stream):
                continue
            rows = st.read(vid, stream).astype(np.float32, copy=False)
            # one file per video and stream: a rerun rewrites them, no fsync each
            atomic_write(out / f"{vid}{suffix}.npy", functools.partial(_save_npy, rows=rows), durable=False)
            written += 1
        if progress:
            progress(n)
    return written


# ---------------------------------------------------------------------------------------
# AVE
# ---------------------------------------------------------------------------------------
AVE_KEY = "avadataset"


def _h5_array(path: Path, key: str = AVE_KEY) -> h5py.Dataset:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StoreError(f"{path}: cannot open as HDF5 ({e})") from e
    if key not in f:
        raise StoreError(f"{path}: no dataset {key!r} (keys: {list(f.keys())})")
    return f[key]


def import_ave_h5(
    annotations: AnnotationSet,
    store: str | os.PathLike,
    *,
    visual_h5: str | os.PathLike | None = None,
    audio_h5: str | os.PathLike | None = None,
    visual_stream: str = "vgg19",
    audio_stream: str = "vggish",
    dtype: str = "float32",
    shard_max_videos: int = 256,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import the AVE feature files into a store, one entry per video.

    Args:
        annotations: AVE annotation set; its row order (``extra["row"]``) indexes the h5 rows.
        store: destination store.
        visual_h5: ``visual_feature.h5`` (N x 10 x 7 x 7 x 512), optional.
        audio_h5: ``audio_feature.h5`` (N x 10 x 128), optional.
        visual_stream, audio_stream: stream names in the store.
        dtype: stored dtype. The release's visual file is float64 (8.3 GB); float32 (the
            default) halves it; pass ``"float64"`` for a bit-exact round trip.
        shard_max_videos: videos per shard.
        progress: called with the number of rows done.

    Rows that repeat a video must hold identical features; a difference is reported
    naming both rows, and the first row's features are kept.
    """
    if visual_h5 is None and audio_h5 is None:
        raise ValueError("give visual_h5 and/or audio_h5")
    sources: dict[str, tuple[Path, SamplingPlan, tuple[int, ...], str]] = {}
    if visual_h5 is not None:
        sources[visual_stream] = (Path(visual_h5), AVE_VGG19, (7, 7, 512), "vgg19")
    if audio_h5 is not None:
        sources[audio_stream] = (Path(audio_h5), AVE_VGGISH, (128,), "vggish")
    arrays = {s: _h5_array(p) for s, (p, *_rest) in sources.items()}
    rows = sorted(annotations, key=lambda s: s.extra.get("row", 0))
    for s, arr in arrays.items():
        path, _plan, shape, _ex = sources[s]
        if arr.ndim != 2 + len(shape) or tuple(arr.shape[2:]) != shape:
            raise StoreError(f"{path}: shape {arr.shape}, expected N x 10 x {' x '.join(map(str, shape))}")
        if arr.shape[0] != len(rows):
            raise StoreError(f"{path}: {arr.shape[0]} rows, the annotations have {len(rows)}")
    specs = {
        s: StreamSpec(
            extractor=ex,
            plan=plan,
            feature_shape=shape,
            dtype=dtype,
            config={"source_format": "ave-h5"},
            weights_sha256="unknown",
            provenance={"imported_from": str(path.resolve()), "source_dtype": str(arrays[s].dtype)},
        )
        for s, (path, plan, shape, ex) in sources.items()
    }
    report = ImportReport()
    first_row: dict[str, int] = {}
    with StoreWriter(store, dataset="ave", streams=specs, shard_max_videos=shard_max_videos) as writer:
        done = {s: writer.committed(s) for s in specs}
        for n, sample in enumerate(rows, 1):
            r = int(sample.extra.get("row", n - 1))
            vid = sample.video_id
            if vid in first_row:
                r0 = first_row[vid]
                for s, arr in arrays.items():
                    if not np.array_equal(arr[r], arr[r0]):
                        report.problems.append(
                            f"{sources[s][0]}: rows {r0} and {r} (video {vid!r}) differ; kept row {r0}"
                        )
            else:
                first_row[vid] = r
                feats = {}
                for s, arr in arrays.items():
                    if vid in done[s]:
                        continue
                    try:
                        feats[s] = arr[r]
                    except (OSError, ValueError) as e:  # a corrupt chunk of the file
                        raise StoreError(f"{sources[s][0]}: row {r} (video {vid!r}): cannot read ({e})") from None
                    if not np.all(np.isfinite(feats[s])):
                        report.problems.append(f"{sources[s][0]}: row {r} (video {vid!r}): NaN or Inf; not imported")
                        del feats[s]
                if feats:
                    writer.add(vid, feats, meta=VideoMeta(duration_s=sample.duration_s, extra={"ave_row": r}))
                    report.videos += 1
                else:
                    report.skipped_existing += 1
            if progress:
                progress(n)
    for arr in arrays.values():
        arr.file.close()
    return report


def export_ave_h5(
    store: str | os.PathLike | FeatureStore,
    annotations: AnnotationSet,
    out_dir: str | os.PathLike,
    *,
    visual_stream: str | None = "vgg19",
    audio_stream: str | None = "vggish",
    dtype: str | None = None,
) -> list[Path]:
    """Write ``visual_feature.h5`` / ``audio_feature.h5`` (key ``avadataset``) in row order.

    ``dtype`` defaults to the import's source dtype when recorded, else the stored one.
    Files are written to a temp name and renamed. Returns the written paths.
    """
    st = store if isinstance(store, FeatureStore) else FeatureStore(store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(annotations, key=lambda s: s.extra.get("row", 0))
    written = []
    for stream, name in ((visual_stream, "visual_feature.h5"), (audio_stream, "audio_feature.h5")):
        if stream is None:
            continue
        if stream not in st.streams:
            raise StoreError(f"{st.root}: no stream {stream!r} (has {sorted(st.streams)})")
        spec = st.streams[stream]
        out_dtype = dtype or spec.provenance.get("source_dtype") or spec.dtype
        missing = [s.video_id for s in rows if not st.has(s.video_id, stream)]
        if missing:
            raise StoreError(f"{st.root}: {len(missing)} AVE videos lack stream {stream!r}, e.g. {missing[:5]}")
        first = st.read(rows[0].video_id, stream)
        path = out / name
        atomic_write(
            path,
            functools.partial(
                _write_ave_h5,
                st=st,
                video_ids=[s.video_id for s in rows],
                stream=stream,
                row_shape=first.shape,
                dtype=out_dtype,
            ),
        )
        written.append(path)
    return written


def _write_ave_h5(
    path: Path, *, st: FeatureStore, video_ids: list[str], stream: str, row_shape: tuple[int, ...], dtype: Any
) -> None:
    """One AVE feature file: ``AVE_KEY`` = N x *row_shape, row i from video ``video_ids[i]``."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(AVE_KEY, shape=(len(video_ids), *row_shape), dtype=dtype)
        for i, vid in enumerate(video_ids):
            ds[i] = st.read(vid, stream)


def is_safe_video_id(video_id: str) -> bool:
    """True when ``video_id`` can be used as a single file name component (a safe id, see
    :func:`avel.datasets.annotations.unsafe_id_reason`, without sub-folders)."""
    return unsafe_id_reason(video_id) is None and "/" not in video_id and "\\" not in video_id
