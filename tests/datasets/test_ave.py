"""AVE: the real release (rows, classes, both splits, label files), header detection, the
writer and errors that name the line."""

from __future__ import annotations

import collections
from pathlib import Path

import h5py
import numpy as np
import pytest

from avel.datasets.annotations import AnnotationError, AnnotationSet, Sample, Segment
from avel.datasets.ave import HEADER, load_ave, segment_labels, write_ave

AVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ave"
needs_real = pytest.mark.skipif(
    not (AVE / "Annotations.txt").exists(), reason="shared/data is not next to this checkout"
)


def _order(path: Path) -> np.ndarray:
    with h5py.File(path) as f:
        return f["order"][()]


@needs_real
def test_real_rows_classes_and_standard_split():
    ann = load_ave(AVE / "Annotations.txt")
    assert ann.dataset == "ave" and len(ann) == 4143 and len(ann.video_ids()) == 4097
    assert collections.Counter(s.subset for s in ann) == {"train": 3339, "validation": 402, "test": 402}
    assert ann.num_classes == 28 and ann.background_id == 28
    assert ann.classes[0] == "Church bell" and ann.classes[27] == "Mandolin"
    first = ann["row-0000"]
    assert (first.video_id, first.duration_s, first.segments, first.extra["row"], first.extra["quality"]) == (
        "RUhOCu3LNXM",
        10.0,
        [Segment(0.0, 10.0, "Church bell", 0)],
        0,
        "good",
    )
    test_rows = [s.extra["row"] for s in ann if s.subset == "test"]
    assert sorted(test_rows) == sorted(_order(AVE / "test_order.h5").tolist())
    repeated = [v for v, n in collections.Counter(s.video_id for s in ann).items() if n > 1]
    assert len(repeated) == 45


@needs_real
def test_real_match_split_is_the_cml_files():
    ann = load_ave(AVE / "Annotations.txt", split="match")
    assert collections.Counter(s.subset for s in ann) == {"train": 3339, "validation": 402, "test": 402}
    for subset, stem in (("train", "train"), ("validation", "val"), ("test", "test")):
        rows = sorted(s.extra["row"] for s in ann if s.subset == subset)
        assert rows == sorted(_order(AVE / f"{stem}_order_match.h5").tolist())
    standard = load_ave(AVE / "Annotations.txt")
    assert [s.subset for s in ann] != [s.subset for s in standard]  # a different split, not a copy


@needs_real
def test_segment_labels_match_released_label_files():
    ann = load_ave(AVE / "Annotations.txt")
    labels = np.stack([segment_labels(s) for s in ann])  # 4143 x 10
    with h5py.File(AVE / "labels_closs.h5") as f:
        closs = f["avadataset"][()]
    np.testing.assert_array_equal((labels != 28).astype(np.float32), closs)
    assert ann["row-0026"].segments[0].duration_s == 0 and (labels[26] == 28).all()  # [0, 0) labels nothing
    with h5py.File(AVE / "mil_labels.h5") as f:
        mil = f["avadataset"][()]  # 4143 x 29: one-hot video class
    np.testing.assert_array_equal(mil, np.eye(29)[[s.segments[0].label_id for s in ann]])


def test_segment_labels_boundaries():
    s = Sample("r", "v", 10.0, None, [Segment(2.0, 5.0, "x", 3)])
    assert segment_labels(s, background_id=7).tolist() == [7, 7, 3, 3, 3, 7, 7, 7, 7, 7]
    s = Sample("r", "v", 10.0, None, [Segment(2.5, 4.0, "x", 1)])  # fractional start: segment 2 starts before it
    assert segment_labels(s, num_segments=5, background_id=0).tolist() == [0, 0, 0, 1, 0]


