"""Store v2 bookkeeping: the append-only commit log, its compacted snapshot, writer leases,
per-video claims and the deletion log.

The log ``log/commits.jsonl`` is the authority on what a store holds; ``manifest.json`` is a
snapshot of a prefix of it (it records the byte offset it covers) so that opening a large
store reads the snapshot and only the log's tail. One log line is::

    <crc32 of the JSON, 8 hex digits> <one JSON object>\\n

A line without its newline is a torn append of a writer that died before its commit was
acknowledged: readers ignore it and the next committer cuts it off under the store lock.
Any other line that fails its CRC or is not JSON is damage: an error naming the file and line.

Records (``op``): ``init`` (schema version, dataset), ``streams`` (stream specs added),
``extra`` (free-form fields), ``commit`` (one shard: file, videos, streams, absent pairs,
rows, size, sha256, writer). See docs/feature-store.md.

The store's filesystem helpers: fsync, atomic writes and sha256 come from
:mod:`avel.datasets.fileio` (the package's one helper each); :mod:`avel.datasets.store`
re-exports them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avel.datasets.fileio import atomic_write_bytes, atomic_write_text, sha256_file
from avel.datasets.store_index import INDEX_DIR, VideoIndex, build_index

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
LOG = "log/commits.jsonl"
LOCK = "store.lock"
DELETIONS = "deletions.jsonl"
CLAIMS = "claims"
WRITERS = "claims/writers"
SHARD_DIR = "shards"
SNAPSHOT_LOCK = "snapshot.lock"
# no-space / quota / read-only errnos turned into one-line StoreErrors
SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
READONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


class StoreError(Exception):
    """A store cannot be read or written as asked."""


class StoreCorruptError(StoreError):
    """A shard, the log or the manifest is damaged (truncated, checksum mismatch, missing)."""


class SnapshotIndexMissing(StoreCorruptError):
    """manifest.json names an index file that is gone (replaced by a newer snapshot)."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------------
# Filesystem helpers
# ---------------------------------------------------------------------------------------
def sha256_hex(src: Path | bytes | str) -> str:
    """sha256 hex digest of a file (``Path``, :func:`avel.datasets.fileio.sha256_file`) or of
    bytes / a str (utf-8)."""
    if isinstance(src, Path):
        return sha256_file(src)
    return hashlib.sha256(src.encode("utf-8") if isinstance(src, str) else src).hexdigest()


