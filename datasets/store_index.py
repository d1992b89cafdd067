"""The binary part of a store's snapshot: which shard and position holds each committed video.

``manifest.json`` (the compacted snapshot of a log prefix) keeps everything small: dataset,
streams, extra, and one entry per shard *without* its list of video ids. The ids live in one
binary file, ``snapshot/index-<log offset>-<crc32>.bin``, that opens in milliseconds whatever
the number of videos (no JSON parse, no dict of a million keys)::

    b"AVELIDX1"                          8-byte magic
    blob        uint8  [B]                the ids of every shard in commit order, utf-8, each
                                          followed by NUL (ids never contain NUL)
    offsets     int64  [N + 1]            occurrence j is blob[offsets[j]:offsets[j + 1] - 1]
    order       int32  [N]                occurrences sorted by id bytes (stable: equal ids in
                                          commit order): a binary search finds a video
    first       uint8  [N]                1 where occurrence j is its video's first (commit order)
    shard_start int64  [S + 1]            shard k holds occurrences shard_start[k]:shard_start[k + 1]

N counts occurrences: a video in several shards (a stream added later) occurs once per shard.
Each array starts at a multiple of 8 bytes; their byte offsets, the file's size and CRC-32 are
recorded in ``manifest.json`` (``index``), which is what ties the two files together: a
mismatch (a crash between the two writes, a damaged file) makes the reader ignore the
snapshot and replay the log instead.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"AVELIDX1"
INDEX_DIR = "snapshot"
_ARRAYS = (
    ("blob", np.uint8),
    ("offsets", np.int64),
    ("order", np.int32),
    ("first", np.uint8),
    ("shard_start", np.int64),
)


class SnapshotIndexError(ValueError):
    """The binary index does not match its description in manifest.json."""


def build_index(shard_videos: Sequence[Sequence[str]]) -> tuple[bytes, dict[str, Any]]:
    """The index file's bytes and its description (for manifest.json) from each shard's ids."""
    enc = [v.encode("utf-8") for videos in shard_videos for v in videos]
    n = len(enc)
    blob = b"\x00".join(enc) + b"\x00" if enc else b""
    lengths = np.fromiter((len(e) + 1 for e in enc), np.int64, count=n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    order_list = sorted(range(n), key=enc.__getitem__)  # stable: equal ids stay in commit order
    first = np.zeros(n, np.uint8)
    prev = None
    for j in order_list:
        if enc[j] != prev:
            first[j] = 1
            prev = enc[j]
    order = np.asarray(order_list, np.int32)
    shard_start = np.zeros(len(shard_videos) + 1, np.int64)
    np.cumsum([len(v) for v in shard_videos], out=shard_start[1:])
    arrays = {
        "blob": np.frombuffer(blob, np.uint8),
        "offsets": offsets,
        "order": order,
        "first": first,
        "shard_start": shard_start,
    }
    parts = [MAGIC]
    pos = len(MAGIC)
    layout = {}
    for name, dtype in _ARRAYS:
        a = np.ascontiguousarray(arrays[name], dtype)
        layout[name] = [pos, int(a.size)]
        parts.append(a.tobytes())
        pos += a.nbytes
        pad = -pos % 8
        parts.append(b"\x00" * pad)
        pos += pad
    data = b"".join(parts)
    desc = {
        "size_bytes": len(data),
        "crc32": f"{zlib.crc32(data) & 0xFFFFFFFF:08x}",
        "occurrences": n,
        "videos": int(first.sum()),
        "shards": len(shard_videos),
        "arrays": layout,
    }
    return data, desc


class VideoIndex:
    """Read side of the binary index: find a video's occurrences, a shard's ids, all ids.

    Raises :class:`SnapshotIndexError` when the file does not match ``desc`` (size, CRC-32, magic,
    array layout)."""

    def __init__(self, path: Path, desc: dict[str, Any]) -> None:
        self.path = Path(path)
        data = self.path.read_bytes()
        if len(data) != int(desc["size_bytes"]):
            raise SnapshotIndexError(f"{self.path}: {len(data)} bytes, manifest.json says {desc['size_bytes']}")
        if f"{zlib.crc32(data) & 0xFFFFFFFF:08x}" != desc["crc32"]:
            raise SnapshotIndexError(f"{self.path}: CRC-32 differs from manifest.json (damaged or replaced)")
        if data[: len(MAGIC)] != MAGIC:
            raise SnapshotIndexError(f"{self.path}: not an avel index (bad magic)")
        arrays = {}
        for name, dtype in _ARRAYS:
            start, count = desc["arrays"][name]
            arrays[name] = np.frombuffer(data, dtype, count=int(count), offset=int(start))
        self.n = int(desc["occurrences"])
        self.n_videos = int(desc["videos"])
        self.n_shards = int(desc["shards"])
        self._blob = data[desc["arrays"]["blob"][0] : desc["arrays"]["blob"][0] + desc["arrays"]["blob"][1]]
        self._offsets = arrays["offsets"]
        self._order = arrays["order"]
        self._first = arrays["first"]
        self._shard_start = arrays["shard_start"]
        if (
            len(self._offsets) != self.n + 1
            or len(self._order) != self.n
            or len(self._shard_start) != self.n_shards + 1
            or int(self._shard_start[-1]) != self.n
            or int(self._offsets[-1]) != len(self._blob)
        ):
            raise SnapshotIndexError(f"{self.path}: array sizes do not match manifest.json")
        self._ids: list[str] | None = None

    def _id_bytes(self, j: int) -> bytes:
        return self._blob[int(self._offsets[j]) : int(self._offsets[j + 1]) - 1]

    def find(self, video_id: str) -> list[int]:
        """Occurrences (commit order) of ``video_id``; empty when it is not indexed."""
        key = video_id.encode("utf-8")
        order = self._order
        lo, hi = 0, self.n
        while lo < hi:  # leftmost occurrence with id >= key
            mid = (lo + hi) // 2
            if self._id_bytes(int(order[mid])) < key:
                lo = mid + 1
            else:
                hi = mid
        out = []
        while lo < self.n and self._id_bytes(int(order[lo])) == key:
            out.append(int(order[lo]))
            lo += 1
        return out

    def locate(self, occurrence: int) -> tuple[int, int]:
        """(shard number, position in the shard) of an occurrence."""
        k = int(np.searchsorted(self._shard_start, occurrence, side="right")) - 1
        return k, occurrence - int(self._shard_start[k])

    def all_ids(self) -> list[str]:
        """The id of every occurrence in commit order (decoded once, then cached)."""
        if self._ids is None:
            self._ids = self._blob[:-1].decode("utf-8").split("\x00") if self.n else []
        return self._ids

    def shard_videos(self, k: int) -> list[str]:
        return self.all_ids()[int(self._shard_start[k]) : int(self._shard_start[k + 1])]

    def shard_size(self, k: int) -> int:
        return int(self._shard_start[k + 1] - self._shard_start[k])

    def videos(self) -> list[str]:
        """Distinct ids in order of first commit."""
        ids = self.all_ids()
        if self.n_videos == self.n:
            return list(ids)
        return [ids[j] for j in np.flatnonzero(self._first)]
