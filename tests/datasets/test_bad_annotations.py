"""Bad annotation input (issue 14): BOM, the published AVE classes, the empty `0&0` event,
path-traversal ids, one id under two extensions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avel.datasets.annotations import AnnotationError, AnnotationSet, Sample, Segment
from avel.datasets.ave import AVE_CLASSES, BACKGROUND_ID, load_ave
from avel.datasets.sampling import AVE_VGG19, AVE_VGGISH
from avel.datasets.store import StoreWriter, StreamSpec
from avel.datasets.torch_dataset import AveFeatureDataset
from avel.datasets.unav100 import find_duplicate_video_files, write_unav100
from avel.datasets.validate import validate
from avel.pipeline.jobs import dataset_files, plan_jobs

AVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ave"
needs_real = pytest.mark.skipif(
    not (AVE / "Annotations.txt").exists(), reason="shared/data is not next to this checkout"
)


def test_published_classes_are_fixed_whatever_rows_a_file_holds(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Mandolin&a&good&0&2\nBark&b&good&1&3\n")
    ann = load_ave(p)
    assert ann.classes == list(AVE_CLASSES) and ann.background_id == BACKGROUND_ID == 28
    assert [s.segments[0].label_id for s in ann] == [27, 2]


def test_bom_is_tolerated(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_bytes("\ufeffCategory&VideoID&Quality&StartTime&EndTime\nChurch bell&a&good&0&2\n".encode())
    ann = load_ave(p)
    assert len(ann) == 1 and ann.samples[0].segments[0].label_id == 0 and ann.num_classes == 28
    p.write_bytes("\ufeffChurch bell&a&good&0&2\nBark&b&good&1&3\n".encode())
    ann = load_ave(p)
    assert [s.segments[0].label for s in ann] == ["Church bell", "Bark"] and ann.background_id == 28
    assert validate("ave", p) == []


def test_unknown_category_is_an_error_naming_file_and_line(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Church bell&a&good&0&2\nChurch bel&b&good&1&3\nBark&c&good&1&3\n")
    with pytest.raises(
        AnnotationError,
        match=r"Annotations.txt: line 2: category 'Church bel' is not one of "
        r"the 28 AVE classes",
    ) as err:
        load_ave(p)
    assert str(err.value).startswith(str(p))
    assert [(q.location, q.message) for q in validate("ave", p)] == [
        ("line 2", "category 'Church bel' is not one of the 28 AVE classes")
    ]


def test_custom_dataset_numbers_its_own_classes(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("dog&a&good&0&2\nbell&b&good&1&3\n")
    ann = load_ave(p)
    assert ann.classes == ["dog", "bell"] and ann.background_id == 2


@needs_real
def test_real_file_has_the_published_classes():
    ann = load_ave(AVE / "Annotations.txt")
    assert ann.classes == list(AVE_CLASSES) and ann.background_id == 28


def test_empty_event_row_is_background_segments_with_the_video_label(tmp_path):
    """AVE line 27 (`Church bell&VWi2ENBuTbw&good&0&0`): kept; all segments background (as
    labels_closs.h5), the video label is its category (as mil_labels.h5)."""
    (tmp_path / "Annotations.txt").write_text("Church bell&v0&good&0&0\nBark&v1&good&2&5\n")
    specs = {"vgg19": StreamSpec("vgg19", AVE_VGG19, (7, 7, 4)), "vggish": StreamSpec("vggish", AVE_VGGISH, (8,))}
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "store", dataset="ave", streams=specs) as w:
        for v in ("v0", "v1"):
            w.add(v, {"vgg19": rng.random((10, 7, 7, 4)), "vggish": rng.random((10, 8))})
    ann = load_ave(tmp_path / "Annotations.txt")
    ds = AveFeatureDataset(tmp_path / "store", ann, subset=None)
    empty, normal = ds[0], ds[1]
    assert empty["segment_labels"].tolist() == [28] * 10
    assert np.flatnonzero(empty["video_labels"].numpy()).tolist() == [0, 28]
    assert normal["segment_labels"].tolist() == [28, 28, 2, 2, 2, 28, 28, 28, 28, 28]
    assert np.flatnonzero(normal["video_labels"].numpy()).tolist() == [2, 28]


@pytest.mark.parametrize("vid", ["../../etc/passwd", "..", "/abs/video", "a\\..\\b"])
def test_validate_catches_path_traversal_ids(tmp_path, vid):
    p = tmp_path / "Annotations.txt"
    p.write_text(f"Church bell&{vid}&good&0&2\n")
    probs = validate("ave", p)
    assert [q.location for q in probs] == ["line 1"] and "cannot be a file name" in probs[0].message, probs
    u = tmp_path / "ann.json"
    u.write_text(
        json.dumps({"version": "unav100", "database": {vid: {"duration": 10, "subset": "train", "annotations": []}}})
    )
    probs = validate("unav100", u)
    assert [q.location for q in probs] == [f"database/{vid}"] and "cannot be a file name" in probs[0].message, probs


def test_same_id_under_two_extensions_is_listed(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "a.mkv", "b.mp4"):
        (videos / name).write_bytes(b"x")
    assert find_duplicate_video_files(["a", "b"], videos) == {"a": [videos / "a.mp4", videos / "a.mkv"]}
    samples = [Sample(v, v, 5.0, "train", [Segment(0, 1, "x", 0)]) for v in ("a", "b")]
    write_unav100(AnnotationSet("unav100", ["x"], samples), tmp_path / "ann.json")
    probs = validate("unav100", tmp_path / "ann.json", video_dir=videos)
    assert [(q.location, q.message) for q in probs] == [
        ("database/a", "several files for one id: ['a.mp4', 'a.mkv'] (keep one)")
    ]
    files, missing, duplicates = dataset_files("unav100", videos_dir=videos, annotations=tmp_path / "ann.json")
    assert set(files) == {"b"} and not missing and set(duplicates) == {"a"}
    plan = plan_jobs(files, store_root=tmp_path / "store", streams=["vggish"], duplicates=duplicates)
    assert [r["video_id"] for r in plan.rejected] == ["a"] and "a.mkv" in plan.rejected[0]["message"]