def write_new_file(path: Path, data: bytes) -> None:
    """Create (or truncate) ``path`` with ``data`` and fsync it (plain writes: a full disk is
    an ordinary ``OSError``, never a crash inside a library)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_message(root: Path, e: OSError, doing: str, needed_bytes: int | None = None) -> str:
    """One line naming the store, what failed and what is needed."""
    if e.errno in SPACE_ERRNOS:
        need = f"about {needed_bytes / 2**20:.1f} MiB more" if needed_bytes else "more space"
        try:
            st = os.statvfs(root)
            free = f"; {st.f_bavail * st.f_frsize / 2**20:.1f} MiB free"
        except OSError:
            free = ""
        kind = "out of quota" if e.errno == errno.EDQUOT else "out of space"
        return (
            f"store {root}: {kind} while {doing} ({need} needed{free}); committed videos are kept: "
            f"free space and rerun to resume"
        )
    if e.errno in READONLY_ERRNOS:
        return (
            f"store {root}: cannot write ({os.strerror(e.errno)}) while {doing}; the store needs write "
            f"access to {root}, {root}/shards and {root}/log"
        )
    return f"store {root}: {os.strerror(e.errno) if e.errno else e} while {doing}"


@contextlib.contextmanager
def store_lock(root: Path) -> Iterator[None]:
    """Exclusive advisory lock of the store (fcntl; NFSv4 maps it to a byte-range lock)."""
    try:
        f = open(Path(root) / LOCK, "a+")
    except OSError as e:
        raise StoreError(os_error_message(Path(root), e, "taking the store lock")) from e
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------
# Log records
# ---------------------------------------------------------------------------------------
def encode_record(rec: Mapping[str, Any]) -> bytes:
    body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"%08x " % (zlib.crc32(body) & 0xFFFFFFFF) + body + b"\n"


def decode_records(data: bytes, path: Path, first_line: int) -> tuple[list[dict], int]:
    """Records of complete lines in ``data``; returns (records, bytes consumed).

    A trailing piece without newline (a torn append) is not consumed.
    """
    end = data.rfind(b"\n") + 1
    out = []
    for n, line in enumerate(data[:end].split(b"\n")[:-1], first_line):
        try:
            crc, body = int(line[:8], 16), line[9:]
            if line[8:9] != b" " or zlib.crc32(body) & 0xFFFFFFFF != crc:
                raise ValueError("checksum mismatch")
            rec = json.loads(body)
            if not isinstance(rec, dict) or "op" not in rec:
                raise ValueError("not a log record")
        except ValueError as e:
            raise StoreCorruptError(
                f"{path}: line {n} is damaged ({e}); run `avel info --repair STORE` to keep the records "
                f"before it and re-adopt the shards after it"
            ) from e
        out.append(rec)
    return out, end


@dataclass
class StoreState:
    """What the log (up to ``log_offset``) says the store holds.

    ``shards[k]`` for ``k < n_indexed`` came from a binary snapshot: their video ids are in
    ``index`` (not in the dicts); :meth:`shard_videos` and :meth:`materialize` give them."""

    schema_version: int
    dataset: str
    streams: dict[str, dict] = field(default_factory=dict)
    shards: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    log_offset: int = 0
    log_records: int = 0
    index: VideoIndex | None = None
    n_indexed: int = 0

    def apply(self, rec: Mapping[str, Any]) -> None:
        op = rec["op"]
        if op == "init":
            self.schema_version = int(rec["schema_version"])
            self.dataset = rec["dataset"]
            self.created = self.created or rec.get("time", "")
        elif op == "streams":
            self.streams.update(rec["streams"])
        elif op == "extra":
            self.extra.update(rec["extra"])
        elif op == "commit":
            self.shards.append(rec["shard"])
        self.updated = rec.get("time", self.updated)
        self.log_records += 1

    def shard_videos(self, k: int) -> list[str]:
        """Video ids of shard ``k`` in shard order."""
        if k < self.n_indexed and self.index is not None:
            return self.index.shard_videos(k)
        return self.shards[k]["videos"]

    def shard_size(self, k: int) -> int:
        if k < self.n_indexed and self.index is not None:
            return self.index.shard_size(k)
        return len(self.shards[k]["videos"])

    def full_shard(self, k: int) -> dict:
        """Shard ``k``'s log entry, with its ``videos``."""
        sh = self.shards[k]
        return sh if "videos" in sh else {**sh, "videos": self.shard_videos(k)}

    def materialize(self) -> StoreState:
        """Put every shard's ``videos`` back into its dict (writers and maintenance need them);
        returns self."""
        if self.index is not None:
            for k in range(self.n_indexed):
                self.shards[k] = self.full_shard(k)
        self.index, self.n_indexed = None, 0
        return self

    def to_snapshot(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            "created": self.created,
            "updated": self.updated,
            "streams": self.streams,
            "extra": self.extra,
            "shards": [self.full_shard(k) for k in range(len(self.shards))],
            "log": {"file": LOG, "offset": self.log_offset, "records": self.log_records},
        }

    @classmethod
    def from_snapshot(cls, m: Mapping[str, Any]) -> StoreState:
        log = m.get("log", {})
        return cls(
            schema_version=int(m["schema_version"]),
            dataset=m["dataset"],
            streams=dict(m["streams"]),
            shards=list(m["shards"]),
            extra=dict(m.get("extra", {})),
            created=m.get("created", ""),
            updated=m.get("updated", ""),
            log_offset=int(log.get("offset", 0)),
            log_records=int(log.get("records", 0)),
        )


