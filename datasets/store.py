"""The feature store: self-describing HDF5 shards plus an append-only commit log.

A store (schema version 2) is a directory::

    STORE/
      log/commits.jsonl  append-only commit log: the authority on what the store holds
      manifest.json      compacted snapshot of a prefix of the log (a cache: rebuilt when lost)
      store.lock         advisory lock held for the few milliseconds of a commit or a claim
      shards/*.h5        immutable, self-describing shards (dataset, stream specs, writer,
                         per-video checksums); only shards committed in the log are visible
      claims/            per-video claims and writer leases of running writers
      errors.jsonl       one JSON object per failed (video, stage)
      deletions.jsonl    every file the store ever deleted, and why

Shard layout (concatenated arrays + offsets; see docs/feature-store.md for the measurement
that chose it over one HDF5 group per video)::

    /                         attrs: schema_version, dataset, streams_json, writer, host, pid, created
    /videos/ids               V            utf-8 video ids
    /videos/meta_json         V            per-video metadata (duration_s, native_fps, ...)
    /videos/meta_crc32        V            CRC-32 of each meta_json string
    /streams/<s>/data         N_s x F...   rows of all videos, concatenated
    /streams/<s>/offsets      V + 1        rows of video i are data[offsets[i]:offsets[i+1]]
    /streams/<s>/start_s      N_s          exact row start times from the sampling plan
    /streams/<s>/end_s        N_s
    /streams/<s>/padded       V            the video was shorter than one window
    /streams/<s>/checksums    V x 3        CRC-32 of the rows, of start_s+end_s, of (offsets, padded)

Version-1 shards have ``crc32`` (rows only) instead of ``checksums`` and no attributes;
version-1 stores (``manifest.json`` rewritten per commit) stay readable, and
:func:`upgrade_store` (``avel store upgrade STORE``) converts them.

A video may lack a stream in a shard (zero rows: e.g. no audio track); a later shard may add
a stream to videos that are already committed (a new backbone), but a (video, stream) pair
is committed at most once.

Commit protocol: the shard is built in memory, written to ``shards/.tmp-*``, fsync'ed; then
under the store lock: read the log's new tail (O(new records)), mark pairs that another
writer committed meanwhile as absent, rename to ``shards/shard-*.h5``, fsync the directory,
append one fsync'ed record to the log. The cost does not grow with the store. A crash
before the append leaves an uncommitted shard that the next writer adopts (it is complete
and checked) or, when all its pairs are committed elsewhere and its writer is gone, deletes
and records in ``deletions.jsonl``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from avel.datasets.fileio import RANDOM_WEIGHTS, atomic_write_bytes, atomic_write_text, fsync_dir
from avel.datasets.sampling import SamplingPlan
from avel.datasets.store_log import (
    CLAIMS,
    DELETIONS,
    LOCK,
    LOG,
    MANIFEST,
    SCHEMA_VERSION,
    SHARD_DIR,
    StoreCorruptError,
    StoreError,
    StoreState,
    WriterLease,
    append_records,
    claim_path,
    cut_torn_tail,
    decode_records,
    load_state,
    log_deletion,
    now_iso,
    os_error_message,
    read_claim,
    read_json_file,
    read_log_tail,
    read_snapshot,
    sha256_hex,
    store_lock,
    write_new_file,
    write_snapshot,
    writer_gone,
)
from avel.datasets.store_remote import RemoteStore, is_remote

__all__ = [
    "FeatureStore",
    "StoreWriter",
    "StreamSpec",
    "VideoMeta",
    "StoreError",
    "StoreCorruptError",
    "AlignmentError",
    "append_error",
    "repair_store",
    "upgrade_store",
    "compact_store",
    "atomic_write_text",
    "SCHEMA_VERSION",
    "MANIFEST",
    "ERRORS",
    "LOG",
    "DELETIONS",
    "CLAIMS",
    "LOCK",
]

ERRORS = "errors.jsonl"
_PREFETCH_BYTES = 16 << 20  # shards up to this size are read ahead whole when first opened
# shards up to this size have their sha256 checked when first opened (about 1 ms per MiB), so
# HDF5 never parses a damaged small shard (a damaged variable-length string heap can hang it)
_HASH_ON_OPEN_BYTES = 2 << 20
V1_LOCK = "manifest.lock"
_STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
T = TypeVar("T")


class AlignmentError(StoreError):
    """Streams of one video do not fit on one time grid."""


# ---------------------------------------------------------------------------------------
# Specs and metadata
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    """Everything needed to interpret (and reproduce) one feature stream.

    Args:
        extractor: registry name of the extractor (or ``"imported:<format>"``).
        plan: the sampling plan that produced the rows.
        feature_shape: shape of one row, e.g. ``(1024,)`` or ``(7, 7, 512)``.
        dtype: numpy dtype name of the stored rows.
        config: the extractor's full configuration.
        weights_sha256: sha256 of the checkpoint file, ``"random"`` for random weights,
            ``"unknown"`` for imported features of unknown provenance.
        provenance: free-form origin notes (import source, tool versions, ...).
    """

    extractor: str
    plan: SamplingPlan
    feature_shape: tuple[int, ...]
    dtype: str = "float32"
    config: Mapping[str, Any] = field(default_factory=dict)
    weights_sha256: str = "unknown"
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        return int(np.prod(self.feature_shape))

    @property
    def is_random(self) -> bool:
        return self.weights_sha256 == RANDOM_WEIGHTS

    def to_dict(self) -> dict[str, Any]:
        return {
            "extractor": self.extractor,
            "plan": self.plan.to_dict(),
            "frame_shift_s": self.plan.step_seconds,
            "window_s": self.plan.window_seconds,
            "feature_shape": list(self.feature_shape),
            "feature_dim": self.feature_dim,
            "dtype": self.dtype,
            "config": dict(self.config),
            "weights_sha256": self.weights_sha256,
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamSpec:
        return cls(
            extractor=d["extractor"],
            plan=SamplingPlan.from_dict(d["plan"]),
            feature_shape=tuple(int(x) for x in d["feature_shape"]),
            dtype=d.get("dtype", "float32"),
            config=d.get("config", {}),
            weights_sha256=d.get("weights_sha256", "unknown"),
            provenance=d.get("provenance", {}),
        )


@dataclass
class VideoMeta:
    """Per-video metadata stored beside the features (all optional except nothing)."""

    duration_s: float | None = None
    native_fps: float | None = None
    num_frames: int | None = None
    audio_sample_rate: int | None = None
    source_path: str | None = None
    source_size_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(vars(self), sort_keys=True)  # == asdict(self): the fields are JSON values

    @classmethod
    def from_json(cls, s: str) -> VideoMeta:
        return cls(**json.loads(s))


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def _crc32(*arrays: np.ndarray | bytes) -> int:
    c = 0
    for a in arrays:
        c = zlib.crc32(a if isinstance(a, bytes) else np.ascontiguousarray(a).data, c)  # the buffer's bytes
    return c & 0xFFFFFFFF


def _flags_crc(a: int, b: int, padded: bool) -> int:
    return zlib.crc32(
        int(a).to_bytes(8, "little") + int(b).to_bytes(8, "little") + int(bool(padded)).to_bytes(8, "little")
    )


def _h5_locking() -> bool | None:
    """HDF5 file locking; ``AVEL_HDF5_LOCKING=0`` disables it (some network filesystems)."""
    v = os.environ.get("AVEL_HDF5_LOCKING")
    return None if v is None else v not in ("0", "false", "FALSE", "no")


def _open_h5(path: Path, mode: str) -> h5py.File:
    locking = _h5_locking()
    if locking is None:
        return h5py.File(path, mode)
    return h5py.File(path, mode, locking=locking)


def _check_video_id(video_id: str) -> None:
    if not isinstance(video_id, str) or not video_id or "\x00" in video_id:
        raise ValueError(f"invalid video id {video_id!r}: expected a non-empty string without NUL")


def _strs(a: np.ndarray) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else x for x in a]


def _read_strs(path: Path, ds: h5py.Dataset, name: str, selection: Any = ()) -> list[str]:
    """The strings of ``ds[selection]`` (dataset ``name`` of shard ``path``); StoreCorruptError when unreadable."""
    try:
        return _strs(ds[selection])
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise StoreCorruptError(f"shard {path}: {name} cannot be read ({e})") from e


def read_manifest(root: Path) -> dict:
    """The committed state of a store as one manifest-like dict (v1 or v2)."""
    return _open_state(Path(root))[0].to_snapshot()


def _open_state(root: Path, *, lazy: bool = False) -> tuple[StoreState, list[str]]:
    """Read-only: (state, notes) of a v2 store (snapshot + log) or a v1 store (manifest).
    ``lazy``: see :func:`avel.datasets.store_log.load_state`."""
    root = Path(root)
    if (root / LOG).exists():
        return load_state(root, lazy=lazy)
    if (root / MANIFEST).exists():
        m = read_json_file(root / MANIFEST)
        version = m.get("schema_version")
        if version == 1:
            for key in ("dataset", "streams", "shards"):
                if key not in m:
                    raise StoreCorruptError(f"{root / MANIFEST}: missing key {key!r}")
            return StoreState.from_snapshot({**m, "log": {}}), []
        if version == SCHEMA_VERSION:
            raise StoreError(
                f"{root}: {LOG} is missing (manifest.json alone is a snapshot that may be stale); "
                f"run `avel info --repair {root}` to rebuild the log from the snapshot and the shards"
            )
        raise StoreError(f"{root / MANIFEST}: schema_version {version!r} is not supported (expected 1 or 2)")
    shards = list((root / SHARD_DIR).glob("shard-*.h5")) if (root / SHARD_DIR).is_dir() else []
    if shards:
        raise StoreError(
            f"{root}: {len(shards)} shards but no {MANIFEST} or {LOG}; run "
            f"`avel info --repair {root}` to rebuild the index from the shards"
        )
    raise StoreError(f"{root}: not a feature store (no {MANIFEST})")


# ---------------------------------------------------------------------------------------
# Shards: build, inspect, check
# ---------------------------------------------------------------------------------------
@dataclass
class _PendingVideo:
    video_id: str
    features: dict[str, np.ndarray]
    padded: dict[str, bool]
    meta: VideoMeta
    times: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # stored times (upgrade); default: plan


def build_shard_image(
    pending: list[_PendingVideo], specs: Mapping[str, StreamSpec], *, dataset: str, writer: Mapping[str, Any]
) -> tuple[bytes, dict[str, int]]:
    """One v2 shard as bytes (built in memory, so the disk sees a plain write whose errors
    are ordinary ``OSError``s) and its rows per stream."""
    str_dt = h5py.string_dtype("utf-8")
    names = sorted({s for p in pending for s in p.features})
    rows_per_stream: dict[str, int] = {}
    plan_times: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, int]] = {}  # (stream, rows) -> times, crc
    # HDF5's in-memory "core" driver: nothing touches the disk until the image is written
    with h5py.File(f"shard-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False) as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["layout"] = "concatenated"
        f.attrs["dataset"] = dataset
        f.attrs["streams_json"] = json.dumps({n: specs[n].to_dict() for n in names}, sort_keys=True)
        for k, v in writer.items():
            f.attrs[k] = v
        vg = f.create_group("videos")
        metas = [p.meta.to_json() for p in pending]
        vg.create_dataset("ids", data=np.array([p.video_id for p in pending], dtype=object), dtype=str_dt)
        vg.create_dataset("meta_json", data=np.array(metas, dtype=object), dtype=str_dt)
        vg.create_dataset("meta_crc32", data=np.array([_crc32(m.encode("utf-8")) for m in metas], np.uint32))
        sg = f.create_group("streams")
        for name in names:
            spec = specs[name]
            lengths = np.array([p.features[name].shape[0] if name in p.features else 0 for p in pending])
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            total = int(offsets[-1])
            g = sg.create_group(name)
            data = np.empty((total, *spec.feature_shape), dtype=spec.dtype)
            starts = np.empty(total, np.float64)
            ends = np.empty(total, np.float64)
            sums = np.zeros((len(pending), 3), np.uint32)
            padded = np.zeros(len(pending), bool)
            for i, p in enumerate(pending):
                a, b = int(offsets[i]), int(offsets[i + 1])
                padded[i] = bool(p.padded.get(name, False)) if name in p.features else False
                if name in p.features:
                    data[a:b] = p.features[name]
                    if p.times and name in p.times:
                        starts[a:b], ends[a:b] = p.times[name]
                        times_crc = _crc32(starts[a:b], ends[a:b])
                    else:
                        cached = plan_times.get((name, b - a))
                        if cached is None:
                            st, en = spec.plan.row_times(b - a)
                            cached = plan_times[(name, b - a)] = (st, en, _crc32(st, en))
                        starts[a:b], ends[a:b], times_crc = cached
                    sums[i] = (_crc32(data[a:b]), times_crc, _flags_crc(a, b, padded[i]))
                else:
                    sums[i] = (0, 0, _flags_crc(a, b, False))
            g.create_dataset("data", data=data)
            g.create_dataset("offsets", data=offsets)
            g.create_dataset("start_s", data=starts)
            g.create_dataset("end_s", data=ends)
            g.create_dataset("checksums", data=sums)
            g.create_dataset("padded", data=padded)
            rows_per_stream[name] = total
        f.flush()
        image = f.id.get_file_image()
    return image, rows_per_stream


class _ShardIndex:
    """One open shard's index, read lazily: a stream's offsets, checksums and padded flags on
    the first read of that stream, the ids only when asked (a read checks the one id at the
    video's position), the metadata on the first :meth:`FeatureStore.meta`. Damage is a
    StoreCorruptError naming the shard."""

    def __init__(self, f: h5py.File, path: Path) -> None:
        self.path = path
        try:
            self._f = f
            self.version = int(f.attrs.get("schema_version", 1))
            self._ids_ds = f["videos/ids"]
            self.meta_ds = f["videos/meta_json"]
            self._streams = f["streams"]
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise StoreCorruptError(f"shard {path}: unreadable index ({e})") from e
        self.n = int(self._ids_ds.shape[0]) if self._ids_ds.ndim == 1 else -1
        if self.n < 0 or self.meta_ds.shape != (self.n,):
            raise StoreCorruptError(f"shard {path}: videos/meta_json does not match its videos/ids")
        self._ids: list[str] | None = None
        self._position: dict[str, int] | None = None
        self._checked_ids: set[int] = set()
        self._meta_crc: np.ndarray | None = None
        self.meta_json: list[str] | None = None
        self.offsets: dict[str, np.ndarray] = {}
        self.sums: dict[str, np.ndarray] = {}  # v2: V x 3; v1: V (rows CRC only)
        self.padded: dict[str, np.ndarray] = {}
        self.data: dict[str, h5py.Dataset] = {}
        self.starts: dict[str, h5py.Dataset] = {}
        self.ends: dict[str, h5py.Dataset] = {}

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = _read_strs(self.path, self._ids_ds, "videos/ids")
        return self._ids

    @property
    def position(self) -> dict[str, int]:
        if self._position is None:
            self._position = {v: i for i, v in enumerate(self.ids)}
        return self._position

    def id_at(self, i: int) -> str:
        if self._ids is not None:
            return self._ids[i]
        return _read_strs(self.path, self._ids_ds, "videos/ids", slice(i, i + 1))[0]

    def check_id(self, i: int, video_id: str) -> None:
        """The shard holds ``video_id`` at position ``i``, as the log says."""
        if i in self._checked_ids:
            return
        if not 0 <= i < self.n or self.id_at(i) != video_id:
            raise StoreCorruptError(
                f"shard {self.path}: video ids differ from the log (position {i} should be {video_id!r})"
            )
        self._checked_ids.add(i)

    @property
    def meta_crc(self) -> np.ndarray | None:
        if self.version < 2:
            return None
        if self._meta_crc is None:
            try:
                self._meta_crc = self._f["videos/meta_crc32"][()]
            except (KeyError, OSError, ValueError, TypeError) as e:
                raise StoreCorruptError(f"shard {self.path}: videos/meta_crc32 cannot be read ({e})") from e
            if self._meta_crc.shape != (self.n,):
                raise StoreCorruptError(f"shard {self.path}: videos/meta_crc32 does not match its {self.n} videos")
        return self._meta_crc

    def load(self, s: str) -> None:
        """Read stream ``s``'s index arrays (once)."""
        if s in self.offsets:
            return
        try:  # h5py's low-level calls: a third of the high-level path's time on a first read
            gid = h5py.h5g.open(self._f.id, f"streams/{s}".encode())
            offsets = _read_whole(gid, b"offsets")
            sums = _read_whole(gid, b"checksums" if self.version >= 2 else b"crc32")
            padded = _read_whole(gid, b"padded")
            self.data[s], self.starts[s], self.ends[s] = (
                h5py.Dataset(h5py.h5d.open(gid, name)) for name in (b"data", b"start_s", b"end_s")
            )
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise StoreCorruptError(f"shard {self.path}: unreadable index of stream {s!r} ({e})") from e
        if offsets.shape != (self.n + 1,) or len(sums) != self.n or len(padded) != self.n:
            raise StoreCorruptError(f"shard {self.path}: stream {s!r} index arrays do not match its {self.n} videos")
        self.sums[s], self.padded[s] = sums, padded
        self.offsets[s] = offsets


def _read_whole(gid: Any, name: bytes) -> np.ndarray:
    """A whole dataset of group ``gid`` (h5py low-level id) as an array."""
    d = h5py.h5d.open(gid, name)
    out = np.empty(d.shape, dtype=d.dtype)
    d.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def _load_index(f: h5py.File, path: Path, streams: Iterable[str]) -> _ShardIndex:
    """A shard's whole index (ids, metadata CRCs and ``streams``), read now (verify, repair)."""
    index = _ShardIndex(f, path)
    index.ids  # noqa: B018 (reads them)
    index.meta_crc  # noqa: B018
    for s in streams:
        index.load(s)
    return index


def _meta_json(index: _ShardIndex) -> list[str]:
    if index.meta_json is None:
        index.meta_json = _read_strs(index.path, index.meta_ds, "videos/meta_json")
    return index.meta_json


def _check_video(
    index: _ShardIndex, stream: str, i: int, *, with_meta: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, start_s, end_s of video ``i`` in ``stream``, checked against the per-video
    checksums; a mismatch raises StoreCorruptError naming the shard, video and field."""
    index.load(stream)

    def where() -> str:
        return f"shard {index.path}: video {index.id_at(i)!r} stream {stream!r}"

    a, b = int(index.offsets[stream][i]), int(index.offsets[stream][i + 1])
    try:
        n_data = index.data[stream].shape[0]
        if not 0 <= a < b <= n_data:
            raise StoreCorruptError(
                f"{where()}: offsets {a}:{b} are invalid (data has {n_data} rows): offsets differ from what was written"
            )
        rows = index.data[stream][a:b]
        starts, ends = index.starts[stream][a:b], index.ends[stream][a:b]
    except (OSError, KeyError, ValueError, TypeError) as e:  # h5py: damaged objects, names, types
        raise StoreCorruptError(f"{where()}: cannot be read ({e})") from e
    if index.version < 2:
        if _crc32(rows) != int(index.sums[stream][i]):
            vid = index.id_at(i)
            raise StoreCorruptError(f"{where()}: checksum mismatch for video {vid!r} stream {stream!r} (rows differ)")
        return rows, starts, ends
    want = index.sums[stream][i]
    if _flags_crc(a, b, index.padded[stream][i]) != int(want[2]):
        raise StoreCorruptError(
            f"{where()}: checksum mismatch for video {index.id_at(i)!r}: offsets or padded flag differ from what "
            f"was written"
        )
    if _crc32(rows) != int(want[0]):
        raise StoreCorruptError(
            f"{where()}: checksum mismatch for video {index.id_at(i)!r}: rows differ from what was written"
        )
    if _crc32(starts, ends) != int(want[1]):
        raise StoreCorruptError(
            f"{where()}: checksum mismatch for video {index.id_at(i)!r}: start_s/end_s differ from what was written"
        )
    if with_meta:
        _check_meta(index, i)
    return rows, starts, ends


def _check_meta(index: _ShardIndex, i: int) -> None:
    crc = index.meta_crc
    if crc is not None and _crc32(_meta_json(index)[i].encode("utf-8")) != int(crc[i]):
        raise StoreCorruptError(
            f"shard {index.path}: checksum mismatch for video {index.id_at(i)!r}: meta_json differs from what was "
            f"written"
        )


def _verify_shard(path: Path, entry: Mapping[str, Any] | None, *, full: bool = True) -> list[str]:
    """Problems of one shard file: size and sha256 against its log entry, HDF5 structure,
    every video's checksums (rows, times, offsets/padded, meta_json)."""
    if not path.exists():
        return [f"shard {path} is missing"]
    if entry is not None:
        size = path.stat().st_size
        if size != entry["size_bytes"]:
            return [f"shard {path} has {size} bytes, the log says {entry['size_bytes']} (truncated or modified)"]
        if full and sha256_hex(path) != entry["sha256"]:
            problems = [f"shard {path}: sha256 differs from the log (the file was modified)"]
        else:
            problems = []
    else:
        problems = []
    try:
        with _open_h5(path, "r") as f:
            streams = entry["streams"] if entry is not None else list(f.get("streams", {}))
            index = _load_index(f, path, streams)
            if entry is not None and index.ids != list(entry["videos"]):
                problems.append(f"shard {path}: video ids differ from the log")
            for s in streams:
                n_data = index.data[s].shape[0]
                if int(index.offsets[s][-1]) != n_data:
                    problems.append(
                        f"shard {path}: stream {s} offsets end at {index.offsets[s][-1]}, data has {n_data} rows"
                    )
                absent = set(entry.get("absent", {}).get(s, ())) if entry is not None else set()
                for i, v in enumerate(index.ids):
                    if index.offsets[s][i + 1] == index.offsets[s][i] and (
                        entry is None or v in absent or index.version < 2
                    ):
                        if index.version >= 2 and _flags_crc(
                            int(index.offsets[s][i]), int(index.offsets[s][i]), index.padded[s][i]
                        ) != int(index.sums[s][i][2]):
                            problems.append(
                                f"shard {path}: checksum mismatch for video {v!r}: offsets or padded "
                                f"flag differ from what was written"
                            )
                        continue
                    try:
                        _check_video(index, s, i, with_meta=False)
                    except StoreCorruptError as e:
                        problems.append(str(e))
            for i in range(len(index.ids)):
                try:
                    _check_meta(index, i)
                except StoreCorruptError as e:
                    problems.append(str(e))
    except StoreCorruptError as e:
        problems.append(str(e))
    except (OSError, KeyError, ValueError, TypeError) as e:
        problems.append(f"shard {path} cannot be read by HDF5: {e}")
    return problems


def _shard_attrs(path: Path) -> dict[str, Any]:
    """Self-description of a v2 shard: attrs, ids, streams and absent pairs, rows."""
    with _open_h5(path, "r") as f:
        attrs = {
            k: (v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v)
            for k, v in f.attrs.items()
        }
        ids = _strs(f["videos/ids"][()])
        streams, absent, rows = [], {}, {}
        for s in f["streams"]:
            off = f[f"streams/{s}/offsets"][()]
            streams.append(s)
            rows[s] = int(off[-1])
            missing = [v for i, v in enumerate(ids) if off[i + 1] == off[i]]
            if missing:
                absent[s] = missing
    attrs.update(ids=ids, streams=sorted(streams), absent=absent, rows=rows)
    return attrs


def _commit_entry(
    file: str,
    ids: list[str],
    streams: list[str],
    absent: Mapping[str, list[str]],
    rows: Mapping[str, int],
    size: int,
    digest: str,
    writer: str,
    created: str | None = None,
) -> dict:
    return {
        "file": file,
        "videos": ids,
        "streams": streams,
        "absent": {s: v for s, v in absent.items() if v},
        "rows": dict(rows),
        "size_bytes": size,
        "sha256": digest,
        "created": created or now_iso(),
        "writer": writer,
    }


def _parse_tmp_name(name: str) -> tuple[str, int, str] | None:
    """``.tmp-<writer>-<pid>-<host>.h5`` -> (writer, pid, host)."""
    if not (name.startswith(".tmp-") and name.endswith(".h5")):
        return None
    parts = name[len(".tmp-") : -len(".h5")].split("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


# ---------------------------------------------------------------------------------------
# Committed pairs
# ---------------------------------------------------------------------------------------
def _committed_by_stream(shards: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for shard in shards:
        _add_committed(out, shard)
    return out


def _add_committed(out: dict[str, set[str]], shard: Mapping[str, Any]) -> None:
    absent = shard.get("absent", {})
    for s in shard["streams"]:
        vids = out.setdefault(s, set())
        missing = absent.get(s)
        if missing:
            missing = set(missing)
            vids.update(v for v in shard["videos"] if v not in missing)
        else:
            vids.update(shard["videos"])


def _committed_pairs(manifest: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(v, s) for s, vids in _committed_by_stream(manifest["shards"]).items() for v in vids}


# ---------------------------------------------------------------------------------------
# Recovery: adopt uncommitted shards, remove leftovers of writers that are gone
# ---------------------------------------------------------------------------------------
def _reconcile(root: Path, state: StoreState, committed: dict[str, set[str]], *, me: str | None = None) -> list[str]:
    """Under the store lock: adopt complete uncommitted shards (their pairs not committed
    elsewhere are appended to the log), delete (and log) temp files and fully redundant
    shards of writers that are gone. Returns what was done, one line each."""
    actions: list[str] = []
    shard_dir = root / SHARD_DIR
    if not shard_dir.is_dir():
        return actions
    listed = {Path(s["file"]).name for s in state.shards}
    for p in sorted(shard_dir.iterdir(), key=lambda q: (q.stat().st_mtime_ns, q.name)):  # commit order
        tmp = _parse_tmp_name(p.name)
        if tmp is not None:
            wid, pid, host = tmp
            if wid != me and writer_gone(root, wid, host, pid):
                log_deletion(
                    root,
                    p,
                    "temporary file of a writer that is gone (never renamed, never committed)",
                    writer=wid,
                    host=host,
                    pid=pid,
                )
                p.unlink(missing_ok=True)
                actions.append(f"removed temporary file {p.name} of writer {wid} ({host} pid {pid}), which is gone")
            continue
        if not p.name.startswith("shard-") or p.name in listed:
            continue
        problems = _verify_shard(p, None)
        try:
            attrs = _shard_attrs(p)
        except (OSError, KeyError, ValueError) as e:
            problems.append(f"shard {p}: unreadable ({e})")
            parts = p.name.split("-")  # shard-<time>-<writer>-<rand>.h5
            attrs = {"writer": parts[2], "schema_version": 2} if len(parts) == 4 else {}
        if attrs and int(attrs.get("schema_version", 1)) < 2:
            actions.append(
                f"kept {p.name}: an uncommitted version-1 shard (a leftover of an interrupted "
                f"`avel store upgrade`; rerun it)"
            )
            continue
        owner, owner_host, owner_pid = attrs.get("writer", ""), attrs.get("host"), attrs.get("pid")
        if problems:
            pass
        elif attrs.get("dataset") != state.dataset:
            actions.append(f"kept {p.name}: holds dataset {attrs.get('dataset')!r}, the store {state.dataset!r}")
            continue
        if not problems:
            specs = json.loads(attrs["streams_json"])
            conflict = [s for s, d in specs.items() if s in state.streams and state.streams[s] != d]
            if conflict:
                actions.append(f"kept {p.name}: streams {conflict} have a different spec than the store's")
                continue
            absent = {s: list(v) for s, v in attrs["absent"].items()}
            fresh = 0
            for s in attrs["streams"]:
                taken = committed.get(s, set())
                miss = set(absent.get(s, ()))
                for v in attrs["ids"]:
                    if v in miss:
                        continue
                    if v in taken:
                        absent.setdefault(s, []).append(v)
                    else:
                        fresh += 1
            if fresh:
                recs: list[dict[str, Any]] = []
                new_specs = {s: d for s, d in specs.items() if s not in state.streams}
                if new_specs:
                    recs.append({"op": "streams", "streams": new_specs})
                entry = _commit_entry(
                    f"{SHARD_DIR}/{p.name}",
                    attrs["ids"],
                    attrs["streams"],
                    absent,
                    attrs["rows"],
                    p.stat().st_size,
                    sha256_hex(p),
                    owner,
                    attrs.get("created"),
                )
                recs.append({"op": "commit", "shard": entry, "adopted": True})
                append_records(root, recs)
                read_log_tail(root, state)
                _add_committed(committed, entry)
                listed.add(p.name)
                actions.append(f"adopted uncommitted shard {p.name} of writer {owner} ({fresh} video-stream pairs)")
                continue
        if owner and owner != me and writer_gone(root, owner, owner_host, owner_pid):
            reason = (
                "damaged uncommitted leftover: " + "; ".join(problems)[:500]
                if problems
                else "uncommitted leftover of a writer that is gone; all its (video, stream) pairs are committed "
                "in other shards"
            )
            log_deletion(root, p, reason, writer=owner, host=owner_host, pid=owner_pid)
            p.unlink(missing_ok=True)
            actions.append(f"removed {p.name}: {reason}")
        else:
            actions.append(
                f"kept {p.name}: uncommitted"
                + (f" and damaged ({problems[0]})" if problems else "")
                + (f"; its writer {wid} may still be running" if wid else "; its writer is unknown")
            )
    return actions


def _init_records(dataset: str, streams: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any]) -> list[dict]:
    recs: list[dict] = [{"op": "init", "schema_version": SCHEMA_VERSION, "dataset": dataset}]
    if streams:
        recs.append({"op": "streams", "streams": dict(streams)})
    if extra:
        recs.append({"op": "extra", "extra": dict(extra)})
    return recs


def _new_log(root: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Write a complete log atomically (new store, repair, upgrade)."""
    from avel.datasets.store_log import encode_record

    (root / LOG).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(root / LOG, b"".join(encode_record({**r, "time": r.get("time") or now_iso()}) for r in records))


def _recover_locked(
    root: Path,
    *,
    dataset: str | None = None,
    streams: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    allow_damaged_log: bool = False,
) -> tuple[StoreState, list[str]]:
    """Under the store lock: a usable v2 state, rebuilding what is lost where it is
    unambiguous (snapshot from the log; log from the snapshot; log from the shards).
    A damaged log is only cut back to its last good record when ``allow_damaged_log``."""
    actions: list[str] = []
    if (root / LOG).exists():
        cut_torn_tail(root)
        try:
            state, notes = load_state(root)
        except StoreCorruptError:
            if not allow_damaged_log:
                raise
            data = (root / LOG).read_bytes()
            good, lines = [], data.split(b"\n")
            for n, line in enumerate(lines[:-1], 1):
                try:
                    good.extend(decode_records(line + b"\n", root / LOG, n)[0])
                except StoreCorruptError:
                    break
            aside = root / f"{LOG}.damaged-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
            os.replace(root / LOG, aside)
            _new_log(root, good)
            actions.append(
                f"{root / LOG} was damaged at line {len(good) + 1}: kept its first {len(good)} records, "
                f"moved the damaged file to {aside.name}; shards committed after the damage are re-adopted"
            )
            state, notes = load_state(root)
        actions += notes
        return state, actions
    snap = None
    if (root / MANIFEST).exists():
        m = read_json_file(root / MANIFEST)
        if m.get("schema_version") == 1:
            raise StoreError(
                f"{root}: a schema version 1 store; run `avel store upgrade {root}` once (it rewrites "
                f"the shards with full checksums) and rerun"
            )
        try:  # the snapshot with its ids (binary index, or the JSON of older snapshots)
            snap = read_snapshot(root).materialize()
        except StoreCorruptError as e:
            actions.append(f"{e}: the index is rebuilt from the self-describing shards")
    if snap is not None:
        recs = _init_records(snap.dataset, snap.streams, snap.extra)
        recs += [{"op": "commit", "shard": e} for e in snap.shards if (root / e["file"]).exists()]
        actions.append(
            f"{root / LOG} was missing: rebuilt from {MANIFEST} ({len(snap.shards)} shards); shards "
            f"committed after that snapshot are re-adopted"
        )
    else:
        v2 = []
        for p in sorted((root / SHARD_DIR).glob("shard-*.h5")) if (root / SHARD_DIR).is_dir() else []:
            with contextlib.suppress(OSError, KeyError, ValueError):
                a = _shard_attrs(p)
                if int(a.get("schema_version", 1)) >= 2:
                    v2.append(a)
        datasets = {a["dataset"] for a in v2} | ({dataset} if dataset else set())
        if len(datasets) > 1:
            raise StoreError(
                f"{root}: no {MANIFEST} or {LOG}, and the shards hold several datasets "
                f"{sorted(datasets)}; cannot rebuild the index unambiguously"
            )
        if not datasets:
            n = len(list((root / SHARD_DIR).glob("shard-*.h5"))) if (root / SHARD_DIR).is_dir() else 0
            if n:
                raise StoreError(
                    f"{root}: {n} shards but no {MANIFEST} or {LOG}, and the shards are version-1 "
                    f"(no stream specs inside): the index cannot be rebuilt; restore manifest.json"
                )
            raise StoreError(f"{root}: not a feature store (no {MANIFEST})")
        recs = _init_records(datasets.pop(), streams or {}, extra or {})
        if v2:
            actions.append(f"no {MANIFEST} or {LOG}: rebuilding the index from {len(v2)} self-describing shards")
    _new_log(root, recs)
    state, _ = load_state(root)
    return state, actions


# ---------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------
class StoreWriter:
    """Buffers videos and commits them as immutable shards.

    Usage::

        specs = {"vggish": StreamSpec(extractor="vggish", plan=UNAV100_VGGISH, feature_shape=(128,))}
        with StoreWriter(path, dataset="unav100", streams=specs) as writer:
            for job in writer.claim_each(jobs, key=lambda j: j.video_id):
                writer.add(job.video_id, {"vggish": rows}, meta=VideoMeta(duration_s=10.0))

    Args:
        root: store directory (created if missing).
        dataset: dataset name recorded in the log; must match an existing store's.
        streams: stream specs. For an existing store, streams already declared must be
            identical (a different plan or config would mix incompatible features); new
            streams are added.
        shard_max_videos: commit a shard once this many videos are buffered.
        shard_max_bytes: ... or once the buffered features exceed this many bytes.
        extra: free-form fields (e.g. the extraction config actually used).
        lease_ttl_s: this writer's lease; its claims are taken over by other writers once
            it has not been renewed (every ``lease_ttl_s / 4``) for this long.

    A shard is committed by :meth:`flush` (called automatically at the limits and on a
    clean ``close``). If the process dies, buffered videos are lost but nothing committed
    is: rerunning skips :meth:`committed` videos. Several writers (processes, machines on
    one file system) may write one store at once; :meth:`claim_each` shares the videos.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        dataset: str,
        streams: Mapping[str, StreamSpec],
        shard_max_videos: int = 256,
        shard_max_bytes: int = 512 << 20,
        extra: Mapping[str, Any] | None = None,
        lease_ttl_s: float = 120.0,
    ) -> None:
        # a bucket store (s3://...) is written through a local cache that is an ordinary store
        self.remote = RemoteStore(str(root)) if is_remote(root) else None
        self.url = str(root)
        self.root = self.remote.local if self.remote else Path(root)
        self.shard_max_videos = int(shard_max_videos)
        self.shard_max_bytes = int(shard_max_bytes)
        for name in streams:
            if not _STREAM_NAME.match(name):
                raise ValueError(f"invalid stream name {name!r}: use letters, digits, '_', '.', '-'")
        self.dataset = dataset
        self.recovery: list[str] = []
        self._claims: set[str] = set()
        self._pending: list[_PendingVideo] = []
        self._pending_pairs: set[tuple[str, str]] = set()
        self._pending_bytes = 0
        self.shards_written: list[str] = []
        self.duplicates_dropped: list[tuple[str, str]] = []
        self.lease = WriterLease(self.root, ttl_s=lease_ttl_s)
        try:
            for d in (self.root / SHARD_DIR, (self.root / LOG).parent):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(os_error_message(self.root, e, "creating the store's folders")) from e
        remote = self.remote
        if remote is not None:  # one writer per bucket store: refused here, naming the other
            remote.acquire(self.lease.id, lease_ttl_s)
            self.lease.on_renew = lambda: remote.renew(lease_ttl_s)
        try:
            if remote is not None:
                remote.pull()
            with store_lock(self.root):
                self.lease.start()
                self._open_locked(streams, extra)
            if remote is not None:
                remote.publish()  # new streams, adopted shards, commits a dead writer left unpublished
        except OSError as e:
            self._stop_lease()
            raise StoreError(os_error_message(self.root, e, "opening the store for writing")) from e
        except BaseException:
            self._stop_lease()
            raise
        self.streams = {name: StreamSpec.from_dict(d) for name, d in self.state.streams.items()}
        if any("missing" in a or "damaged" in a or "not" in a for a in self.recovery):
            self._compact()

    def _open_locked(self, streams: Mapping[str, StreamSpec], extra: Mapping[str, Any] | None) -> None:
        given = {name: spec.to_dict() for name, spec in streams.items()}
        fresh = not (self.root / LOG).exists() and not (self.root / MANIFEST).exists()
        state, self.recovery = _recover_locked(self.root, dataset=self.dataset, streams=given, extra=extra)
        if state.dataset != self.dataset:
            raise StoreError(f"{self.root}: store holds dataset {state.dataset!r}, not {self.dataset!r}")
        recs: list[dict] = []
        new = {}
        for name, d in given.items():
            known = state.streams.get(name)
            if known is None:
                new[name] = d
            elif known != d:
                raise StoreError(
                    f"{self.root}: stream {name!r} exists with a different spec; "
                    f"stored {json.dumps(known, sort_keys=True)}, given {json.dumps(d, sort_keys=True)}"
                )
        if new:
            recs.append({"op": "streams", "streams": new})
        if extra and any(state.extra.get(k) != v for k, v in extra.items()):
            recs.append({"op": "extra", "extra": dict(extra)})
        if recs:
            append_records(self.root, recs)
            read_log_tail(self.root, state)
        self.state = state
        self._committed = _committed_by_stream(state.shards)
        self.recovery += _reconcile(self.root, state, self._committed, me=self.lease.id)
        if fresh:
            write_snapshot(self.root, state)

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Drop buffered videos (committed shards stay valid); release claims and the lease."""
        self._pending, self._pending_pairs, self._pending_bytes = [], set(), 0
        self._release_all()

    def close(self) -> None:
        """Commit what is buffered, refresh the snapshot, release claims and the lease."""
        try:
            self.flush()
            self._compact()
            if self.remote is not None:
                self.remote.publish_snapshot()
        finally:
            self._release_all()

    def _release_all(self) -> None:
        for vid in list(self._claims):
            self._release(vid)
        self._stop_lease()

    def _stop_lease(self) -> None:
        self.lease.stop()
        if self.remote is not None:
            self.remote.release()

    def _compact(self) -> None:
        """Rewrite manifest.json from the log (outside the lock: any snapshot of a log
        prefix is valid). A failure (no space) only leaves the older snapshot."""
        with contextlib.suppress(OSError):
            with store_lock(self.root):
                read_log_tail(self.root, self.state)
            write_snapshot(self.root, self.state)

    # -- queries -------------------------------------------------------------------------
    def committed(self, stream: str | None = None) -> set[str]:
        """Video ids committed (for ``stream``, or for every declared stream)."""
        names = [stream] if stream else list(self.streams)
        sets = [self._committed.get(n, set()) for n in names]
        return set.intersection(*sets) if sets else set()

    def _refresh_locked(self) -> None:
        before = len(self.state.shards)
        read_log_tail(self.root, self.state)
        for shard in self.state.shards[before:]:
            _add_committed(self._committed, shard)

    # -- claims --------------------------------------------------------------------------
    def claim(self, video_id: str, streams: Iterable[str] | None = None) -> str:
        """Claim ``video_id`` for this writer: ``"mine"`` (go ahead), ``"done"`` (every
        stream is committed), ``"busy"`` (a live writer holds it) or ``"failed"`` (a live
        writer failed on it; a rerun after that writer ends takes it over)."""
        names = list(streams or self.streams)
        path = claim_path(self.root, video_id)
        try:
            with store_lock(self.root):
                self._refresh_locked()
                if all(video_id in self._committed.get(s, ()) for s in names):
                    return "done"
                held = read_claim(path)
                if held is not None and held.get("writer") != self.lease.id:
                    if not held:  # half-written or damaged claim: honour it for one lease period
                        with contextlib.suppress(OSError):
                            if time.time() - path.stat().st_mtime < self.lease.ttl_s:
                                return "busy"
                    elif not writer_gone(self.root, held["writer"], held.get("host"), held.get("pid")):
                        return "failed" if held.get("failed") else "busy"
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, self._claim_json(video_id))
        except OSError as e:
            raise StoreError(os_error_message(self.root, e, f"claiming video {video_id!r}")) from e
        self._claims.add(video_id)
        return "mine"

    def _claim_json(self, video_id: str, *, failed: bool = False) -> str:
        """This writer's claim file on ``video_id``; ``failed`` marks a video it failed on."""
        claim: dict[str, Any] = {
            "video_id": video_id,
            "writer": self.lease.id,
            "host": self.lease.host,
            "pid": self.lease.pid,
            "time": now_iso(),
        }
        if failed:
            claim["failed"] = True
        return json.dumps(claim)

    def _release(self, video_id: str) -> None:
        self._claims.discard(video_id)
        path = claim_path(self.root, video_id)
        with contextlib.suppress(OSError):
            held = read_claim(path)
            if held and held.get("writer") == self.lease.id:
                path.unlink()

    def settle(self, video_id: str, *, retry: bool = True) -> str:
        """Settle this writer's claim on ``video_id`` once the caller is done with the video.

        - Some of its streams were added (buffered or committed): ``"commit"``; the claim stays
          until its shard is committed (released then; at once when already committed), so no
          other writer starts it meanwhile.
        - Nothing was added (the video failed): ``"released"``; the claim is removed now, so
          another live writer may retry the video (``retry=True``), or ``"failed"``: the claim is
          kept and marked failed, so other live writers skip it as a rerun skips recorded
          failures (``retry=False``); it is removed when this writer closes.

        Runners call it for every claimed video as soon as they know its outcome, whatever the
        order the videos finish in (a runner that carries windows across videos finishes a
        video after the next one started). Settling a video this writer does not hold is a
        no-op (``"not held"``)."""
        if any(v == video_id for v, _ in self._pending_pairs):
            return "commit"
        if any(video_id in self._committed.get(s, ()) for s in self.streams):
            self._release(video_id)
            return "commit"
        if video_id not in self._claims:
            return "not held"
        if retry:
            self._release(video_id)
            return "released"
        with contextlib.suppress(OSError):
            atomic_write_text(claim_path(self.root, video_id), self._claim_json(video_id, failed=True))
        return "failed"

    def claim_each(
        self,
        items: Iterable[T],
        *,
        key: Callable[[T], str],
        on_skip: Callable[[T], None] | None = None,
        poll_s: float = 0.5,
        retry_failed: bool = True,
    ) -> Iterator[T]:
        """Yield the items this writer claims; items another live writer holds are retried
        at the end until they are committed (skipped, ``on_skip``) or their writer is gone
        (taken over). Every video is thus extracted by exactly one writer. After the loop body
        for an item, its claim is settled (:meth:`settle`): a video the body did not add is
        released for another writer to retry (``retry_failed``) or marked failed."""
        pending: Iterable[T] = items
        while True:
            busy: list[T] = []
            for it in pending:
                status = self.claim(key(it))
                if status == "mine":
                    yield it
                    self.settle(key(it), retry=retry_failed)
                elif status == "busy":
                    busy.append(it)
                elif on_skip is not None:
                    on_skip(it)
            if not busy:
                return
            # commit what is buffered first: the other writers may be waiting for those claims
            self.flush()
            time.sleep(poll_s)
            pending = busy

    # -- writing -------------------------------------------------------------------------
    def add(
        self,
        video_id: str,
        features: Mapping[str, np.ndarray],
        *,
        meta: VideoMeta | None = None,
        padded: Mapping[str, bool] | None = None,
    ) -> None:
        """Buffer one video's rows (``T_s x feature_shape`` per stream)."""
        _check_video_id(video_id)
        if not features:
            raise ValueError(f"video {video_id!r}: no features given")
        arrays: dict[str, np.ndarray] = {}
        for name, rows in features.items():
            spec = self.streams.get(name)
            if spec is None:
                raise KeyError(f"video {video_id!r}: unknown stream {name!r}; declared: {sorted(self.streams)}")
            rows = np.asarray(rows)
            if rows.ndim != 1 + len(spec.feature_shape) or tuple(rows.shape[1:]) != spec.feature_shape:
                raise ValueError(
                    f"video {video_id!r}, stream {name!r}: rows have shape {rows.shape}, "
                    f"expected T x {spec.feature_shape}"
                )
            if rows.shape[0] < 1:
                raise ValueError(f"video {video_id!r}, stream {name!r}: zero rows (a stream needs >= 1 row)")
            if not np.all(np.isfinite(rows)):
                raise ValueError(f"video {video_id!r}, stream {name!r}: non-finite values in features")
            key = (video_id, name)
            if video_id in self._committed.get(name, ()) or key in self._pending_pairs:
                raise StoreError(f"video {video_id!r} already has stream {name!r} in {self.root}")
            arrays[name] = np.ascontiguousarray(rows, dtype=spec.dtype)
        for name in arrays:
            self._pending_pairs.add((video_id, name))
        self._pending.append(_PendingVideo(video_id, arrays, dict(padded or {}), meta or VideoMeta()))
        self._pending_bytes += sum(a.nbytes for a in arrays.values())
        if len(self._pending) >= self.shard_max_videos or self._pending_bytes >= self.shard_max_bytes:
            self.flush()

    def flush(self) -> str | None:
        """Commit buffered videos as one shard; returns its file name (None if nothing buffered)."""
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        self._pending_pairs = set()
        self._pending_bytes = 0
        shard_name = f"shard-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{self.lease.id}-{uuid.uuid4().hex[:8]}.h5"
        created = now_iso()
        info = {
            "writer": self.lease.id,
            "host": self.lease.host,
            "pid": self.lease.pid,
            "created": created,
            "file": shard_name,
        }
        image, rows = build_shard_image(pending, self.streams, dataset=self.dataset, writer=info)
        tmp = self.root / SHARD_DIR / f".tmp-{self.lease.id}-{self.lease.pid}-{self.lease.host}.h5"
        final = self.root / SHARD_DIR / shard_name
        digest = sha256_hex(image)
        try:
            write_new_file(tmp, image)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(
                os_error_message(self.root, e, f"writing a shard of {len(pending)} videos", needed_bytes=len(image))
            ) from e
        streams = sorted({s for p in pending for s in p.features})
        absent = {s: [p.video_id for p in pending if s not in p.features] for s in streams}
        ids = [p.video_id for p in pending]
        try:
            with store_lock(self.root):
                self._refresh_locked()
                fresh = 0
                for p in pending:  # a pair another writer committed meanwhile stays unused (absent)
                    for s in p.features:
                        if p.video_id in self._committed.get(s, ()):
                            absent[s].append(p.video_id)
                            self.duplicates_dropped.append((p.video_id, s))
                        else:
                            fresh += 1
                if not fresh:
                    tmp.unlink(missing_ok=True)
                    return None
                os.replace(tmp, final)
                fsync_dir(final.parent)
                entry = _commit_entry(
                    f"{SHARD_DIR}/{shard_name}", ids, streams, absent, rows, len(image), digest, self.lease.id, created
                )
                try:
                    append_records(self.root, [{"op": "commit", "shard": entry}])
                except BaseException:
                    os.replace(final, tmp)  # back to an uncommitted temp file, removed below
                    raise
                self._refresh_locked()
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(
                os_error_message(self.root, e, f"committing a shard of {len(pending)} videos", needed_bytes=len(image))
            ) from e
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if self.remote is not None:  # upload the shard, then create its record (the bucket's commit)
            if self.lease.lost is not None:
                raise StoreError(f"store {self.url}: its writer lock could not be renewed ({self.lease.lost})")
            self.remote.publish()
        for vid in ids:
            self._release(vid)
        self.shards_written.append(shard_name)
        return shard_name


# ---------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------
class VideoFeatures:
    """Read-only view of one video: ``view[stream] -> np.ndarray`` (T x feature_shape)."""

    def __init__(self, store: FeatureStore, video_id: str) -> None:
        self._store = store
        self.video_id = video_id

    def __getitem__(self, stream: str) -> np.ndarray:
        return self._store.read(self.video_id, stream)

    def __contains__(self, stream: str) -> bool:
        return stream in self.streams

    @property
    def streams(self) -> list[str]:
        return self._store.video_streams(self.video_id)

    @property
    def meta(self) -> VideoMeta:
        return self._store.meta(self.video_id)

    def times(self, stream: str) -> tuple[np.ndarray, np.ndarray]:
        return self._store.times(self.video_id, stream)


class FeatureStore:
    """Reader over a committed store (never writes: works on a read-only store).

    ``FeatureStore(path)`` reads the snapshot and the log's tail (v2) or the manifest (v1);
    shard files open lazily, once per process (a handle opened before ``fork`` is never
    reused in the child), so a store can be handed to DataLoader workers.

    Every read checks the video's checksums (rows, start_s/end_s, offsets and padded flag;
    meta_json when the metadata is read); a shard whose size differs from the log, that HDF5 cannot open, or whose
    contents disagree with the log raises :class:`StoreCorruptError` naming the shard, the
    video and what differs. :meth:`verify` also checks every shard's sha256.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        # a bucket store (s3://...): the log and snapshot are pulled into a local cache, shards
        # downloaded (and checked) on first read
        self.remote = RemoteStore(str(root)) if is_remote(root) else None
        self.url = str(root)
        self.root = self.remote.pull() if self.remote else Path(root)
        self.state, self.notes = _open_state(self.root, lazy=True)
        self.schema_version = self.state.schema_version
        self.dataset: str = self.state.dataset
        self.streams: dict[str, StreamSpec] = {name: StreamSpec.from_dict(d) for name, d in self.state.streams.items()}
        shards = self.state.shards
        # shards[:n_idx] are found through the binary index of the snapshot (no per-video work
        # at open); the log's tail (shards[n_idx:]) through dicts built here
        self._vindex = self.state.index
        n_idx = self.state.n_indexed
        self._shard_streams = [frozenset(sh["streams"]) for sh in shards]
        self._absent: list[dict[str, set[str]]] = [
            {s: set(v) for s, v in sh.get("absent", {}).items() if v} for sh in shards
        ]
        tail = shards[n_idx:]
        # tail video -> its first tail shard; one dict built in C, one insertion per video
        chain = itertools.chain.from_iterable
        self._first: dict[str, int] = dict(
            zip(
                chain(sh["videos"] for sh in tail),
                chain(itertools.repeat(k, len(sh["videos"])) for k, sh in enumerate(shards[n_idx:], n_idx)),
            )
        )
        self._more: dict[str, list[int]] = {}  # further tail shards of a tail video
        if len(self._first) != sum(len(sh["videos"]) for sh in tail):  # some videos span shards
            first_shard: dict[str, int] = {}  # the earliest shard of each video holds its metadata
            for k in range(len(shards) - 1, n_idx - 1, -1):
                first_shard.update(dict.fromkeys(shards[k]["videos"], k))
            self._first.update(first_shard)
            for k in range(n_idx, len(shards)):
                for v in shards[k]["videos"]:
                    if self._first[v] != k:
                        self._more.setdefault(v, []).append(k)
        self._tail_positions: dict[int, dict[str, int]] = {}
        # videos of the tail that the index does not hold (new videos), in commit order
        vindex = self._vindex
        self._tail_new = [v for v in self._first if not vindex.find(v)] if vindex is not None else list(self._first)
        self._n_videos = (vindex.n_videos if vindex is not None else 0) + len(self._tail_new)
        if vindex is not None and len(self._tail_new) < len(self._first):
            spanning: Iterable[str] = self._first  # tail videos that may also be in the index
        else:
            spanning = self._more
        for v in spanning:
            self._check_once(v)
        self._pid = os.getpid()
        self._files: dict[int, h5py.File] = {}
        self._index: dict[int, _ShardIndex] = {}

    def _occurrences(self, video_id: str) -> list[tuple[int, int | None]]:
        """(shard, position or None when not known yet) of every commit of ``video_id``, in
        commit order."""
        out: list[tuple[int, int | None]] = []
        if self._vindex is not None:
            out = [self._vindex.locate(j) for j in self._vindex.find(video_id)]
        k = self._first.get(video_id)
        if k is not None:
            out += [(j, None) for j in (k, *self._more.get(video_id, ()))]
        return out

    def _check_once(self, video_id: str) -> None:
        """A (video, stream) pair is committed in one shard at most."""
        seen: dict[str, int] = {}
        for k, _ in self._occurrences(video_id):
            for s in self._shard_streams[k]:
                if video_id in self._absent[k].get(s, ()):
                    continue
                if s in seen:
                    raise StoreCorruptError(
                        f"{self.root}: video {video_id!r} stream {s!r} committed twice "
                        f"({self.state.shards[seen[s]]['file']} and {self.state.shards[k]['file']})"
                    )
                seen[s] = k

    @property
    def manifest(self) -> dict:
        """The committed state as one manifest-like dict (``shards`` in commit order, each
        with its ``videos``)."""
        return self.state.to_snapshot()

    # -- pickling: a store crosses process boundaries without its open handles --------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}
        state["_index"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        for f in self._files.values():
            with contextlib.suppress(Exception):
                f.close()
        self._files.clear()
        self._index.clear()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- catalogue ------------------------------------------------------------------------------
    def videos(self) -> list[str]:
        """Committed video ids in commit order."""
        head = self._vindex.videos() if self._vindex is not None else []
        return head + self._tail_new

    def __len__(self) -> int:
        return self._n_videos

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._first or (self._vindex is not None and bool(self._vindex.find(video_id)))

    def __getitem__(self, video_id: str) -> VideoFeatures:
        if video_id not in self:
            raise KeyError(f"video {video_id!r} is not in store {self.root}")
        return VideoFeatures(self, video_id)

    def _place(self, video_id: str, stream: str) -> tuple[int, int | None] | None:
        occ = self._occurrences(video_id)
        if len(occ) > 1:
            self._check_once(video_id)
        for k, i in occ:
            if stream in self._shard_streams[k] and video_id not in self._absent[k].get(stream, ()):
                return k, i
        return None

    def _shard_of(self, video_id: str, stream: str) -> int | None:
        place = self._place(video_id, stream)
        return None if place is None else place[0]

    def video_streams(self, video_id: str) -> list[str]:
        occ = self._occurrences(video_id)
        return [
            s
            for s in self.streams
            if any(s in self._shard_streams[k] and video_id not in self._absent[k].get(s, ()) for k, _ in occ)
        ]

    def has(self, video_id: str, stream: str) -> bool:
        return self._place(video_id, stream) is not None

    def errors(self) -> list[dict]:
        """Failure records from errors.jsonl (malformed lines are reported, not skipped)."""
        path = self.root / ERRORS
        if not path.exists():
            return []
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"error_type": "CorruptErrorRecord", "message": f"{path}: line {n} is not JSON"})
        return out

    def failed_videos(self) -> set[str]:
        """Videos with a recorded error that still lack a committed row in some stream.

        Records marked ``retryable`` (the worker died, not the video) do not count: a rerun
        redoes those videos."""
        failed = set()
        for rec in self.errors():
            vid = rec.get("video_id")
            if vid is not None and not rec.get("retryable") and not all(self.has(vid, s) for s in self.streams):
                failed.add(vid)
        return failed

    # -- reading ---------------------------------------------------------------------------------
    def _shard(self, k: int) -> _ShardIndex:
        """Shard ``k`` opened (once per process) after checking its size against the log."""
        if self._pid != os.getpid():  # forked: drop the parent's handles without closing them
            self._files = {}
            self._index = {}
            self._pid = os.getpid()
        index = self._index.get(k)
        if index is None:
            entry = self.state.shards[k]
            if self.remote is not None:
                self.remote.fetch_shard(entry["file"], entry["size_bytes"], entry["sha256"])
            path = self.root / entry["file"]
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise StoreCorruptError(f"shard {path} listed in the log is missing") from None
            if size != entry["size_bytes"]:
                raise StoreCorruptError(
                    f"shard {path} has {size} bytes, the log says {entry['size_bytes']} (truncated or modified)"
                )
            if size <= _HASH_ON_OPEN_BYTES and sha256_hex(path) != entry["sha256"]:
                # HDF5 may hang or crash on a damaged structure: small shards are checked whole first
                raise StoreCorruptError(f"shard {path}: sha256 differs from the log (the file was modified)")
            if size <= _PREFETCH_BYTES:  # one sequential read-ahead instead of HDF5's scattered small reads
                with contextlib.suppress(OSError, AttributeError):
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
                    finally:
                        os.close(fd)
            try:
                f = _open_h5(path, "r")
            except (OSError, KeyError, ValueError, TypeError) as e:
                raise StoreCorruptError(f"shard {path} cannot be opened by HDF5: {e}") from e
            try:
                index = _ShardIndex(f, path)
                if index.n != self.state.shard_size(k):
                    raise StoreCorruptError(f"shard {path}: video ids differ from the log")
            except BaseException:
                f.close()
                raise
            self._files[k] = f
            self._index[k] = index
        return index

    def _position(self, k: int, video_id: str) -> int:
        """Position of ``video_id`` in tail shard ``k`` (from the log's list of its videos)."""
        pos = self._tail_positions.get(k)
        if pos is None:
            pos = self._tail_positions[k] = {v: i for i, v in enumerate(self.state.shards[k]["videos"])}
        return pos[video_id]

    def _locate(self, video_id: str, stream: str) -> tuple[_ShardIndex, int]:
        if stream not in self.streams:
            raise KeyError(f"unknown stream {stream!r}; store {self.root} has {sorted(self.streams)}")
        place = self._place(video_id, stream)
        if place is None:
            if video_id not in self:
                raise KeyError(f"video {video_id!r} is not in store {self.root}")
            raise KeyError(f"video {video_id!r} has no stream {stream!r} in store {self.root}")
        k, i = place
        index = self._shard(k)
        if i is None:
            i = self._position(k, video_id)
        index.check_id(i, video_id)
        return index, i

    def read(self, video_id: str, stream: str) -> np.ndarray:
        """Rows of one video and stream (``T x feature_shape``), checksum-checked."""
        index, i = self._locate(video_id, stream)
        return _check_video(index, stream, i)[0]

    def times(self, video_id: str, stream: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact (start_s, end_s) of every row of ``video_id`` in ``stream``, checked."""
        index, i = self._locate(video_id, stream)
        _, starts, ends = _check_video(index, stream, i)
        return starts, ends

    def is_padded(self, video_id: str, stream: str) -> bool:
        index, i = self._locate(video_id, stream)
        _check_video(index, stream, i)
        return bool(index.padded[stream][i])

    def num_rows(self, video_id: str, stream: str) -> int:
        index, i = self._locate(video_id, stream)
        index.load(stream)
        return int(index.offsets[stream][i + 1] - index.offsets[stream][i])

    def meta(self, video_id: str) -> VideoMeta:
        occ = self._occurrences(video_id)
        if not occ:
            raise KeyError(f"video {video_id!r} is not in store {self.root}")
        k, i = occ[0]  # the first shard holding the video holds its metadata
        index = self._shard(k)
        if i is None:
            i = self._position(k, video_id)
        index.check_id(i, video_id)
        _check_meta(index, i)
        return VideoMeta.from_json(_meta_json(index)[i])

    # -- integrity -------------------------------------------------------------------------------
    def verify(self, *, full: bool = True) -> list[str]:
        """Check every shard: size and sha256 (when ``full``) against the log, HDF5
        structure, ids, and every video's checksums (rows, times, offsets/padded, meta).

        Returns a list of problems, each naming the shard (and video); empty when sound.
        """
        problems = []
        if full and self.schema_version >= 2:  # the log prefix the snapshot stands for, too
            try:
                whole = read_log_tail(self.root, StoreState(schema_version=SCHEMA_VERSION, dataset=""))
                n = len(self.state.shards)
                if whole.shards[:n] != [self.state.full_shard(k) for k in range(n)]:
                    problems.append(
                        f"{self.root / MANIFEST}: snapshot differs from {self.root / LOG} (run `avel store compact`)"
                    )
            except StoreCorruptError as e:
                problems.append(str(e))
        for k in range(len(self.state.shards)):
            entry = self.state.full_shard(k)
            if self.remote is not None:
                try:
                    self.remote.fetch_shard(entry["file"], entry["size_bytes"], entry["sha256"])
                except StoreError as e:
                    problems.append(str(e))
                    continue
            problems += _verify_shard(self.root / entry["file"], entry, full=full)
        return problems

    def uncommitted_files(self) -> list[str]:
        """Files in shards/ that the log does not list (adopted or removed by the next writer)."""
        listed = {Path(s["file"]).name for s in self.state.shards}
        d = self.root / SHARD_DIR
        return sorted(p.name for p in d.iterdir() if p.name not in listed) if d.is_dir() else []

    # -- summaries ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What ``avel info`` prints: streams, plans, provenance, counts, errors."""
        shards = self.state.shards
        streams = {}
        for name, spec in self.streams.items():
            n_videos = sum(
                self.state.shard_size(k) - len(sh.get("absent", {}).get(name, ()))
                for k, sh in enumerate(shards)
                if name in sh["streams"]
            )
            n_rows = sum(sh.get("rows", {}).get(name, 0) for sh in shards)
            streams[name] = {**spec.to_dict(), "videos": n_videos, "rows": n_rows, "plan_text": spec.plan.describe()}
        errors = self.errors()
        return {
            "path": self.url,
            "dataset": self.dataset,
            "schema_version": self.schema_version,
            "videos": len(self),
            "shards": len(shards),
            "bytes": sum(sh["size_bytes"] for sh in shards),
            "streams": streams,
            "errors": len(errors),
            "failed_videos": sorted(self.failed_videos()),
            "random_weight_streams": [n for n, s in self.streams.items() if s.is_random],
            "extra": self.state.extra,
            "notes": list(self.notes),
        }


def append_error(root: Path, record: Mapping[str, Any]) -> None:
    """Append one failure record (video_id, path, stage, error_type, message) to errors.jsonl."""
    rec = dict(record)
    rec.setdefault("time", now_iso())
    line = json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        with store_lock(root):
            with open(Path(root) / ERRORS, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise StoreError(os_error_message(Path(root), e, "recording a failure in errors.jsonl")) from e


# ---------------------------------------------------------------------------------------
# Maintenance: repair, compact, upgrade
# ---------------------------------------------------------------------------------------
def repair_store(root: str | os.PathLike) -> list[str]:
    """Rebuild what can be rebuilt unambiguously and report each action.

    A damaged log keeps its records before the damage (the damaged file is moved aside,
    never deleted); a missing log is rebuilt from the snapshot; with neither, from the
    self-describing shards. Shards the log does not list are adopted when complete and not
    duplicates; leftovers of writers that are gone are removed and logged in deletions.jsonl.
    The snapshot is rewritten.
    """
    root = Path(root)
    with store_lock(root):
        state, actions = _recover_locked(root, allow_damaged_log=True)
        committed = _committed_by_stream(state.shards)
        actions += _reconcile(root, state, committed)
        write_snapshot(root, state)
    return actions


def compact_store(root: str | os.PathLike) -> None:
    """Rewrite manifest.json from the whole log (what writers do on close)."""
    root = Path(root)
    with store_lock(root):
        state, _ = load_state(root)
    write_snapshot(root, state)


def upgrade_store(root: str | os.PathLike, *, progress: Callable[[int, int], object] | None = None) -> list[str]:
    """Convert a schema-version-1 store to version 2 in place; returns what was done.

    Every v1 shard is checked (sha256 and row CRCs: a damaged store is refused, listing the
    problems), rewritten as a self-describing v2 shard with full per-video checksums, the
    log is written (the switch point: before it the store is v1, after it v2), then the v1
    shards are removed, each logged in deletions.jsonl. Rerunning after an interruption
    finishes the job. Needs free space for the largest shard's copy at a time, in total about
    the store's size (the v1 shards are removed only once the log is written).
    """
    root = Path(root)
    actions: list[str] = []
    with open(root / V1_LOCK, "a+") as v1_lock:  # keep old v1 writers out
        import fcntl

        fcntl.flock(v1_lock.fileno(), fcntl.LOCK_EX)
        with store_lock(root):
            if (root / LOG).exists():
                state, _ = load_state(root)
                listed = {Path(s["file"]).name for s in state.shards}
                committed = _committed_pairs(state.to_snapshot())
                for p in sorted((root / SHARD_DIR).glob("shard-*.h5")):
                    if p.name in listed:
                        continue
                    with contextlib.suppress(OSError, KeyError, ValueError):
                        a = _shard_attrs(p)
                        pairs = {(v, s) for s in a["streams"] for v in a["ids"] if v not in a["absent"].get(s, ())}
                        if int(a.get("schema_version", 1)) < 2 and pairs <= committed:
                            log_deletion(
                                root,
                                p,
                                "version-1 shard superseded by `avel store upgrade` (its videos "
                                "are committed in version-2 shards)",
                            )
                            p.unlink()
                            actions.append(f"removed superseded version-1 shard {p.name}")
                return actions or [f"{root} is already schema version {SCHEMA_VERSION}"]
            old = FeatureStore(root)
            if old.schema_version != 1:
                raise StoreError(f"{root}: schema version {old.schema_version}, nothing to upgrade")
            problems = old.verify(full=True)
            if problems:
                raise StoreCorruptError(
                    f"{root}: cannot upgrade a damaged store ({len(problems)} problems): " + "; ".join(problems[:5])
                )
            for p in (root / SHARD_DIR).glob("shard-*.h5"):  # new shards of an interrupted upgrade
                with contextlib.suppress(OSError, KeyError, ValueError):
                    if _shard_attrs(p).get("writer") == "upgrade" and p.name not in {
                        Path(s["file"]).name for s in old.state.shards
                    }:
                        log_deletion(root, p, "partial output of an interrupted `avel store upgrade` (never committed)")
                        p.unlink()
            recs = _init_records(old.dataset, old.state.streams, old.state.extra)
            specs = old.streams
            total = len(old.state.shards)
            for n, entry in enumerate(old.state.shards):
                pending = []
                for v in entry["videos"]:
                    feats, padded, times = {}, {}, {}
                    for s in entry["streams"]:
                        if v in entry.get("absent", {}).get(s, ()):
                            continue
                        feats[s] = old.read(v, s)
                        times[s] = old.times(v, s)
                        padded[s] = old.is_padded(v, s)
                    pending.append(_PendingVideo(v, feats, padded, old.meta(v), times))
                name = f"shard-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-upgrade-{uuid.uuid4().hex[:8]}.h5"
                created = entry.get("created", now_iso())
                image, rows = build_shard_image(
                    pending,
                    specs,
                    dataset=old.dataset,
                    writer={
                        "writer": "upgrade",
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "created": created,
                        "file": name,
                        "upgraded_from": entry["file"],
                    },
                )
                try:
                    atomic_write_bytes(root / SHARD_DIR / name, image)
                except OSError as e:
                    raise StoreError(os_error_message(root, e, "writing an upgraded shard", len(image))) from e
                recs.append(
                    {
                        "op": "commit",
                        "shard": _commit_entry(
                            f"{SHARD_DIR}/{name}",
                            entry["videos"],
                            entry["streams"],
                            entry.get("absent", {}),
                            rows,
                            len(image),
                            sha256_hex(image),
                            "upgrade",
                            created,
                        ),
                    }
                )
                if progress:
                    progress(n + 1, total)
            old.close()
            _new_log(root, recs)  # the switch point
            state, _ = load_state(root)
            write_snapshot(root, state)
            actions.append(f"rewrote {total} version-1 shards as version-2 shards; wrote {LOG} and {MANIFEST}")
            for entry in old.state.shards:
                p = root / entry["file"]
                log_deletion(
                    root,
                    p,
                    "version-1 shard superseded by `avel store upgrade` (same videos, rows, "
                    "times, flags and metadata, checked, in a version-2 shard)",
                    sha256=entry["sha256"],
                )
                p.unlink(missing_ok=True)
            actions.append(f"removed the {total} version-1 shards (listed in {DELETIONS})")
            (root / V1_LOCK).unlink(missing_ok=True)
    return actions
