"""Stores and video folders in an S3-compatible bucket (``s3://bucket/prefix``, via fsspec).

An object store has no append, no rename, no advisory lock; a PUT is atomic and a conditional
PUT (``If-None-Match: *``: create only if absent; ``If-Match: <etag>``: replace only that
version) is the one compare-and-swap. The store in a bucket is therefore laid out so that
every object is written once, and a commit is one conditional create::

    s3://bucket/prefix/
      shards/shard-*.h5            immutable shards, each PUT (whole) before its commit record
      log/records/<seq>.rec        one commit-log line per object (seq: 12 digits from 0), created
                                   with If-None-Match: *  <- the commit point
      log/upto-<n>.jsonl           records 0..n-1 in one object (written on close: a cache)
      manifest.json, snapshot/...  the compacted snapshot (written on close: a cache)
      errors.jsonl, deletions.jsonl  copies of the writer's, uploaded on close
      writer.lock                  the writer's lock object (writer, host, pid, expiry)

Work happens in a local cache directory (``$AVEL_REMOTE_CACHE``, default
``~/.cache/avel/remote``, one folder per URL) that is an ordinary local store: readers pull the
log (``upto-<n>`` plus the records after it) and the snapshot into it and download a shard on
its first read (size and sha256 checked against the log); the writer builds each shard there,
uploads it, then creates its record.

One writer per bucket store: a second writer is refused at start with one line naming the
first (``writer.lock`` is created with If-None-Match; renewed with If-Match every quarter of
its TTL; taken over only once expired). Two writers' shards and claims cannot be coordinated
safely without a lock service; even so, record objects are create-only, so a writer that lost
its lock (it stalled past its expiry and another took over) fails at its next commit instead
of overwriting one.

Endpoints and credentials come from the usual places (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``~/.aws``, ``FSSPEC_S3_*``): nothing avel-specific.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from avel.datasets.fileio import atomic_write_bytes, temp_path
from avel.datasets.store_log import (
    DELETIONS,
    LOG,
    MANIFEST,
    StoreCorruptError,
    StoreError,
    now_iso,
    sha256_hex,
    store_lock,
)

RECORDS = "log/records"
LOCK_OBJECT = "writer.lock"
_UPTO = re.compile(r"^upto-(\d+)\.jsonl$")
_RECORD = re.compile(r"^(\d{12})\.rec$")


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL with a protocol other than ``file`` (``s3://...``)."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec is a dependency
        raise StoreError(f"{url}: fsspec is needed for remote stores") from e
    try:
        fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except (ImportError, ValueError) as e:
        raise StoreError(f"{url}: cannot open ({e}); for s3:// install s3fs (pip install 's3fs')") from e
    return fs, path.rstrip("/")


def cache_root() -> Path:
    return Path(os.environ.get("AVEL_REMOTE_CACHE") or Path.home() / ".cache" / "avel" / "remote")


def _cache_dir(url: str, kind: str) -> Path:
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.split("://", 1)[1])[-60:]
    return cache_root() / kind / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{tail}"


def _remote_error(url: str, e: BaseException, doing: str) -> StoreError:
    return StoreError(f"store {url}: {type(e).__name__} while {doing}: {e}")


class RemoteStore:
    """A store at ``url`` in a bucket, mirrored in a local cache directory (``local``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.base = _fs(self.url)
        self.local = _cache_dir(self.url, "stores")
        self.records = 0  # records known to be in the bucket (0..records-1)
        self.published_bytes = 0  # the local log's prefix that those records make up
        self.lock_etag: str | None = None
        self.lock_info: dict[str, Any] = {}

    def _key(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    # -- reading --------------------------------------------------------------------------------
    def pull(self) -> Path:
        """Bring the bucket's log (and snapshot) into the local cache; returns the cache dir.

        The bucket is the authority: a local log that disagrees with it is moved aside and
        rebuilt; local records beyond the bucket's (a writer of this cache that died before
        publishing them) are kept for that writer to publish."""
        (self.local / "log").mkdir(parents=True, exist_ok=True)
        (self.local / "shards").mkdir(exist_ok=True)
        try:
            names = [Path(p).name for p in self.fs.ls(self._key("log"), detail=False, refresh=True)]
            rec_names = self.fs.ls(self._key(RECORDS), detail=False, refresh=True) if "records" in names else []
        except FileNotFoundError:
            names, rec_names = [], []
        except OSError as e:
            raise _remote_error(self.url, e, "listing its log") from e
        seqs = sorted(int(m.group(1)) for p in rec_names if (m := _RECORD.match(Path(p).name)))
        if seqs != list(range(len(seqs))):
            missing = sorted(set(range(max(seqs) + 1)) - set(seqs))
            raise StoreCorruptError(f"store {self.url}: {RECORDS}/ lacks records {missing[:5]} (the log has gaps)")
        n = len(seqs)
        upto = max((int(m.group(1)) for p in names if (m := _UPTO.match(p))), default=0)
        log = self.local / LOG
        with store_lock(self.local):
            lines = log.read_bytes().splitlines(keepends=True) if log.exists() else []
            lines = [x for x in lines if x.endswith(b"\n")]
            common = min(len(lines), n)
            if common and lines[common - 1] != self._record(common - 1):
                aside = log.with_name(f"commits.jsonl.diverged-{time.strftime('%Y%m%d%H%M%S')}")
                os.replace(log, aside)
                lines = []
            if len(lines) < upto <= n:
                lines = self.fs.cat_file(self._key(f"log/upto-{upto}.jsonl")).splitlines(keepends=True)
            new = [self._record(k) for k in range(len(lines), n)]
            if not lines and not new:  # a new store: the writer creates the log
                log.unlink(missing_ok=True)
            elif new or not log.exists() or log.stat().st_size != sum(map(len, lines)):
                atomic_write_bytes(log, b"".join(lines + new))
            self.records = n
            self.published_bytes = sum(len(x) for x in (lines + new)[:n])
            self._pull_snapshot()
        return self.local

    def _record(self, seq: int) -> bytes:
        try:
            return self.fs.cat_file(self._key(f"{RECORDS}/{seq:012d}.rec"))
        except OSError as e:
            raise _remote_error(self.url, e, f"reading log record {seq}") from e

    def _pull_snapshot(self) -> None:
        """manifest.json and its index, when the bucket's differ from the cache's."""
        try:
            remote = self.fs.cat_file(self._key(MANIFEST))
        except FileNotFoundError:
            return
        local = self.local / MANIFEST
        if local.exists() and local.read_bytes() == remote:
            return
        with contextlib.suppress(ValueError, KeyError, OSError):
            index = json.loads(remote).get("index")
            if index and not (self.local / index["file"]).exists():
                (self.local / index["file"]).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._key(index["file"]), str(self.local / index["file"]))
            atomic_write_bytes(local, remote)

    def fetch_shard(self, rel: str, size_bytes: int, sha256: str) -> Path:
        """The local copy of shard ``rel``, downloaded (and checked) on first use."""
        path = self.local / rel
        if path.exists() and path.stat().st_size == size_bytes:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        try:
            self.fs.get_file(self._key(rel), str(tmp))
            got = sha256_hex(tmp)
            if got != sha256:
                raise StoreCorruptError(
                    f"shard {self.url}/{rel}: sha256 of the object differs from the log (the object was modified)"
                )
            os.replace(tmp, path)
        except FileNotFoundError as e:
            raise StoreCorruptError(f"shard {self.url}/{rel} listed in the log is missing") from e
        except OSError as e:
            raise _remote_error(self.url, e, f"downloading {rel}") from e
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return path

    # -- the writer's lock ----------------------------------------------------------------------
    def acquire(self, writer: str, ttl_s: float) -> None:
        """Create ``writer.lock`` or refuse with one line naming the writer that holds it."""
        info = {"writer": writer, "host": socket.gethostname(), "pid": os.getpid(), "started": now_iso()}
        key = self._key(LOCK_OBJECT)
        for _ in range(2):
            body = json.dumps({**info, "expires_unix": time.time() + ttl_s, "ttl_s": ttl_s}).encode()
            try:
                out = self.fs.pipe_file(key, body, mode="create")
                self.lock_etag, self.lock_info = (out or {}).get("ETag"), info
                return
            except FileExistsError:
                pass
            except OSError as e:
                raise _remote_error(self.url, e, "creating its writer lock") from e
            try:
                held = json.loads(self.fs.cat_file(key))
            except (OSError, ValueError):
                held = {}
            if float(held.get("expires_unix", 0)) > time.time():
                raise StoreError(
                    f"store {self.url}: writer {held.get('writer')} (host {held.get('host')}, pid {held.get('pid')}, "
                    f"since {held.get('started')}) is writing it; a bucket store takes one writer at a time "
                    f"(its lock expires {max(0, held['expires_unix'] - time.time()):.0f} s after that writer stops)"
                )
            with contextlib.suppress(FileNotFoundError):  # expired: take it over (one taker wins the create)
                self.fs.rm_file(key)
        raise StoreError(f"store {self.url}: another writer took its lock at the same time")

    def renew(self, ttl_s: float) -> None:
        """Extend the lock, only if it is still ours (If-Match on its ETag)."""
        if self.lock_etag is None:
            return
        body = json.dumps({**self.lock_info, "expires_unix": time.time() + ttl_s, "ttl_s": ttl_s}).encode()
        out = self.fs.pipe_file(self._key(LOCK_OBJECT), body, IfMatch=self.lock_etag)
        self.lock_etag = (out or {}).get("ETag", self.lock_etag)

    def release(self) -> None:
        if self.lock_etag is None:
            return
        with contextlib.suppress(OSError):
            held = json.loads(self.fs.cat_file(self._key(LOCK_OBJECT)))
            if held.get("writer") == self.lock_info.get("writer"):
                self.fs.rm_file(self._key(LOCK_OBJECT))
        self.lock_etag = None

    # -- writing --------------------------------------------------------------------------------
    def publish(self) -> int:
        """Upload the local log's records beyond the bucket's: for a commit, its shard first,
        then the record object (create-only: the commit point). Returns how many."""
        log = self.local / LOG
        with open(log, "rb") as f:
            f.seek(self.published_bytes)
            data = f.read()
        lines = data.splitlines(keepends=True)
        done = 0
        for line in lines:
            if not line.endswith(b"\n"):
                break
            rec = json.loads(line[9:])
            try:
                if rec.get("op") == "commit":
                    rel = rec["shard"]["file"]
                    if not self.fs.exists(self._key(rel)):
                        self.fs.put_file(str(self.local / rel), self._key(rel))
                self.fs.pipe_file(self._key(f"{RECORDS}/{self.records:012d}.rec"), line, mode="create")
            except FileExistsError as e:
                raise StoreError(
                    f"store {self.url}: log record {self.records} was written by another writer meanwhile (this "
                    f"writer's lock expired?); this writer stops, its local commits stay in {self.local}"
                ) from e
            except OSError as e:
                raise _remote_error(self.url, e, f"uploading commit record {self.records}") from e
            self.records += 1
            self.published_bytes += len(line)
            done += 1
        return done

    def publish_snapshot(self) -> None:
        """On close: the whole log in one object, the snapshot, errors and deletions."""
        try:
            log = (self.local / LOG).read_bytes()[: self.published_bytes]
            if self.records:
                self.fs.pipe_file(self._key(f"log/upto-{self.records}.jsonl"), log)
            m = self.local / MANIFEST
            if m.exists():
                snap = json.loads(m.read_text(encoding="utf-8"))
                if int(snap.get("log", {}).get("offset", -1)) <= self.published_bytes:
                    index = snap.get("index")
                    if index:
                        self.fs.put_file(str(self.local / index["file"]), self._key(index["file"]))
                    self.fs.put_file(str(m), self._key(MANIFEST))
            for name in ("errors.jsonl", DELETIONS):
                if (self.local / name).exists():
                    self.fs.put_file(str(self.local / name), self._key(name))
        except OSError as e:
            raise _remote_error(self.url, e, "uploading its snapshot") from e


def stage_folder(url: str, extensions: tuple[str, ...]) -> Path:
    """A local copy of the files under ``url`` whose names end in ``extensions`` (relative
    paths kept); files already there with the same size are not downloaded again. Returns
    the local folder (in ``$AVEL_REMOTE_CACHE/videos``)."""
    fs, base = _fs(url)
    local = _cache_dir(url.rstrip("/"), "videos")
    try:
        found = fs.find(base, detail=True)
    except OSError as e:
        raise StoreError(f"videos {url}: cannot list ({e})") from e
    if not found:
        raise StoreError(f"videos {url}: no such folder or it is empty")
    for key, info in sorted(found.items()):
        if not key.lower().endswith(tuple(e.lower() for e in extensions)):
            continue
        dst = local / os.path.relpath(key, base)
        if dst.exists() and dst.stat().st_size == int(info.get("size", -1)):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(dst)
        try:
            fs.get_file(key, str(tmp))
            os.replace(tmp, dst)
        except OSError as e:
            raise StoreError(f"videos {url}: cannot download {key} ({e})") from e
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    local.mkdir(parents=True, exist_ok=True)
    return local
