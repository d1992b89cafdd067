"""`avel validate` reports every problem at once, each naming file and location."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.validate import validate

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _unav(tmp_path, database) -> Path:
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"version": "unav100", "database": database}))
    return p


def test_unav100_every_problem_reported(tmp_path):
    db = {
        "-ok": {"duration": 10, "subset": "train", "annotations": [{"segment": [1, 2], "label": "a", "label_id": 0}]},
        "bad1": {"duration": 10, "subset": "training", "annotations": [
            {"segment": [5, 3], "label": "a", "label_id": 0},
            {"segment": [1, 14], "label": "b", "label_id": 1},
            {"segment": [1, 14], "label": "b", "label_id": 1},
            {"segment": [1, "x"], "label": "c", "label_id": 0}]},
        "bad2": {"subset": "test", "annotations": []},
    }
    probs = validate("unav100", _unav(tmp_path, db))
    text = "\n".join(map(str, probs))
    assert "database/bad1/subset: 'training' is not one of" in text
    assert "database/bad1/annotations[0]/segment: start 5 >= end 3" in text
    assert "database/bad1/annotations[1]/segment: end 14 after the duration 10 s" in text
    assert "database/bad1/annotations[2]: duplicate event 'b' [1, 14]" in text
    assert "database/bad1/annotations[3]/segment: expected [start_s, end_s] numbers" in text
    assert "database/bad2: missing key 'duration'" in text
    assert "label_id 0 is used for several labels ['a', 'c']" in text
    assert all(p.file.endswith("ann.json") for p in probs)


def test_unav100_bad_json_and_missing_videos(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"database": {\n "x": [}\n')
    (probs,) = validate("unav100", p)
    assert probs.location == "line 2 column 8" and "invalid JSON" in probs.message
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "-ok.mp4").write_bytes(b"x")
    db = {v: {"duration": 5, "subset": "train", "annotations": []} for v in ("-ok", "gone")}
    probs = validate("unav100", _unav(tmp_path, db), video_dir=videos)
    assert [(p.location, "no video file" in p.message) for p in probs] == [("database/gone", True)]


def test_ave_every_problem_reported(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Category&VideoID&Quality&StartTime&EndTime\nDog&a&good&2&5\nDog&b&good\n"
                 "Dog&c&good&6&4\nDog&d&good&0&12\nDog&a&good&2&5\nDog&e&good&x&5\n")
    with h5py.File(tmp_path / "train_order.h5", "w") as f:
        f["order"] = np.array([0, 1, 9])
    with h5py.File(tmp_path / "test_order.h5", "w") as f:
        f["order"] = np.array([1])
    text = "\n".join(map(str, validate("ave", p)))
    assert "line 3: expected 5 '&'-separated fields" in text
    assert "line 4: start 6 >= end 4" in text
    assert "line 5: segment [0, 12] outside the 10-s clip" in text
    assert "line 6: duplicate of line 2" in text
    assert "line 7: StartTime/EndTime must be numbers" in text
    assert "train_order.h5: order[9]: row index 9 outside 0..3" in text
    assert "test_order.h5: row 1: also in train_order.h5" in text


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not next to this checkout")
def test_cli_clean_real_files_and_exit_codes(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["validate", "--dataset", "unav100", str(SHARED / "unav100" / "unav100_annotations.json")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["validate", "--dataset", "ave", str(SHARED / "ave" / "Annotations.txt")])
    # The release has one real defect: a zero-length event (0 to 0 s) for VWi2ENBuTbw.
    assert res.exit_code == 1
    assert res.stdout.strip().endswith("Annotations.txt: line 27: start 0 >= end 0")
    assert res.stdout.count("\n") == 1
    bad = _unav(tmp_path, {"x": {"duration": 5, "subset": "train",
                                 "annotations": [{"segment": [3, 1], "label": "a", "label_id": 0}]}})
    res = runner.invoke(cli, ["validate", "--dataset", "unav100", str(bad), "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)[0]["location"] == "database/x/annotations[0]/segment"


def test_folder_validation(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "a.mkv").write_bytes(b"x")
    text = "\n".join(map(str, validate("folder", video_dir=tmp_path)))
    assert "empty file (0 bytes)" in text and "same video id 'a'" in text
