"""validate(): every problem at once, each naming the file, the location and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from avel.datasets.ave import load_ave
from avel.datasets.unav100 import load_unav100
from avel.datasets.validate import DURATION_TOLERANCE_S, Problem, validate

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_real = pytest.mark.skipif(not SHARED.exists(), reason="shared/data is not next to this checkout")


def _unav(tmp_path, database, **top) -> Path:
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"version": "unav100", **top, "database": database}))
    return p


def _pairs(problems):
    return {(p.location, p.message) for p in problems}


def _has(problems, location, fragment):
    assert any(p.location == location and fragment in p.message for p in problems), (
        f"no problem at {location!r} containing {fragment!r} in:\n" + "\n".join(map(str, problems))
    )


def test_unav100_every_problem_in_one_pass(tmp_path):
    ok = {"segment": [1, 2], "label": "a", "label_id": 0}
    db = {
        "-ok": {"duration": 10, "subset": "train", "annotations": [ok]},
        "bad1": {
            "duration": 10,
            "subset": "training",
            "annotations": [
                {"segment": [5, 3], "label": "a", "label_id": 0},
                {"segment": [1, 14], "label": "b", "label_id": 1},
                {"segment": [1, 14], "label": "b", "label_id": 1},
                {"segment": [1, "x"], "label": "c", "label_id": 0},
                {"segment": [-1, 2], "label": "", "label_id": -3},
                {"label": "a", "label_id": 0},
                "not an object",
            ],
        },
        "bad2": {"subset": "test", "annotations": []},
        "bad3": {"duration": 0, "subset": "test", "annotations": {}},
        "bad4": [],
        "a/b": {"duration": 3, "subset": "test", "annotations": [{"segment": [0, 1], "label": "a", "label_id": 5}]},
    }
    probs = validate("unav100", _unav(tmp_path, db))
    assert all(isinstance(p, Problem) and p.file == str(tmp_path / "ann.json") for p in probs)
    _has(probs, "database/bad1/subset", "expected one of ['train', 'validation', 'test'], got 'training'")
    _has(probs, "database/bad1/annotations[0]/segment", "start 5 >= end 3")
    _has(probs, "database/bad1/annotations[1]/segment", "end 14 after the duration 10 s")
    _has(probs, "database/bad1/annotations[2]", "duplicate event 'b' [1, 14] (same as annotations[1])")
    _has(probs, "database/bad1/annotations[3]/segment", "expected [start_s, end_s] numbers")
    _has(probs, "database/bad1/annotations[4]/segment", "start -1 < 0")
    _has(probs, "database/bad1/annotations[4]/label", "expected a non-empty class name")
    _has(probs, "database/bad1/annotations[4]/label_id", "expected an integer >= 0, got -3")
    _has(probs, "database/bad1/annotations[5]", "missing key 'segment'")
    _has(probs, "database/bad1/annotations[6]", "expected an object")
    _has(probs, "database/bad2", "missing key 'duration'")
    _has(probs, "database/bad3/duration", "expected a positive number, got 0")
    _has(probs, "database/bad3/annotations", "expected an array, got object")
    _has(probs, "database/bad4", "expected an object")
    _has(probs, "database/a/b", "cannot be a file name")
    _has(probs, "database", "label_id 0 is used for several labels ['a', 'c']")
    _has(probs, "database", "label 'a' has several label_ids [0, 5]")
    _has(probs, "database", "label_id values must be 0..C-1 without gaps; missing [2, 3, 4]")
    assert not any(p.location.startswith("database/-ok") for p in probs)


def test_unav100_tolerance_and_version(tmp_path):
    db = {
        "x": {
            "duration": 10,
            "subset": "train",
            "annotations": [
                {"segment": [0, 10 + DURATION_TOLERANCE_S / 2], "label": "a", "label_id": 0},
                {"segment": [0, 10 + 2 * DURATION_TOLERANCE_S], "label": "a", "label_id": 0},
            ],
        }
    }
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"database": db}))
    assert _pairs(validate("unav100", p)) == {
        ("top level", "missing key 'version' (expected \"unav100\")"),
        (
            "database/x/annotations[1]/segment",
            f"end {10 + 2 * DURATION_TOLERANCE_S:g} after the duration 10 s (tolerance {DURATION_TOLERANCE_S} s)",
        ),
    }


def test_unav100_bad_json_repeated_keys_and_missing_videos(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"database": {\n "x": [}\n')
    (prob,) = validate("unav100", p)
    assert prob.location == "line 2 column 8" and prob.message.startswith("invalid JSON")
    entry = '{"duration": 5, "subset": "train", "subset": "test", "annotations": []}'
    p.write_text(f'{{"version": "unav100", "database": {{"v": {entry}, "v": {entry}}}}}')
    assert _pairs(validate("unav100", p)) == {
        ("database/v", "key appears more than once (JSON keeps only the last)"),
        ("database/v/subset", "key appears more than once (JSON keeps only the last)"),
    }
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "-ok.mp4").write_bytes(b"x")
    db = {v: {"duration": 5, "subset": "train", "annotations": []} for v in ("-ok", "gone", "_gone")}
    probs = validate("unav100", _unav(tmp_path, db), video_dir=videos)
    assert [p.location for p in probs] == ["database/gone", "database/_gone"]
    assert all("no video file" in p.message and str(videos) in p.message for p in probs)


def _ave(tmp_path, text, splits=None, suffix="_order.h5"):
    p = tmp_path / "Annotations.txt"
    p.write_text(text)
    for stem, rows in (splits or {}).items():
        with h5py.File(tmp_path / f"{stem}{suffix}", "w") as f:
            f["order"] = np.asarray(rows)
    return p


def test_ave_every_line_problem(tmp_path):
    p = _ave(
        tmp_path,
        "Category&VideoID&Quality&StartTime&EndTime\nDog&a&good&2&5\nDog&b&good\n"
        "Dog&c&good&6&4\nDog&d&good&0&12\nDog&a&good&2&5\nDog&e&good&x&5\n&&&1&2\n"
        "Category&VideoID&Quality&StartTime&EndTime\n",
    )
    assert _pairs(validate("ave", p)) == {
        ("line 3", "expected 5 '&'-separated fields (Category&VideoID&Quality&StartTime&EndTime), got 3"),
        ("line 4", "start 6 >= end 4"),
        ("line 5", "segment [0, 12] outside the 10-s clip (expected 0 <= start < end <= 10)"),
        ("line 6", "duplicate of line 2"),
        ("line 7", "StartTime/EndTime must be numbers, got 'x', '5'"),
        ("line 8", "empty Category"),
        ("line 8", "empty VideoID"),
        ("line 8", "empty Quality"),
        ("line 9", "header line allowed only as the first line"),
    }


def test_ave_split_problems(tmp_path):
    p = _ave(
        tmp_path,
        "Dog&a&good&0&2\nDog&b&good&1&3\nBird&c&good&0&1\nDog&d&good&0&1\n",
        {"train": [0, 1, 9], "test": [1, -1], "val": [2.5]},
    )
    probs = validate("ave", p)
    by_file = {(Path(q.file).name, q.location, q.message) for q in probs}
    assert by_file == {
        ("train_order.h5", "order[2]", "row index 9 outside 0..3"),
        ("test_order.h5", "order[0]", "row 1 is also in train_order.h5"),
        ("test_order.h5", "order[1]", "row index -1 outside 0..3"),
        ("val_order.h5", "order", "expected integer row indices, got dtype float64"),
    }
    _ave(tmp_path, p.read_text(), {"train": [0, 1], "val": [2]}, suffix="_order_match.h5")
    with h5py.File(tmp_path / "val_order.h5", "w") as f:
        f["rows"] = np.array([2])
    names = {(Path(q.file).name, q.location, q.message.split(" (")[0]) for q in validate("ave", p)}
    assert ("val_order.h5", "order", "no dataset 'order'") in names
    assert ("test_order_match.h5", "file", "missing split file") in names


def test_ave_missing_videos_and_split_dir(tmp_path):
    p = _ave(tmp_path, "Dog&-a&good&0&2\nDog&b&good&1&3\nDog&-a&good&4&6\n")
    videos = tmp_path / "v"
    videos.mkdir()
    (videos / "b.webm").write_bytes(b"x")
    assert _pairs(validate("ave", p, video_dir=videos)) == {("line 1", f"no video file for '-a' in {videos}")}
    splits = tmp_path / "s"
    splits.mkdir()
    assert {Path(q.file).name for q in validate("ave", p, split_dir=splits)} == {
        "train_order.h5",
        "val_order.h5",
        "test_order.h5",
    }


def test_folder_problems(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "a.mkv").write_bytes(b"x")
    probs = validate("folder", video_dir=tmp_path)
    assert {(Path(q.file).name, q.message.split(" (")[0]) for q in probs} == {
        ("a.mp4", "empty file"),
        ("a.mp4", "same video id 'a' as " + str(tmp_path / "a.mkv")),
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [q.location for q in validate("folder", empty)] == ["directory"]
    with pytest.raises(ValueError, match="unknown dataset"):
        validate("kinetics", empty)


@needs_real
def test_real_files():
    assert validate("unav100", SHARED / "unav100" / "unav100_annotations.json") == []
    load_unav100(SHARED / "unav100" / "unav100_annotations.json")
    probs = validate("ave", SHARED / "ave" / "Annotations.txt")
    # the release's one real defect: a zero-length event (0 to 0 s) for VWi2ENBuTbw on line 27
    assert [(p.location, p.message) for p in probs] == [
        (
            "line 27",
            "start 0 >= end 0: an empty event (training keeps the row: all segments background, "
            "video label 'Church bell'; see avel.datasets.ave)",
        )
    ]
    assert load_ave(SHARED / "ave" / "Annotations.txt")["row-0026"].video_id == "VWi2ENBuTbw"


def test_ave_match_split_checked_on_its_own(tmp_path):
    p = _ave(tmp_path, "Dog&a&good&0&2\nDog&b&good&1&3\n", {"train": [0], "val": [5]}, suffix="_order_match.h5")
    assert {(Path(q.file).name, q.location, q.message.split(" (")[0]) for q in validate("ave", p)} == {
        ("val_order_match.h5", "order[0]", "row index 5 outside 0..1"),
        ("test_order_match.h5", "file", "missing split file"),
    }