def read_json_file(path: Path) -> dict:
    """A JSON object from ``path``; damage is a StoreCorruptError naming the file and line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StoreCorruptError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise StoreCorruptError(f"{path}: not UTF-8 text (byte {e.start})") from e
    if not isinstance(data, dict):
        raise StoreCorruptError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_snapshot(root: Path) -> StoreState:
    """The snapshot: manifest.json (small) plus, for snapshots written since the binary index
    exists, ``snapshot/index-*.bin`` (the ids); older snapshots hold the ids in the JSON."""
    path = Path(root) / MANIFEST
    m = read_json_file(path)
    if m.get("schema_version") != SCHEMA_VERSION:
        raise StoreCorruptError(f"{path}: schema_version {m.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    for key in ("dataset", "streams", "shards"):
        if key not in m:
            raise StoreCorruptError(f"{path}: missing key {key!r}")
    if "crc32" in m:  # snapshots written since the binary index carry a CRC of their JSON
        body = json.dumps({k: v for k, v in m.items() if k != "crc32"}, sort_keys=True, separators=(",", ":"))
        if f"{zlib.crc32(body.encode('utf-8')) & 0xFFFFFFFF:08x}" != m["crc32"]:
            raise StoreCorruptError(f"{path}: checksum mismatch (the snapshot is damaged)")
    try:
        state = StoreState.from_snapshot(m)
        for sh in state.shards:
            if not (
                isinstance(sh, dict)
                and isinstance(sh.get("file"), str)
                and isinstance(sh.get("streams"), list)
                and isinstance(sh.get("size_bytes"), int)
                and isinstance(sh.get("absent", {}), dict)
            ):
                raise ValueError(f"shard entry {str(sh)[:80]} lacks file, streams or size_bytes")
    except (KeyError, TypeError, ValueError) as e:
        raise StoreCorruptError(f"{path}: unexpected content ({e})") from e
    desc = m.get("index")
    if desc is None:  # a snapshot written before the binary index: ids in the JSON
        if any(not isinstance(sh.get("videos"), list) for sh in state.shards):
            raise StoreCorruptError(f"{path}: shards without videos and no index")
        return state
    try:
        index = VideoIndex(Path(root) / desc["file"], desc)
    except FileNotFoundError as e:
        raise SnapshotIndexMissing(f"{path}: its index {desc.get('file')} is missing") from e
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise StoreCorruptError(f"{path}: its index {desc.get('file')} is unusable ({e})") from e
    if index.n_shards != len(state.shards):
        raise StoreCorruptError(f"{path}: index covers {index.n_shards} shards, the snapshot {len(state.shards)}")
    state.index, state.n_indexed = index, len(state.shards)
    return state


def read_log_tail(root: Path, state: StoreState) -> StoreState:
    """Apply the log records after ``state.log_offset`` to ``state`` (in place) and return it."""
    path = Path(root) / LOG
    with open(path, "rb") as f:
        f.seek(state.log_offset)
        data = f.read()
    records, used = decode_records(data, path, state.log_records + 1)
    for rec in records:
        state.apply(rec)
    state.log_offset += used
    return state


def load_state(root: Path, *, lazy: bool = False) -> tuple[StoreState, list[str]]:
    """State of a v2 store: snapshot + log tail; a damaged or stale snapshot is ignored
    (the whole log is replayed). Returns (state, notes about what was ignored).

    ``lazy``: keep the ids of snapshot shards in the binary index (readers); otherwise every
    shard dict holds its ``videos`` (writers, maintenance)."""
    root = Path(root)
    for attempt in range(3):
        notes = []
        state = None
        if (root / MANIFEST).exists():
            try:
                state = read_snapshot(root)
                if state.log_offset > (root / LOG).stat().st_size:
                    notes.append(f"{root / MANIFEST}: covers more log than exists; replaying {root / LOG}")
                    state = None
            except SnapshotIndexMissing as e:
                if attempt < 2:  # a writer replaced the snapshot meanwhile: read the new one
                    continue
                notes.append(f"{e}; replaying {root / LOG}")
            except StoreCorruptError as e:
                notes.append(f"{e}; replaying {root / LOG}")
        else:
            notes.append(f"{root / MANIFEST} missing; replaying {root / LOG}")
        break
    if state is None:
        state = StoreState(schema_version=SCHEMA_VERSION, dataset="")
    read_log_tail(root, state)
    if not state.dataset:
        raise StoreCorruptError(f"{root / LOG}: no init record")
    if not lazy:
        state.materialize()
    return state, notes


def cut_torn_tail(root: Path) -> int:
    """Under the store lock: drop a torn last line of the log; returns the log size."""
    path = Path(root) / LOG
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return size
        pos = size
        while pos > 0:  # find the last newline, reading backwards
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            block = f.read(step)
            k = block.rfind(b"\n")
            if k >= 0:
                pos = pos - step + k + 1
                break
            pos -= step
        f.truncate(pos)
        os.fsync(f.fileno())
        return pos


def append_records(root: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Under the store lock: append records to the log and fsync (the commit point)."""
    data = b"".join(encode_record({**r, "time": r.get("time") or now_iso()}) for r in records)
    path = Path(root) / LOG
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        before = os.fstat(fd).st_size
        if before and os.pread(fd, 1, before - 1) != b"\n":  # a torn append of a writer that died
            before = cut_torn_tail(root)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, before)  # never leave half a record behind
            raise
    finally:
        os.close(fd)


