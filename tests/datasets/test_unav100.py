"""UnAV-100 JSON: the real file, round trips, structural errors, file lookup."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from avel.datasets.annotations import AnnotationError, AnnotationSet, Sample, Segment
from avel.datasets.unav100 import find_video_files, load_unav100, write_unav100

UNAV = Path(__file__).resolve().parents[3] / "shared" / "data" / "unav100" / "unav100_annotations.json"
needs_real = pytest.mark.skipif(not UNAV.exists(), reason="shared/data is not next to this checkout")


def _write(tmp_path, database, name="a.json", **top) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"version": "unav100", **top, "database": database}))
    return p


def _ann(label="a", label_id=0, seg=(0, 1)):
    return {"segment": list(seg), "label": label, "label_id": label_id}


@needs_real
def test_real_file_counts_and_class_order():
    ann = load_unav100(UNAV)
    assert ann.dataset == "unav100" and len(ann) == 10790
    assert collections.Counter(s.subset for s in ann) == {"train": 6489, "validation": 2134, "test": 2167}
    assert ann.num_classes == 100 and sum(len(s.segments) for s in ann) == 30059
    assert all(s.sample_id == s.video_id for s in ann)
    assert ann.classes != sorted(ann.classes)  # label_id order, not alphabetical
    raw = json.loads(UNAV.read_text())["database"]
    for vid, entry in raw.items():  # every event keeps its label/id pair and the class list agrees
        for a, seg in zip(entry["annotations"], ann[vid].segments):
            assert (seg.start_s, seg.end_s, seg.label, seg.label_id) == (*a["segment"], a["label"], a["label_id"])
            assert ann.classes[seg.label_id] == seg.label
    assert ann["72f67ednp7w"].segments[0] == Segment(13.01, 15.78316, "skateboarding", 36)
    assert sum(v[0] in "-_" for v in ann.video_ids()) == 1336


@needs_real
def test_real_file_round_trip(tmp_path):
    ann = load_unav100(UNAV)
    write_unav100(ann, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(UNAV.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # the temp file is gone


def test_round_trip_keeps_id_order_and_dash_ids(tmp_path):
    ann = AnnotationSet(
        "unav100",
        ["b_second", "a_first"],
        [
            Sample("-v1", "-v1", 12.0, "train", [Segment(1.0, 2.5, "a_first", 1)]),
            Sample("_v2", "_v2", 30.0, "test", [Segment(0.0, 30.0, "b_second", 0), Segment(3.0, 4.0, "a_first", 1)]),
            Sample("v3", "v3", 5.5, "validation", []),
        ],
    )
    write_unav100(ann, tmp_path / "a.json")
    back = load_unav100(tmp_path / "a.json")
    assert back.classes == ["b_second", "a_first"]
    assert [(s.sample_id, s.subset, s.duration_s, s.segments) for s in back] == [
        (s.sample_id, s.subset, s.duration_s, s.segments) for s in ann
    ]


def test_writer_rejects_what_the_format_cannot_hold(tmp_path):
    dup = AnnotationSet("unav100", ["a"], [Sample("r0", "v", 5.0, "train"), Sample("r1", "v", 5.0, "train")])
    with pytest.raises(ValueError, match="video id 'v' appears on two samples"):
        write_unav100(dup, tmp_path / "a.json")
    wrong = AnnotationSet("unav100", ["a"], [Sample("v", "v", 5.0, "train", [Segment(0, 1, "b", 0)])])
    with pytest.raises(ValueError, match="label 'b' with id 0 does not match"):
        write_unav100(wrong, tmp_path / "a.json")
    no_subset = AnnotationSet("unav100", [], [Sample("v", "v", 5.0, None)])
    with pytest.raises(ValueError, match="sample 'v' needs a subset"):
        write_unav100(no_subset, tmp_path / "a.json")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "database, match",
    [
        (
            {"x": {"duration": 5, "subset": "train", "annotations": [_ann("a", 0), _ann("b", 0)]}},
            r"database/x/annotations\[1\]: label_id 0 is 'b' here but 'a' elsewhere",
        ),
        (
            {"x": {"duration": 5, "subset": "train", "annotations": [_ann("a", 0), _ann("a", 1)]}},
            r"database/x/annotations\[1\]: label 'a' has label_id 1 here but 0 elsewhere",
        ),
        (
            {"x": {"duration": 5, "subset": "train", "annotations": [_ann("a", 0), _ann("c", 2)]}},
            r"database: label_id values must be 0..C-1 without gaps; missing \[1\]",
        ),
        ({"x": {"duration": 5, "subset": "val", "annotations": []}}, r"database/x/subset: expected one of"),
        ({"x": {"subset": "train", "annotations": []}}, r"database/x: missing key 'duration'"),
        ({"x": {"duration": "5", "subset": "train", "annotations": []}}, r"database/x/duration: expected a positive"),
        ({"x": {"duration": 5, "subset": "train", "annotations": {}}}, r"database/x/annotations: expected an array"),
        (
            {"x": {"duration": 5, "subset": "train", "annotations": [_ann(seg=(0, "1"))]}},
            r"database/x/annotations\[0\]: expected \{\"segment\"",
        ),
        (
            {"x": {"duration": 5, "subset": "train", "annotations": [_ann(label_id=True)]}},
            r"database/x/annotations\[0\]: expected",
        ),
    ],
)
def test_structural_errors_name_the_key(tmp_path, database, match):
    p = _write(tmp_path, database)
    with pytest.raises(AnnotationError, match=match) as err:
        load_unav100(p)
    assert str(err.value).startswith(str(p))


def test_bad_json_and_repeated_video_id(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"database": {\n  "x": }')
    with pytest.raises(AnnotationError, match="invalid JSON at line 2 column 8"):
        load_unav100(p)
    entry = '{"duration": 5, "subset": "train", "annotations": []}'
    p.write_text(f'{{"version": "unav100", "database": {{"v": {entry}, "w": {entry}, "v": {entry}}}}}')
    with pytest.raises(AnnotationError, match="database/v: video id appears more than once"):
        load_unav100(p)
    p.write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="top level: expected an object"):
        load_unav100(p)


def test_semantic_oddities_load(tmp_path):
    """start >= end and events past the duration load (validate reports them), as the
    real AVE release holds a [0, 0) event."""
    p = _write(tmp_path, {"x": {"duration": 5, "subset": "train", "annotations": [_ann(seg=(3, 3)), _ann(seg=(4, 9))]}})
    assert [g.end_s for g in load_unav100(p)["x"].segments] == [3.0, 9.0]


def test_find_video_files_with_option_like_and_hidden_looking_ids(tmp_path):
    names = ["-abc.mp4", "_def.mkv", "--help.webm", ".hid.mp4", "[x].mov", "two.mp4", "two.avi", "dir.mp4"]
    for name in names[:-1]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.mp4").mkdir()  # a folder named like a video is not a video
    ids = ["-abc", "_def", "--help", ".hid", "[x]", "two", "ghi", "-abc", "dir"]
    found, missing = find_video_files(ids, tmp_path)
    assert found == {
        "-abc": tmp_path / "-abc.mp4",
        "_def": tmp_path / "_def.mkv",
        "--help": tmp_path / "--help.webm",
        ".hid": tmp_path / ".hid.mp4",
        "[x]": tmp_path / "[x].mov",
        "two": tmp_path / "two.mp4",
    }
    assert missing == ["ghi", "dir"]
    found, _ = find_video_files(["two"], tmp_path, extensions=(".avi", ".mp4"))
    assert found["two"].name == "two.avi"  # extension preference order
    assert find_video_files(["a"], tmp_path / "nope") == ({}, ["a"])
