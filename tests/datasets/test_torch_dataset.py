"""Torch datasets over a store: alignment rule, cropping, padding and masks, AVE rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avel.datasets.annotations import AnnotationSet, Sample, Segment
from avel.datasets.sampling import AVE_VGG19, AVE_VGGISH, UNAV100_I3D, UNAV100_ONEPEACE_AUDIO, UNAV100_VGGISH
from avel.datasets.store import AlignmentError, FeatureStore, StoreError, StoreWriter, StreamSpec, VideoMeta
from avel.datasets.torch_dataset import AveFeatureDataset, DenseFeatureDataset, collate_dense

SPECS = {
    "rgb": StreamSpec("i3d", UNAV100_I3D, (3,)),
    "flow": StreamSpec("i3d", UNAV100_I3D, (2,)),
    "vggish": StreamSpec("vggish", UNAV100_VGGISH, (4,)),
    "op_audio": StreamSpec("onepeace_audio", UNAV100_ONEPEACE_AUDIO, (4,)),
}


def _annset(lengths: dict[str, int]) -> AnnotationSet:
    samples = []
    for vid, n in lengths.items():
        dur = (n - 1) * 0.32 + 0.96
        samples.append(Sample(vid, vid, dur, "train", [Segment(0.5, 2.42, "dog", 1), Segment(1.0, 1.64, "cat", 0)]))
    return AnnotationSet("unav100", ["cat", "dog"], samples)


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "s"
    with StoreWriter(root, dataset="unav100", streams=SPECS) as w:
        w.add(
            "same",
            {
                "rgb": np.ones((20, 3)),
                "flow": np.full((20, 2), 2.0),
                "vggish": np.full((20, 4), 3.0),
                "op_audio": np.ones((5, 4)),
            },
            meta=VideoMeta(duration_s=7.04),
        )
        w.add(
            "plus1",
            {
                "rgb": np.ones((21, 3)),
                "flow": np.ones((21, 2)),
                "vggish": np.ones((20, 4)),
                "op_audio": np.ones((5, 4)),
            },
        )
        w.add(
            "plus3",
            {
                "rgb": np.ones((23, 3)),
                "flow": np.ones((23, 2)),
                "vggish": np.ones((20, 4)),
                "op_audio": np.ones((5, 4)),
            },
        )
    return FeatureStore(root)


def test_alignment_rule_trims_one_and_rejects_more(store):
    ann = _annset({"same": 20, "plus1": 21})
    ds = DenseFeatureDataset(store, ann, subset="train", visual_streams=["rgb", "flow"], audio_streams=["vggish"])
    assert ds.visual_dim == 5 and ds.audio_dim == 4
    item = ds[0]
    assert item["visual"].shape == (20, 5) and item["audio"].shape == (20, 4)
    torch.testing.assert_close(item["visual"][0], torch.tensor([1.0, 1, 1, 2, 2]))
    item = ds[1]
    assert item["visual"].shape == (20, 5)
    assert ds.alignment_stats.trimmed_videos == 1 and ds.alignment_stats.trimmed_rows == 2
    bad = DenseFeatureDataset(
        store, _annset({"plus3": 23}), subset="train", visual_streams=["rgb"], audio_streams=["vggish"]
    )
    with pytest.raises(AlignmentError, match="video 'plus3'.*differ by more than 1"):
        bad[0]


def test_different_grids_are_rejected(store):
    with pytest.raises(AlignmentError, match="different time grids"):
        DenseFeatureDataset(
            store, _annset({"same": 20}), subset="train", visual_streams=["rgb"], audio_streams=["op_audio"]
        )


def test_segments_in_grid_units_and_missing_videos(store):
    ds = DenseFeatureDataset(
        store, _annset({"same": 20}), subset="train", visual_streams=["rgb"], audio_streams=["vggish"]
    )
    seg = ds[0]["segments"]
    # grid = (t - 0.48) / 0.32
    torch.testing.assert_close(seg[0], torch.tensor([(0.5 - 0.48) / 0.32, (2.42 - 0.48) / 0.32]))
    assert ds[0]["labels"].tolist() == [1, 0]
    with pytest.raises(StoreError, match="lack streams"):
        DenseFeatureDataset(
            store, _annset({"same": 20, "absent": 9}), subset="train", visual_streams=["rgb"], audio_streams=["vggish"]
        )
    ds = DenseFeatureDataset(
        store,
        _annset({"same": 20, "absent": 9}),
        subset="train",
        visual_streams=["rgb"],
        audio_streams=["vggish"],
        skip_missing=True,
    )
    assert len(ds) == 1 and ds.missing_videos == ["absent"]


def test_training_crop_keeps_events_and_limits_length(store):
    ds = DenseFeatureDataset(
        store,
        _annset({"same": 20}),
        subset="train",
        visual_streams=["rgb"],
        audio_streams=["vggish"],
        max_seq_len=8,
        training=True,
        seed=0,
    )
    offsets = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        item = ds[0]
        offsets.add(item["offset_rows"])
        t = item["visual"].shape[0]
        assert t == 8
        assert len(item["segments"]) >= 1
        assert item["segments"].min() >= 0 and item["segments"].max() <= t
        assert 0 <= item["offset_rows"] <= 12
    assert len(offsets) > 1  # crops vary across epochs
    ds.set_epoch(3)
    a = ds[0]["offset_rows"]
    assert all(ds[0]["offset_rows"] == a for _ in range(3))  # ... and are reproducible within one


def test_collate_pads_with_mask():
    items = [
        {
            "sample_id": "a",
            "video_id": "a",
            "visual": torch.ones(5, 2),
            "audio": torch.ones(5, 3),
            "segments": torch.zeros(1, 2),
            "labels": torch.zeros(1, dtype=torch.long),
            "duration_s": 2.0,
            "offset_rows": 0,
            "step_s": 0.32,
            "window_s": 0.96,
        },
        {
            "sample_id": "b",
            "video_id": "b",
            "visual": torch.ones(40, 2),
            "audio": torch.ones(40, 3),
            "segments": torch.zeros(0, 2),
            "labels": torch.zeros(0, dtype=torch.long),
            "duration_s": 13.0,
            "offset_rows": 0,
            "step_s": 0.32,
            "window_s": 0.96,
        },
    ]
    batch = collate_dense(items, min_len=16, pad_multiple=32)
    assert batch["visual"].shape == (2, 64, 2) and batch["audio"].shape == (2, 64, 3)
    assert batch["mask"].sum(1).tolist() == [5, 40]
    assert batch["visual"][0, 5:].abs().sum() == 0
    assert [len(s) for s in batch["segments"]] == [1, 0]


def test_ave_dataset_rows_labels_and_background(tmp_path):
    root = tmp_path / "ave"
    specs = {"vgg19": StreamSpec("vgg19", AVE_VGG19, (7, 7, 8)), "vggish": StreamSpec("vggish", AVE_VGGISH, (4,))}
    with StoreWriter(root, dataset="ave", streams=specs) as w:
        w.add("yt1", {"vgg19": np.ones((10, 7, 7, 8)), "vggish": np.ones((10, 4))})
        w.add("yt2", {"vgg19": np.zeros((10, 7, 7, 8)), "vggish": np.zeros((10, 4))})
    samples = [
        Sample("row-0000", "yt1", 10.0, "train", [Segment(2, 5, "bell", 0)], {"row": 0}),
        Sample("row-0001", "yt1", 10.0, "train", [Segment(0, 10, "dog", 1)], {"row": 1}),
        Sample("row-0002", "yt2", 10.0, "test", [Segment(9, 10, "dog", 1)], {"row": 2}),
    ]
    ann = AnnotationSet("ave", ["bell", "dog"], samples, background_id=2)
    bg_audio = np.full((1, 10, 4), 5.0)
    bg_visual = np.full((1, 10, 7, 7, 8), 6.0)
    ds = AveFeatureDataset(root, ann, subset="train", extra_background=(bg_audio, bg_visual))
    assert len(ds) == 3
    assert ds[0]["segment_labels"].tolist() == [2, 2, 0, 0, 0, 2, 2, 2, 2, 2]
    assert ds[0]["video_labels"].tolist() == [1, 0, 1]
    assert ds[1]["segment_labels"].tolist() == [1] * 10
    assert ds[1]["video_labels"].tolist() == [0, 1, 0]
    assert ds[2]["is_background_video"] and ds[2]["segment_labels"].tolist() == [2] * 10
    batch = AveFeatureDataset.collate([ds[0], ds[2]])
    assert batch["visual"].shape == (2, 10, 7, 7, 8) and batch["audio"].shape == (2, 10, 4)
    assert batch["is_background_video"].tolist() == [False, True]


def test_standardization_uses_training_statistics(tmp_path):
    from avel.datasets.torch_dataset import stream_statistics

    root = tmp_path / "s"
    rng = np.random.default_rng(0)
    with StoreWriter(root, dataset="unav100", streams=SPECS) as w:
        for i in range(4):
            w.add(f"v{i}", {"rgb": 5 + 0.01 * rng.standard_normal((20, 3)), "vggish": rng.standard_normal((20, 4))})
    st = FeatureStore(root)
    stats = stream_statistics(st, ["v0", "v1", "v2"], ["rgb", "vggish"])
    assert stats["rgb"][0] == pytest.approx(5.0, abs=0.01) and stats["rgb"][1] == pytest.approx(0.01, rel=0.2)
    ann = _annset({f"v{i}": 20 for i in range(4)})
    ds = DenseFeatureDataset(st, ann, subset="train", visual_streams=["rgb"], audio_streams=["vggish"], stats=stats)
    v = torch.cat([ds[i]["visual"] for i in range(3)])
    assert v.mean().abs() < 0.05 and (v.std() - 1).abs() < 0.05
    raw = DenseFeatureDataset(st, ann, subset="train", visual_streams=["rgb"], audio_streams=["vggish"])
    assert raw[0]["visual"].mean() > 4.9
