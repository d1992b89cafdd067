"""UnAV-100, AVE and folder annotation formats on the real files and on edge cases."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from avel.datasets.annotations import AnnotationSet, Sample, Segment
from avel.datasets.ave import load_ave, segment_labels, write_ave
from avel.datasets.folder import load_folder
from avel.datasets.unav100 import AnnotationError, find_video_files, load_unav100, write_unav100

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
UNAV = SHARED / "unav100" / "unav100_annotations.json"
AVE = SHARED / "ave"
needs_shared = pytest.mark.skipif(not UNAV.exists(), reason="../shared/data is not next to this checkout")


@needs_shared
def test_real_unav100_file():
    ann = load_unav100(UNAV)
    assert len(ann) == 10790
    assert collections.Counter(s.subset for s in ann) == {"train": 6489, "validation": 2134, "test": 2167}
    assert ann.num_classes == 100 and sum(len(s.segments) for s in ann) == 30059
    assert ann.classes != sorted(ann.classes)  # label_id order, not alphabetical
    assert ann["72f67ednp7w"].segments[0] == Segment(13.01, 15.78316, "skateboarding", 36)
    assert ann.classes[36] == "skateboarding"
    assert sum(v[0] in "-_" for v in ann.video_ids()) == 1336


@needs_shared
def test_real_ave_files():
    ann = load_ave(AVE / "Annotations.txt")
    assert len(ann) == 4143 and len(ann.video_ids()) == 4097
    assert collections.Counter(s.subset for s in ann) == {"train": 3339, "validation": 402, "test": 402}
    assert ann.num_classes == 28 and ann.background_id == 28
    assert ann.classes[0] == "Church bell" and ann.classes[27] == "Mandolin"
    with h5py.File(AVE / "labels_closs.h5") as f:
        closs = f["avadataset"][()]
    labels = np.stack([segment_labels(s) for s in ann])
    np.testing.assert_array_equal(labels != 28, closs > 0)
    with h5py.File(AVE / "mil_labels.h5") as f:
        mil = f["avadataset"][()]
    assert all(mil[i, s.segments[0].label_id] == 1 for i, s in enumerate(ann))
    match = load_ave(AVE / "Annotations.txt", split="match")
    assert sum(s.subset == "test" for s in match) == 402


def test_ave_header_optional_and_round_trip(tmp_path):
    body = "Dog&abc&good&2&5\nBell&-xyz&bad&0&10\nDog&abc&good&7&9\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Annotations.txt").write_text(body)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "Annotations.txt").write_text("Category&VideoID&Quality&StartTime&EndTime\n" + body)
    a, b = load_ave(tmp_path / "a" / "Annotations.txt"), load_ave(tmp_path / "b" / "Annotations.txt")
    assert [s.video_id for s in a] == [s.video_id for s in b] == ["abc", "-xyz", "abc"]
    assert a.classes == ["Dog", "Bell"] and a.background_id == 2
    assert segment_labels(a["row-0000"], background_id=2).tolist() == [2, 2, 0, 0, 0, 2, 2, 2, 2, 2]
    for i, s in enumerate(a):
        s.subset = ["train", "validation", "test"][i]
    write_ave(a, tmp_path / "out")
    back = load_ave(tmp_path / "out" / "Annotations.txt")
    assert [(s.video_id, s.subset, s.segments) for s in back] == [(s.video_id, s.subset, s.segments) for s in a]
    assert (tmp_path / "out" / "Annotations.txt").read_text().startswith("Category&VideoID")


def test_ave_errors_name_line(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Dog&abc&good&2&5\nDog&abc&good\n")
    with pytest.raises(AnnotationError, match="line 2: expected 5"):
        load_ave(p)
    p.write_text("Dog&abc&good&two&5\n")
    with pytest.raises(AnnotationError, match="line 1: StartTime/EndTime must be numbers"):
        load_ave(p)
    p.write_text("Dog&abc&good&2&5\n")
    with h5py.File(tmp_path / "train_order.h5", "w") as f:
        f["order"] = np.array([0, 7])
    with pytest.raises(AnnotationError, match=r"train_order.h5: row indices \[7\] outside 0..0"):
        load_ave(p)


def test_unav100_round_trip_and_errors(tmp_path):
    ann = AnnotationSet("unav100", ["b_second", "a_first"], [
        Sample("-v1", "-v1", 12.0, "train", [Segment(1.0, 2.5, "a_first", 1)]),
        Sample("_v2", "_v2", 30.0, "test", [Segment(0.0, 30.0, "b_second", 0), Segment(3, 4, "a_first", 1)]),
    ])
    write_unav100(ann, tmp_path / "a.json")
    back = load_unav100(tmp_path / "a.json")
    assert back.classes == ["b_second", "a_first"]
    assert [(s.video_id, s.subset, s.duration_s, s.segments) for s in back] == \
        [(s.video_id, s.subset, s.duration_s, s.segments) for s in ann]
    bad = {"version": "unav100", "database": {"x": {"duration": 5, "subset": "train", "annotations": [
        {"segment": [0, 1], "label": "a", "label_id": 0}, {"segment": [0, 1], "label": "b", "label_id": 0}]}}}
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match=r"database/x/annotations\[1\]: label_id 0 is 'b' here but 'a'"):
        load_unav100(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"database": {\n  "x": }')
    with pytest.raises(AnnotationError, match="invalid JSON at line 2"):
        load_unav100(tmp_path / "c.json")


def test_find_video_files_with_dash_ids(tmp_path):
    for name in ("-abc.mp4", "_def.mkv", ".hidden.mp4"):
        (tmp_path / name).write_bytes(b"x")
    found, missing = find_video_files(["-abc", "_def", "ghi"], tmp_path)
    assert found == {"-abc": tmp_path / "-abc.mp4", "_def": tmp_path / "_def.mkv"} and missing == ["ghi"]


def test_folder_dataset_recursive_and_duplicates(tmp_path):
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "ünï -x.mp4").write_bytes(b"x")
    (tmp_path / "a.webm").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("no")
    ann = load_folder(tmp_path)
    assert [s.video_id for s in ann] == ["a", "sub dir/ünï -x"]
    assert ann["a"].duration_s is None and ann["a"].subset is None
    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(AnnotationError, match="both map to video id 'a'"):
        load_folder(tmp_path)
