"""The feature store: HDF5 shards plus a JSON manifest.

A store is a directory::

    STORE/
      manifest.json     schema version, dataset, stream specs (extractor, config, weights,
                        sampling plan, feature shape, dtype) and the committed shards
      manifest.lock     advisory lock serialising commits of concurrent writers
      shards/*.h5       immutable shards; only shards listed in the manifest are visible
      errors.jsonl      one JSON object per failed (video, stage)

Shard layout (concatenated arrays + offsets; see docs/feature-store.md for the measurement
that chose it over one HDF5 group per video)::

    /videos/ids               V            utf-8 video ids
    /videos/meta_json         V            per-video metadata (duration_s, native_fps, ...)
    /streams/<s>/data         N_s x F...   rows of all videos, concatenated
    /streams/<s>/offsets      V + 1        rows of video i are data[offsets[i]:offsets[i+1]]
    /streams/<s>/start_s      N_s          exact row start times from the sampling plan
    /streams/<s>/end_s        N_s
    /streams/<s>/padded       V            the video was shorter than one window
    /streams/<s>/crc32        V            CRC-32 of each video's rows, checked on every read

A video may lack a stream in a shard (zero rows: e.g. no audio track); a later shard may add
a stream to videos that are already committed (a new backbone), but a (video, stream) pair
is committed at most once.

Commit protocol (crash-safe, safe for concurrent writers in several processes):
shard written to ``shards/.tmp-*`` -> flush, fsync, close -> sha256 -> under the manifest
lock: duplicate check, rename to ``shards/shard-*.h5``, fsync dir, manifest rewritten to a
temp file, fsync, ``os.replace``, fsync dir. A crash at any point leaves the previous
manifest intact; a renamed shard that never reached the manifest is an orphan, invisible to
readers and removed by the next writer.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from avel.datasets.sampling import SamplingPlan

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
SHARD_DIR = "shards"
_STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
RANDOM_WEIGHTS = "random"


class StoreError(Exception):
    """A store cannot be read or written as asked."""


class StoreCorruptError(StoreError):
    """A shard or the manifest is damaged (truncated, checksum mismatch, missing)."""


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
    def from_dict(cls, d: Mapping[str, Any]) -> "StreamSpec":
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
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "VideoMeta":
        return cls(**json.loads(s))


# ---------------------------------------------------------------------------------------
# Filesystem helpers
# ---------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _crc32(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1)) & 0xFFFFFFFF


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


# ---------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------
def _empty_manifest(dataset: str, streams: Mapping[str, StreamSpec], extra: Mapping[str, Any]) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "created": now,
        "updated": now,
        "streams": {name: spec.to_dict() for name, spec in streams.items()},
        "shards": [],
        "extra": dict(extra),
    }


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise StoreError(f"{root}: not a feature store (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StoreCorruptError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    for key in ("dataset", "streams", "shards"):
        if key not in manifest:
            raise StoreCorruptError(f"{path}: missing key {key!r}")
    return manifest


@contextlib.contextmanager
def _manifest_lock(root: Path) -> Iterator[None]:
    with open(Path(root) / "manifest.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append_error(root: Path, record: Mapping[str, Any]) -> None:
    """Append one failure record (video_id, path, stage, error_type, message) to errors.jsonl."""
    rec = dict(record)
    rec.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    line = json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n"
    with _manifest_lock(root):
        with open(Path(root) / ERRORS, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------
@dataclass
class _PendingVideo:
    video_id: str
    features: dict[str, np.ndarray]
    padded: dict[str, bool]
    meta: VideoMeta


class StoreWriter:
    """Buffers videos and commits them as immutable shards.

    Usage::

        specs = {"vggish": StreamSpec(extractor="vggish", plan=UNAV100_VGGISH, feature_shape=(128,))}
        with StoreWriter(path, dataset="unav100", streams=specs) as writer:
            writer.add("vid", {"vggish": rows}, meta=VideoMeta(duration_s=10.0))

    Args:
        root: store directory (created if missing).
        dataset: dataset name recorded in the manifest; must match an existing store's.
        streams: stream specs. For an existing store, streams already declared must be
            identical (a different plan or config would mix incompatible features); new
            streams are added to the manifest.
        shard_max_videos: commit a shard once this many videos are buffered.
        shard_max_bytes: ... or once the buffered features exceed this many bytes.
        extra: free-form manifest fields (e.g. the extraction config actually used).

    A shard is committed by :meth:`flush` (called automatically at the limits and on a
    clean ``close``). If the process dies, buffered videos are lost but nothing committed
    is: rerunning skips :meth:`committed` videos.
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
    ) -> None:
        self.root = Path(root)
        self.shard_max_videos = int(shard_max_videos)
        self.shard_max_bytes = int(shard_max_bytes)
        for name in streams:
            if not _STREAM_NAME.match(name):
                raise ValueError(f"invalid stream name {name!r}: use letters, digits, '_', '.', '-'")
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        with _manifest_lock(self.root):
            if (self.root / MANIFEST).exists():
                manifest = read_manifest(self.root)
                if manifest["dataset"] != dataset:
                    raise StoreError(
                        f"{self.root}: store holds dataset {manifest['dataset']!r}, not {dataset!r}")
                changed = False
                for name, spec in streams.items():
                    known = manifest["streams"].get(name)
                    if known is None:
                        manifest["streams"][name] = spec.to_dict()
                        changed = True
                    elif known != spec.to_dict():
                        raise StoreError(
                            f"{self.root}: stream {name!r} exists with a different spec; "
                            f"stored {json.dumps(known, sort_keys=True)}, given "
                            f"{json.dumps(spec.to_dict(), sort_keys=True)}")
                if extra:
                    manifest.setdefault("extra", {}).update(extra)
                    changed = True
                if changed:
                    self._write_manifest(manifest)
            else:
                manifest = _empty_manifest(dataset, streams, extra or {})
                self._write_manifest(manifest)
            self._remove_orphans(manifest)
        self.dataset = dataset
        self.streams = {name: StreamSpec.from_dict(d) for name, d in manifest["streams"].items()}
        self._committed = _committed_pairs(manifest)
        self._pending: list[_PendingVideo] = []
        self._pending_pairs: set[tuple[str, str]] = set()
        self._pending_bytes = 0
        self.shards_written: list[str] = []

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        # On an exception buffered videos are dropped: committed shards stay valid.

    def close(self) -> None:
        self.flush()

    # -- queries -------------------------------------------------------------------------
    def committed(self, stream: str | None = None) -> set[str]:
        """Video ids committed (for ``stream``, or for every declared stream)."""
        names = [stream] if stream else list(self.streams)
        sets = [{v for v, s in self._committed if s == n} for n in names]
        return set.intersection(*sets) if sets else set()

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
                    f"expected T x {spec.feature_shape}")
            if rows.shape[0] < 1:
                raise ValueError(f"video {video_id!r}, stream {name!r}: zero rows (a stream needs >= 1 row)")
            if not np.all(np.isfinite(rows)):
                raise ValueError(f"video {video_id!r}, stream {name!r}: non-finite values in features")
            key = (video_id, name)
            if key in self._committed or key in self._pending_pairs:
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
        pairs, self._pending_pairs = self._pending_pairs, set()
        self._pending_bytes = 0
        shard_name = f"shard-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.h5"
        tmp = self.root / SHARD_DIR / f".tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.h5"
        rows = self._write_shard(tmp, pending)
        shard_streams = sorted({s for p in pending for s in p.features})
        absent = {s: [p.video_id for p in pending if s not in p.features] for s in shard_streams}
        absent = {s: v for s, v in absent.items() if v}
        size = tmp.stat().st_size
        digest = _sha256_file(tmp)
        final = self.root / SHARD_DIR / shard_name
        with _manifest_lock(self.root):
            manifest = read_manifest(self.root)
            clash = pairs & _committed_pairs(manifest)
            if clash:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"{self.root}: another writer committed {sorted(clash)[:5]} first")
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            manifest["shards"].append({
                "file": f"{SHARD_DIR}/{shard_name}",
                "videos": [p.video_id for p in pending],
                "streams": shard_streams,
                "absent": absent,
                "rows": rows,
                "size_bytes": size,
                "sha256": digest,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
            self._write_manifest(manifest)
            self._committed = _committed_pairs(manifest)
        self.shards_written.append(shard_name)
        return shard_name

    # -- internals -------------------------------------------------------------------------
    def _write_manifest(self, manifest: dict) -> None:
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))

    def _remove_orphans(self, manifest: dict) -> None:
        """Delete shards never committed to the manifest and temp files of dead local writers."""
        listed = {Path(s["file"]).name for s in manifest["shards"]}
        host = socket.gethostname()
        for p in (self.root / SHARD_DIR).iterdir():
            if p.name.startswith("shard-") and p.name not in listed:
                p.unlink(missing_ok=True)
            elif p.name.startswith(f".tmp-{host}-"):
                pid = int(p.name.split("-")[-2]) if p.name.split("-")[-2].isdigit() else -1
                if pid > 0 and not _pid_alive(pid):
                    p.unlink(missing_ok=True)

    def _write_shard(self, path: Path, pending: list[_PendingVideo]) -> dict[str, int]:
        str_dt = h5py.string_dtype("utf-8")
        rows_per_stream: dict[str, int] = {}
        with _open_h5(path, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["layout"] = "concatenated"
            vg = f.create_group("videos")
            vg.create_dataset("ids", data=np.array([p.video_id for p in pending], dtype=object), dtype=str_dt)
            vg.create_dataset("meta_json", data=np.array([p.meta.to_json() for p in pending], dtype=object),
                              dtype=str_dt)
            sg = f.create_group("streams")
            for name in sorted({s for p in pending for s in p.features}):
                spec = self.streams[name]
                lengths = np.array([p.features[name].shape[0] if name in p.features else 0 for p in pending])
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                total = int(offsets[-1])
                g = sg.create_group(name)
                data = g.create_dataset("data", shape=(total, *spec.feature_shape), dtype=spec.dtype)
                starts = np.empty(total, np.float64)
                ends = np.empty(total, np.float64)
                crcs = np.zeros(len(pending), np.uint32)
                padded = np.zeros(len(pending), bool)
                for i, p in enumerate(pending):
                    if name not in p.features:
                        continue
                    a, b = offsets[i], offsets[i + 1]
                    data[a:b] = p.features[name]
                    starts[a:b], ends[a:b] = spec.plan.row_times(int(b - a))
                    crcs[i] = _crc32(p.features[name])
                    padded[i] = bool(p.padded.get(name, False))
                g.create_dataset("offsets", data=offsets)
                g.create_dataset("start_s", data=starts)
                g.create_dataset("end_s", data=ends)
                g.create_dataset("crc32", data=crcs)
                g.create_dataset("padded", data=padded)
                rows_per_stream[name] = total
            f.flush()
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
        return rows_per_stream


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _committed_pairs(manifest: Mapping[str, Any]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for shard in manifest["shards"]:
        # ``absent`` lists videos of the shard without rows in a stream (e.g. no audio track).
        absent = shard.get("absent", {})
        for s in shard["streams"]:
            missing = set(absent.get(s, ()))
            out.update((v, s) for v in shard["videos"] if v not in missing)
    return out


# ---------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------
@dataclass
class _ShardIndex:
    path: Path
    size_bytes: int
    sha256: str
    ids: list[str]
    offsets: dict[str, np.ndarray]
    crc32: dict[str, np.ndarray]
    padded: dict[str, np.ndarray]
    meta_json: list[str]
    data: dict[str, h5py.Dataset]
    position: dict[str, int]


class VideoFeatures:
    """Read-only view of one video: ``view[stream] -> np.ndarray`` (T x feature_shape)."""

    def __init__(self, store: "FeatureStore", video_id: str) -> None:
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
    """Reader over a committed store.

    ``FeatureStore(path)`` reads only the manifest; shard files open lazily, once per
    process (a handle opened before ``fork`` is never reused in the child), so a store can
    be handed to DataLoader workers.

    Every read checks the rows' CRC-32 against the one written with them; a shard whose
    size differs from the manifest, that HDF5 cannot open, or whose contents disagree with
    the manifest raises :class:`StoreCorruptError` naming the shard. :meth:`verify` also
    checks every shard's sha256.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.dataset: str = self.manifest["dataset"]
        self.streams: dict[str, StreamSpec] = {
            name: StreamSpec.from_dict(d) for name, d in self.manifest["streams"].items()}
        # (video_id, stream) -> shard number; video -> shard holding its metadata
        self._where: dict[tuple[str, str], int] = {}
        self._meta_shard: dict[str, int] = {}
        self._order: list[str] = []
        for k, shard in enumerate(self.manifest["shards"]):
            absent = {s: set(v) for s, v in shard.get("absent", {}).items()}
            for v in shard["videos"]:
                if v not in self._meta_shard:
                    self._meta_shard[v] = k
                    self._order.append(v)
                for s in shard["streams"]:
                    if v in absent.get(s, ()):
                        continue
                    if (v, s) in self._where:
                        raise StoreCorruptError(
                            f"{self.root}: video {v!r} stream {s!r} committed twice "
                            f"({self.manifest['shards'][self._where[(v, s)]]['file']} and {shard['file']})")
                    self._where[(v, s)] = k
        self._pid = os.getpid()
        self._files: dict[int, h5py.File] = {}
        self._index: dict[int, _ShardIndex] = {}

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

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- catalogue ------------------------------------------------------------------------------
    def videos(self) -> list[str]:
        """Committed video ids in commit order."""
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._meta_shard

    def __getitem__(self, video_id: str) -> VideoFeatures:
        if video_id not in self._meta_shard:
            raise KeyError(f"video {video_id!r} is not in store {self.root}")
        return VideoFeatures(self, video_id)

    def video_streams(self, video_id: str) -> list[str]:
        return [s for s in self.streams if (video_id, s) in self._where]

    def has(self, video_id: str, stream: str) -> bool:
        return (video_id, stream) in self._where

    def errors(self) -> list[dict]:
        """Failure records from errors.jsonl (malformed lines are reported, not skipped)."""
        path = self.root / ERRORS
        if not path.exists():
            return []
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
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
    def _shard_file(self, k: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: drop the parent's handles without closing them
            self._files = {}
            self._index = {}
            self._pid = os.getpid()
        f = self._files.get(k)
        if f is None:
            entry = self.manifest["shards"][k]
            path = self.root / entry["file"]
            if not path.exists():
                raise StoreCorruptError(f"shard {path} listed in the manifest is missing")
            size = path.stat().st_size
            if size != entry["size_bytes"]:
                raise StoreCorruptError(
                    f"shard {path} has {size} bytes, the manifest says {entry['size_bytes']} (truncated or modified)")
            try:
                f = _open_h5(path, "r")
            except OSError as e:
                raise StoreCorruptError(f"shard {path} cannot be opened by HDF5: {e}") from e
            self._files[k] = f
            self._index[k] = self._load_index(k, f, path, entry)
        return f

    def _load_index(self, k: int, f: h5py.File, path: Path, entry: Mapping[str, Any]) -> _ShardIndex:
        try:
            ids = [x.decode("utf-8") if isinstance(x, bytes) else x for x in f["videos/ids"][()]]
            meta = [x.decode("utf-8") if isinstance(x, bytes) else x for x in f["videos/meta_json"][()]]
            offsets, crcs, padded, data = {}, {}, {}, {}
            for s in entry["streams"]:
                g = f[f"streams/{s}"]
                offsets[s] = g["offsets"][()]
                crcs[s] = g["crc32"][()]
                padded[s] = g["padded"][()]
                data[s] = g["data"]
        except (KeyError, OSError) as e:
            raise StoreCorruptError(f"shard {path}: unreadable index ({e})") from e
        if ids != list(entry["videos"]):
            raise StoreCorruptError(f"shard {path}: video ids differ from the manifest")
        return _ShardIndex(path, entry["size_bytes"], entry["sha256"], ids, offsets, crcs, padded, meta, data,
                           {v: i for i, v in enumerate(ids)})

    def _locate(self, video_id: str, stream: str) -> tuple[h5py.File, _ShardIndex, int]:
        if stream not in self.streams:
            raise KeyError(f"unknown stream {stream!r}; store {self.root} has {sorted(self.streams)}")
        k = self._where.get((video_id, stream))
        if k is None:
            if video_id not in self._meta_shard:
                raise KeyError(f"video {video_id!r} is not in store {self.root}")
            raise KeyError(f"video {video_id!r} has no stream {stream!r} in store {self.root}")
        f = self._shard_file(k)
        index = self._index[k]
        return f, index, index.position[video_id]

    def read(self, video_id: str, stream: str) -> np.ndarray:
        """Rows of one video and stream (``T x feature_shape``), CRC-checked."""
        f, index, i = self._locate(video_id, stream)
        a, b = int(index.offsets[stream][i]), int(index.offsets[stream][i + 1])
        try:
            rows = index.data[stream][a:b]
        except OSError as e:
            raise StoreCorruptError(f"shard {index.path}: cannot read {video_id!r}/{stream}: {e}") from e
        if b <= a or _crc32(rows) != int(index.crc32[stream][i]):
            raise StoreCorruptError(
                f"shard {index.path}: checksum mismatch for video {video_id!r} stream {stream!r}")
        return rows

    def times(self, video_id: str, stream: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact (start_s, end_s) of every row of ``video_id`` in ``stream``."""
        f, index, i = self._locate(video_id, stream)
        a, b = int(index.offsets[stream][i]), int(index.offsets[stream][i + 1])
        g = f[f"streams/{stream}"]
        return g["start_s"][a:b], g["end_s"][a:b]

    def is_padded(self, video_id: str, stream: str) -> bool:
        _, index, i = self._locate(video_id, stream)
        return bool(index.padded[stream][i])

    def num_rows(self, video_id: str, stream: str) -> int:
        _, index, i = self._locate(video_id, stream)
        return int(index.offsets[stream][i + 1] - index.offsets[stream][i])

    def meta(self, video_id: str) -> VideoMeta:
        k = self._meta_shard.get(video_id)
        if k is None:
            raise KeyError(f"video {video_id!r} is not in store {self.root}")
        self._shard_file(k)
        index = self._index[k]
        return VideoMeta.from_json(index.meta_json[index.position[video_id]])

    # -- integrity -------------------------------------------------------------------------------
    def verify(self, *, full: bool = True) -> list[str]:
        """Check every shard (size, HDF5 structure, per-video CRCs; sha256 when ``full``).

        Returns a list of problems, each naming the shard; empty when the store is sound.
        """
        problems = []
        for k, entry in enumerate(self.manifest["shards"]):
            path = self.root / entry["file"]
            try:
                f = self._shard_file(k)
                if full and _sha256_file(path) != entry["sha256"]:
                    problems.append(f"shard {path}: sha256 differs from the manifest")
                    continue
                index = self._index[k]
                for s in entry["streams"]:
                    data = f[f"streams/{s}/data"]
                    off = index.offsets[s]
                    if int(off[-1]) != data.shape[0]:
                        problems.append(f"shard {path}: stream {s} offsets end at {off[-1]}, data has {data.shape[0]}")
                        continue
                    for i, v in enumerate(index.ids):
                        if off[i + 1] > off[i] and _crc32(data[off[i]:off[i + 1]]) != int(index.crc32[s][i]):
                            problems.append(f"shard {path}: checksum mismatch for video {v!r} stream {s!r}")
            except StoreCorruptError as e:
                problems.append(str(e))
        return problems

    # -- summaries ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What ``avel info`` prints: streams, plans, provenance, counts, errors."""
        streams = {}
        for name, spec in self.streams.items():
            n_videos = sum(1 for (_, s) in self._where if s == name)
            n_rows = sum(sh.get("rows", {}).get(name, 0) for sh in self.manifest["shards"])
            streams[name] = {**spec.to_dict(), "videos": n_videos, "rows": n_rows,
                             "plan_text": spec.plan.describe()}
        errors = self.errors()
        return {
            "path": str(self.root),
            "dataset": self.dataset,
            "schema_version": self.manifest["schema_version"],
            "videos": len(self._order),
            "shards": len(self.manifest["shards"]),
            "bytes": sum(sh["size_bytes"] for sh in self.manifest["shards"]),
            "streams": streams,
            "errors": len(errors),
            "failed_videos": sorted(self.failed_videos()),
            "random_weight_streams": [n for n, s in self.streams.items() if s.is_random],
            "extra": self.manifest.get("extra", {}),
        }
