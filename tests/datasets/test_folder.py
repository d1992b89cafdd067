"""Folder datasets and the load_dataset dispatch."""

from __future__ import annotations

import json

import pytest

from avel.datasets.annotations import AnnotationError
from avel.datasets.folder import load_dataset, load_folder


def _touch(root, *names):
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_recursive_sorted_ids_with_posix_separators(tmp_path):
    _touch(
        tmp_path,
        "b.webm",
        "sub dir/ünï -x.MP4",
        "sub dir/deeper/-c.mkv",
        "a/z.avi",
        ".hidden.mov",
        "notes.txt",
        "clip.mp4.part",
    )
    ann = load_folder(tmp_path)
    assert ann.dataset == "folder" and ann.classes == []
    assert [s.video_id for s in ann] == [".hidden", "a/z", "b", "sub dir/deeper/-c", "sub dir/ünï -x"]
    s = ann["sub dir/deeper/-c"]
    assert (s.sample_id, s.duration_s, s.subset, s.segments) == ("sub dir/deeper/-c", None, None, [])
    assert s.extra == {"path": str(tmp_path / "sub dir" / "deeper" / "-c.mkv")}
    assert [s.video_id for s in load_folder(tmp_path, extensions=(".avi",))] == ["a/z"]


def test_two_files_for_one_id_name_both(tmp_path):
    _touch(tmp_path, "d/a.mp4", "d/a.MKV")
    with pytest.raises(AnnotationError, match=r"a.MKV and .*a.mp4 both map to video id 'd/a'"):
        load_folder(tmp_path)
    with pytest.raises(AnnotationError, match="not a directory"):
        load_folder(tmp_path / "d" / "a.mp4")


def test_load_dataset_dispatch(tmp_path):
    _touch(tmp_path / "v", "x.mp4")
    assert [s.video_id for s in load_dataset("folder", video_dir=tmp_path / "v")] == ["x"]
    assert [s.video_id for s in load_dataset("folder", tmp_path / "v")] == ["x"]
    (tmp_path / "u.json").write_text(
        json.dumps(
            {
                "version": "unav100",
                "database": {
                    "-q": {
                        "duration": 4,
                        "subset": "test",
                        "annotations": [{"segment": [1, 2], "label": "a", "label_id": 0}],
                    }
                },
            }
        )
    )
    assert load_dataset("unav100", tmp_path / "u.json")["-q"].subset == "test"
    (tmp_path / "Annotations.txt").write_text("Dog&a&good&0&2\n")
    ann = load_dataset("ave", tmp_path / "Annotations.txt")
    assert ann.dataset == "ave" and ann["row-0000"].video_id == "a"
    with pytest.raises(ValueError, match="unknown dataset 'kinetics'"):
        load_dataset("kinetics", tmp_path / "u.json")
    with pytest.raises(ValueError, match="annotation file is required"):
        load_dataset("ave")