def write_snapshot(root: Path, state: StoreState) -> None:
    """Write the snapshot of ``state``: the binary index, then manifest.json naming it (each
    atomic). Concurrent compactions are serialised by ``snapshot.lock`` (not the store lock:
    commits go on meanwhile); older index files are removed once the new manifest is in place."""
    root = Path(root)
    state.materialize()
    with open(root / SNAPSHOT_LOCK, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        data, desc = build_index([sh["videos"] for sh in state.shards])
        name = f"{INDEX_DIR}/index-{state.log_offset}-{desc['crc32']}.bin"
        (root / INDEX_DIR).mkdir(exist_ok=True)
        atomic_write_bytes(root / name, data)
        snap = state.to_snapshot()
        snap["shards"] = [{k: v for k, v in sh.items() if k != "videos"} for sh in snap["shards"]]
        snap["index"] = {"file": name, **desc}
        body = json.dumps(snap, sort_keys=True, separators=(",", ":"))
        snap["crc32"] = f"{zlib.crc32(body.encode('utf-8')) & 0xFFFFFFFF:08x}"
        atomic_write_text(root / MANIFEST, json.dumps(snap, sort_keys=True, separators=(",", ":")))
        # keep the previous index a little: a reader may have just read the previous manifest
        old = sorted(
            (p for p in (root / INDEX_DIR).glob("index-*.bin") if p.name != Path(name).name),
            key=lambda p: p.stat().st_mtime_ns,
        )
        for p in old[:-1]:
            with contextlib.suppress(OSError):
                p.unlink()


def log_deletion(root: Path, path: Path, reason: str, **fields: Any) -> None:
    """Record a deletion in ``deletions.jsonl`` (before the file is removed)."""
    rec = {
        "time": now_iso(),
        "file": str(Path(path).relative_to(root)),
        "reason": reason,
        "by_host": socket.gethostname(),
        "by_pid": os.getpid(),
        **fields,
    }
    fd = os.open(Path(root) / DELETIONS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(rec, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# Writer leases and claims
# ---------------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_gone(root: Path, writer_id: str, host: str | None, pid: int | None) -> bool:
    """True when writer ``writer_id`` is provably not running: on this host its pid is dead,
    or (any host) its lease file is missing (released on close) or expired."""
    if host == socket.gethostname() and pid and not pid_alive(int(pid)):
        return True
    lease = Path(root) / WRITERS / f"{writer_id}.json"
    try:
        info = json.loads(lease.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False  # unreadable lease: do not assume it is gone
    return float(info.get("expires_unix", 0)) < time.time()


class WriterLease:
    """``claims/writers/<id>.json`` (host, pid, expiry), renewed by a daemon thread every
    ``ttl_s / 4``; other writers take over this writer's claims once it expires."""

    def __init__(self, root: Path, ttl_s: float = 120.0) -> None:
        self.on_renew: Callable[[], object] | None = None  # also extend a remote store's lock
        self.lost: BaseException | None = None  # set when on_renew failed (the lock may be lost)
        self.root = Path(root)
        self.id = uuid.uuid4().hex[:12]
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.ttl_s = float(ttl_s)
        self.path = self.root / WRITERS / f"{self.id}.json"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.renew()
        self._thread = threading.Thread(target=self._beat, name=f"avel-lease-{self.id}", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        atomic_write_text(
            self.path,
            json.dumps(
                {
                    "writer": self.id,
                    "host": self.host,
                    "pid": self.pid,
                    "expires_unix": time.time() + self.ttl_s,
                    "ttl_s": self.ttl_s,
                }
            ),
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with contextlib.suppress(OSError):
                self.renew()
            if self.on_renew is not None:
                try:
                    self.on_renew()
                except Exception as e:  # noqa: BLE001 - remembered; the next commit fails on it
                    self.lost = e

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.path.unlink()


def claim_path(root: Path, video_id: str) -> Path:
    return Path(root) / CLAIMS / f"{sha256_hex(video_id)[:40]}.json"


def read_claim(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written or damaged: treated as held by an unknown writer
