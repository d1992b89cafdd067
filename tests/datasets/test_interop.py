"""Import/export of the published UnAV-100 .npy and AVE h5 feature formats."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from avel.datasets.annotations import AnnotationSet, Sample, Segment
from avel.datasets.interop import export_ave_h5, export_unav_npy, import_ave_h5, import_unav_npy
from avel.datasets.store import FeatureStore, StoreError


def _npy_folder(path, ids, rng):
    path.mkdir()
    data = {}
    for k, vid in enumerate(ids):
        t = 5 + k
        for suffix, d in (("_rgb", 1024), ("_flow", 1024), ("_vggish", 128)):
            a = rng.standard_normal((t, d)).astype(np.float32)
            np.save(path / f"{vid}{suffix}.npy", a)
            data[(vid, suffix)] = a
    return data


def test_unav_npy_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["-abc", "_x y", "plain"]
    data = _npy_folder(tmp_path / "feats", ids, rng)
    (tmp_path / "feats" / "README.txt").write_text("ignored")
    report = import_unav_npy(tmp_path / "feats", tmp_path / "store")
    assert report.videos == 3 and report.problems == []
    st = FeatureStore(tmp_path / "store")
    assert sorted(st.streams) == ["i3d_flow", "i3d_rgb", "vggish"]
    assert st.streams["vggish"].plan.hop_s == pytest.approx(0.32)
    assert st.streams["i3d_rgb"].plan.fps == 25 and st.streams["i3d_rgb"].weights_sha256 == "unknown"
    np.testing.assert_array_equal(st["-abc"]["i3d_flow"], data[("-abc", "_flow")])
    n = export_unav_npy(st, tmp_path / "out")
    assert n == 9
    for (vid, suffix), a in data.items():
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{vid}{suffix}.npy"), a)
    # Re-import is a no-op (resume), not a duplicate.
    again = import_unav_npy(tmp_path / "feats", tmp_path / "store")
    assert again.videos == 0 and again.skipped_existing == 3


def test_unav_npy_reports_bad_files_and_continues(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    np.save(folder / "good_vggish.npy", np.ones((4, 128), np.float32))
    np.save(folder / "wrongdim_vggish.npy", np.ones((4, 64), np.float32))
    (folder / "garbage_vggish.npy").write_bytes(b"not numpy")
    report = import_unav_npy(folder, tmp_path / "store")
    assert report.videos == 1
    assert any("wrongdim_vggish.npy: shape (4, 64), expected T x 128" in p for p in report.problems)
    assert any("garbage_vggish.npy: cannot read" in p for p in report.problems)
    with pytest.raises(StoreError, match="no files named"):
        (tmp_path / "empty").mkdir()
        import_unav_npy(tmp_path / "empty", tmp_path / "store2")


def test_unav_npy_suffix_prefers_longest_match(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    np.save(folder / "v1_one_peace_video_finetune.npy", np.ones((3, 1536), np.float32))
    np.save(folder / "v1_one_peace_audio.npy", np.ones((3, 1536), np.float32))
    import_unav_npy(folder, tmp_path / "store")
    st = FeatureStore(tmp_path / "store")
    assert st.videos() == ["v1"] and sorted(st.video_streams("v1")) == ["onepeace_audio", "onepeace_video"]
    assert st.streams["onepeace_video"].plan.fps == 16


def _ave(tmp_path, rng):
    ids = ["yt_a", "yt_b", "yt_a", "yt_c"]  # row 2 repeats video yt_a, as in the real file
    samples = [
        Sample(f"row-{i:04d}", v, 10.0, "train", [Segment(0, 3, "bell", 0)], {"row": i}) for i, v in enumerate(ids)
    ]
    ann = AnnotationSet("ave", ["bell"], samples, background_id=1)
    visual = rng.standard_normal((4, 10, 7, 7, 512))
    visual[2] = visual[0]
    audio = rng.standard_normal((4, 10, 128)).astype(np.float32)
    audio[2] = audio[0]
    with h5py.File(tmp_path / "visual_feature.h5", "w") as f:
        f["avadataset"] = visual
    with h5py.File(tmp_path / "audio_feature.h5", "w") as f:
        f["avadataset"] = audio
    return ann, visual, audio


def test_ave_h5_round_trip_exact_in_float64(tmp_path):
    ann, visual, audio = _ave(tmp_path, np.random.default_rng(1))
    report = import_ave_h5(
        ann,
        tmp_path / "store",
        visual_h5=tmp_path / "visual_feature.h5",
        audio_h5=tmp_path / "audio_feature.h5",
        dtype="float64",
    )
    assert report.videos == 3 and report.problems == []
    st = FeatureStore(tmp_path / "store")
    assert st.videos() == ["yt_a", "yt_b", "yt_c"]
    assert st.streams["vgg19"].feature_shape == (7, 7, 512)
    assert st.streams["vgg19"].plan.window_frames == 16
    paths = export_ave_h5(st, ann, tmp_path / "out")
    with h5py.File(paths[0]) as f:
        assert f["avadataset"].dtype == np.float64
        np.testing.assert_array_equal(f["avadataset"][()], visual)
    with h5py.File(paths[1]) as f:
        np.testing.assert_array_equal(f["avadataset"][()], audio)


def test_ave_h5_detects_inconsistent_duplicate_rows_and_bad_shapes(tmp_path):
    ann, visual, audio = _ave(tmp_path, np.random.default_rng(2))
    with h5py.File(tmp_path / "audio_feature.h5", "w") as f:
        bad = audio.copy()
        bad[2] += 1
        f["avadataset"] = bad
    report = import_ave_h5(ann, tmp_path / "store", audio_h5=tmp_path / "audio_feature.h5")
    assert any("rows 0 and 2 (video 'yt_a') differ" in p for p in report.problems)
    with h5py.File(tmp_path / "short.h5", "w") as f:
        f["avadataset"] = audio[:3]
    with pytest.raises(StoreError, match="short.h5: 3 rows, the annotations have 4"):
        import_ave_h5(ann, tmp_path / "store3", audio_h5=tmp_path / "short.h5")
    with h5py.File(tmp_path / "wrongkey.h5", "w") as f:
        f["features"] = audio
    with pytest.raises(StoreError, match="no dataset 'avadataset'"):
        import_ave_h5(ann, tmp_path / "store4", audio_h5=tmp_path / "wrongkey.h5")