def test_header_is_optional(tmp_path):
    body = "Dog&abc&good&2&5\n\nBell&-xyz&bad&0&10\nDog&abc&good&7&9\n"
    loose_header = "category & videoid&Quality&StartTime&EndTime\r\n"
    for name, text in (("a", body), ("b", HEADER + "\n" + body), ("c", loose_header + body)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Annotations.txt").write_text(text)
    a, b, c = (load_ave(tmp_path / n / "Annotations.txt") for n in "abc")
    for ann in (a, b, c):
        assert [s.video_id for s in ann] == ["abc", "-xyz", "abc"]
        assert [s.sample_id for s in ann] == ["row-0000", "row-0001", "row-0002"]
        assert ann.classes == ["Dog", "Bell"] and ann.background_id == 2
        assert all(s.subset is None for s in ann)
    assert a["row-0001"].extra == {"row": 1, "quality": "bad", "line": 3}
    assert b["row-0001"].extra["line"] == 4


def test_write_round_trip_with_splits(tmp_path):
    rows = [
        ("Dog", "abc", 2, 5, "train"),
        ("Bell", "-xyz", 0, 10, "validation"),
        ("Dog", "abc", 7, 9.5, "test"),
        ("Bell", "_q", 1, 3, "train"),
        ("Dog", "n", 0, 1, None),
    ]
    ann = AnnotationSet(
        "ave",
        ["Dog", "Bell"],
        [
            Sample(
                f"row-{i:04d}",
                v,
                10.0,
                sub,
                [Segment(float(s), float(e), c, ["Dog", "Bell"].index(c))],
                {"row": i, "quality": "good"},
            )
            for i, (c, v, s, e, sub) in enumerate(rows)
        ],
        background_id=2,
    )
    write_ave(ann, tmp_path / "out")
    text = (tmp_path / "out" / "Annotations.txt").read_text()
    assert text.splitlines()[0] == HEADER and text.splitlines()[3] == "Dog&abc&good&7&9.5"
    back = load_ave(tmp_path / "out" / "Annotations.txt")
    assert [(s.sample_id, s.video_id, s.subset, s.segments) for s in back] == [
        (s.sample_id, s.video_id, s.subset, s.segments) for s in ann
    ]
    match = load_ave(tmp_path / "out" / "Annotations.txt", split="match")
    assert [s.subset for s in match] == [s.subset for s in ann]
    assert _order(tmp_path / "out" / "train_order.h5").tolist() == [0, 3]
    assert _order(tmp_path / "out" / "train_order.h5").dtype == np.int64
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["Annotations.txt"] + [f"{s}_order{m}.h5" for s in ("train", "val", "test") for m in ("", "_match")]
    )


def test_classes_argument_fixes_label_ids(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Bell&a&good&0&2\nDog&b&good&1&3\n")
    assert load_ave(p).classes == ["Bell", "Dog"]
    ann = load_ave(p, classes=["Dog", "Bell", "Cat"])
    assert [s.segments[0].label_id for s in ann] == [1, 0] and ann.background_id == 3
    with pytest.raises(AnnotationError, match="line 1: category 'Bell' is not in the given classes"):
        load_ave(p, classes=["Dog"])


def test_writer_rejects_bad_rows(tmp_path):
    two = AnnotationSet("ave", ["a"], [Sample("r", "v", 10.0, "train", [Segment(0, 1, "a", 0), Segment(2, 3, "a", 0)])])
    with pytest.raises(ValueError, match="exactly one event; sample 'r' has 2"):
        write_ave(two, tmp_path)
    amp = AnnotationSet("ave", ["a&b"], [Sample("r", "v", 10.0, "train", [Segment(0, 1, "a&b", 0)])])
    with pytest.raises(ValueError, match="label 'a&b' is empty or holds '&'"):
        write_ave(amp, tmp_path)
    assert not (tmp_path / "Annotations.txt").exists()


@pytest.mark.parametrize(
    "text, match",
    [
        ("Dog&abc&good&2&5\nDog&abc&good\n", "line 2: expected 5 '&'-separated fields"),
        ("Dog&abc&good&two&5\n", "line 1: StartTime/EndTime must be numbers, got 'two', '5'"),
        ("\nDog&&good&1&5\n", "line 2: Category and VideoID must not be empty"),
        ("Dog&a&good&1&5\n" + HEADER + "\n", "line 2: StartTime/EndTime must be numbers"),
    ],
)
def test_line_errors(tmp_path, text, match):
    p = tmp_path / "Annotations.txt"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=match) as err:
        load_ave(p)
    assert str(err.value).startswith(str(p))


def _splits(d: Path, train, val, test, suffix="_order.h5"):
    for stem, rows in (("train", train), ("val", val), ("test", test)):
        if rows is not None:
            with h5py.File(d / f"{stem}{suffix}", "w") as f:
                f["order"] = np.asarray(rows)


def test_split_errors(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Dog&a&good&0&2\nDog&b&good&1&3\n")
    _splits(tmp_path, [0, 7], [1], [])
    with pytest.raises(AnnotationError, match=r"train_order.h5: row indices \[7\] outside 0..1"):
        load_ave(p)
    _splits(tmp_path, [0], [0], [1])
    with pytest.raises(AnnotationError, match="val_order.h5: order: row 0 is also in subset 'train'"):
        load_ave(p)
    _splits(tmp_path, [0.5], [1], [])
    with pytest.raises(AnnotationError, match="train_order.h5: order: expected integer row indices"):
        load_ave(p)
    _splits(tmp_path, [0], [1], [])
    (tmp_path / "val_order.h5").unlink()
    with pytest.raises(AnnotationError, match="val_order.h5: file: missing split file"):
        load_ave(p)
    with pytest.raises(AnnotationError, match="train_order_match.h5: file: missing split file"):
        load_ave(p, split="match")
    with pytest.raises(ValueError, match="split must be one of"):
        load_ave(p, split="cml")
    other = tmp_path / "splits"
    other.mkdir()
    _splits(other, [1], [], [0])
    assert [s.subset for s in load_ave(p, split_dir=other)] == ["test", "train"]
