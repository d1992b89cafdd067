"""`avel validate` on broken files (one case per problem kind) and on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_real = pytest.mark.skipif(not SHARED.exists(), reason="shared/data is not next to this checkout")

_OK = {"segment": [1, 2], "label": "a", "label_id": 0}


def _unav(database, raw=None):
    def make(tmp_path: Path) -> list[str]:
        p = tmp_path / "ann.json"
        p.write_text(raw if raw is not None else json.dumps({"version": "unav100", "database": database}))
        return ["--dataset", "unav100", str(p)]

    return make


def _entry(*anns, duration=10, subset="train"):
    return {"duration": duration, "subset": subset, "annotations": list(anns)}


def _ave(text, splits=None):
    def make(tmp_path: Path) -> list[str]:
        p = tmp_path / "Annotations.txt"
        p.write_text(text)
        for stem, rows in (splits or {}).items():
            with h5py.File(tmp_path / f"{stem}_order.h5", "w") as f:
                f["order"] = np.asarray(rows)
        return ["--dataset", "ave", str(p)]

    return make


def _videos(tmp_path: Path) -> list[str]:
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"version": "unav100", "database": {"-v": _entry(_OK), "_w": _entry(_OK)}}))
    (tmp_path / "vids").mkdir()
    (tmp_path / "vids" / "_w.mkv").write_bytes(b"x")
    return ["--dataset", "unav100", str(p), "--videos", str(tmp_path / "vids")]


def _folder(tmp_path: Path) -> list[str]:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.mp4").write_bytes(b"x")
    (tmp_path / "f" / "a.webm").write_bytes(b"x")
    return ["--dataset", "folder", str(tmp_path / "f")]


CASES = {
    "bad_json": (_unav(None, raw='{"database": {\n  "x": ,}}'), "ann.json: line 2 column 8: invalid JSON"),
    "missing_key": (
        _unav({"x": {"subset": "train", "annotations": []}}),
        "ann.json: database/x: missing key 'duration'",
    ),
    "wrong_type": (
        _unav({"x": _entry({"segment": "0-1", "label": "a", "label_id": 0})}),
        "database/x/annotations[0]/segment: expected [start_s, end_s] numbers, got '0-1'",
    ),
    "start_after_end": (
        _unav({"x": _entry({"segment": [3, 1], "label": "a", "label_id": 0})}),
        "database/x/annotations[0]/segment: start 3 >= end 1",
    ),
    "outside_duration": (
        _unav({"x": _entry({"segment": [3, 12], "label": "a", "label_id": 0})}),
        "database/x/annotations[0]/segment: end 12 after the duration 10 s",
    ),
    "label_id_mismatch": (
        _unav({"x": _entry(_OK, {"segment": [3, 4], "label": "b", "label_id": 0})}),
        "database: label_id 0 is used for several labels ['a', 'b']",
    ),
    "label_id_gap": (
        _unav({"x": _entry(_OK, {"segment": [3, 4], "label": "b", "label_id": 2})}),
        "database: label_id values must be 0..C-1 without gaps; missing [1]",
    ),
    "duplicate_event": (_unav({"x": _entry(_OK, _OK)}), "database/x/annotations[1]: duplicate event 'a' [1, 2]"),
    "unknown_subset": (_unav({"x": _entry(_OK, subset="val")}), "database/x/subset: expected one of"),
    "missing_video": (_videos, "ann.json: database/-v: no video file -v{.mp4,"),
    "field_count": (_ave("Dog&a&good&1\n"), "Annotations.txt: line 1: expected 5 '&'-separated fields"),
    "non_numeric": (
        _ave("Category&VideoID&Quality&StartTime&EndTime\nDog&a&good&1&ten\n"),
        "Annotations.txt: line 2: StartTime/EndTime must be numbers, got '1', 'ten'",
    ),
    "ave_outside_clip": (_ave("Dog&a&good&8&11\n"), "Annotations.txt: line 1: segment [8, 11] outside the 10-s clip"),
    "duplicate_row": (_ave("Dog&a&good&1&3\n\nDog&a&good&1&3\n"), "Annotations.txt: line 3: duplicate of line 1"),
    "split_out_of_range": (
        _ave("Dog&a&good&1&3\n", {"train": [0], "val": [4], "test": []}),
        "val_order.h5: order[0]: row index 4 outside 0..0",
    ),
    "split_twice": (
        _ave("Dog&a&good&1&3\n", {"train": [0], "val": [], "test": [0]}),
        "test_order.h5: order[0]: row 0 is also in train_order.h5",
    ),
    "folder_same_id": (_folder, "a.webm: file: same video id 'a' as"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_problem_kind(tmp_path, case):
    make, expected = CASES[case]
    res = CliRunner().invoke(cli, ["validate", *make(tmp_path)])
    assert res.exit_code == 1, res.output
    assert expected in res.stdout, res.stdout
    assert "problem(s)" in res.stderr


def test_all_problems_at_once_and_json(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Dog&a&good&1\nDog&b&good&5&2\nDog&c&good&x&2\n")
    res = CliRunner().invoke(cli, ["validate", "--dataset", "ave", str(p)])
    assert res.exit_code == 1
    assert [line.split(": ")[1] for line in res.stdout.splitlines()] == ["line 1", "line 2", "line 3"]
    assert res.stderr.strip() == f"3 problem(s): 3 in {p}"
    res = CliRunner().invoke(cli, ["validate", "--dataset", "ave", str(p), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert [set(o) for o in out] == [{"file", "location", "message"}] * 3
    assert out[1] == {"file": str(p), "location": "line 2", "message": "start 5 >= end 2"}


def test_clean_file_and_usage_errors(tmp_path):
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"version": "unav100", "database": {"-x": _entry(_OK)}}))
    runner = CliRunner()
    res = runner.invoke(cli, ["validate", "--dataset", "unav100", "--", str(p)])
    assert res.exit_code == 0 and res.stdout == "" and "OK" in res.stderr
    res = runner.invoke(cli, ["validate", "--dataset", "unav100", "--json", str(p)])
    assert res.exit_code == 0 and json.loads(res.stdout) == []
    for args in (
        ["--dataset", "unav100", str(tmp_path / "nope.json")],
        ["--dataset", "kinetics", str(p)],
        ["--dataset", "ave"],
        ["--dataset", "unav100", str(p), "--splits", str(tmp_path)],
        ["--dataset", "folder", str(p)],
        ["--dataset", "ave", str(tmp_path)],
    ):
        res = runner.invoke(cli, ["validate", *args])
        assert res.exit_code == 2, (args, res.output)


@needs_real
def test_real_files():
    runner = CliRunner()
    res = runner.invoke(cli, ["validate", "--dataset", "unav100", str(SHARED / "unav100" / "unav100_annotations.json")])
    assert res.exit_code == 0 and res.stdout == "", res.output
    ave = SHARED / "ave"
    for extra in ([], ["--splits", str(ave)]):
        res = runner.invoke(cli, ["validate", "--dataset", "ave", str(ave / "Annotations.txt"), *extra])
        # the release has one real defect: a zero-length event (0 to 0 s) for VWi2ENBuTbw
        assert res.exit_code == 1
        assert res.stdout == (
            f"{ave / 'Annotations.txt'}: line 27: start 0 >= end 0: an empty event (training keeps "
            f"the row: all segments background, video label 'Church bell'; see avel.datasets.ave)\n"
        )
