import hashlib

import pytest

from avel.datasets.fileio import atomic_write, atomic_write_bytes, atomic_write_text, sha256_file, temp_path


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    atomic_write_bytes(path, b"bytes", durable=False)
    assert path.read_bytes() == b"bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_temp_names_are_hidden_unique_and_keep_the_suffix(tmp_path):
    a, b = temp_path(tmp_path / "v.mp4"), temp_path(tmp_path / "v.mp4")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(".v.mp4.") and a.name.endswith(".tmp.mp4")  # PyAV picks the format from it


def test_sha256_file_reads_in_blocks(tmp_path):
    path = tmp_path / "w.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    assert sha256_file(path, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()
