"""File helpers shared by the whole package: atomic writes and sha256 digests.

An atomic write goes to a hidden temporary file beside the target (same directory, so the
rename stays on one filesystem), is optionally fsynced, and is renamed over the target with
``os.replace``: a reader sees the old file or the new one, never a partial one, and a crash
leaves at most a ``.NAME.<pid>.<random>.tmp<suffix>`` file behind (the target's suffix is kept
last, so writers that pick a format from the extension, e.g. PyAV, still work).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

RANDOM_WEIGHTS = "random"
"""``weights_sha256`` recorded (by extractors, in store manifests) instead of a checkpoint's
sha256 when a module has random weights."""


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """A hidden temporary name beside ``path``, unique per process and call."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], object], *, durable: bool = True) -> None:
    """Create or replace ``path`` atomically: ``write(tmp)`` writes the content to a temporary
    file, which is then renamed over ``path``.

    Args:
        path: the target file.
        write: writes the whole content to the path it is given (``np.save``, ``torch.save``,
            ``h5py.File(tmp, "w")``, ...).
        durable: fsync the file before the rename and the directory after it, so the new content
            survives a power loss (checkpoints, manifests); False for bulk outputs that can be
            rewritten (exports, synthetic videos), where one fsync per file costs more than it saves.

    On any error the temporary file is removed and the error re-raised; ``path`` is untouched.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data), durable=durable)


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> None:
    """Write ``text`` (utf-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=durable)


def sha256_file(path: str | Path, *, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in ``chunk_bytes`` blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()
