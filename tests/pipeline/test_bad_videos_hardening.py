"""Issue 14 bad videos and rows: an unsupported codec is named, an over-reported frame count or
duration is the video's fault (a DecodeError, never a crash, never retryable), non-finite rows
are a recorded failure and never written."""

from __future__ import annotations

import json
import struct

import av
import numpy as np
import pytest

from avel.datasets.store import FeatureStore, StoreWriter
from avel.pipeline.decode import DecodeError, decode_video, decode_with_timeout
from avel.pipeline.engine import build_stream_extractors, run_local
from avel.pipeline.jobs import VideoJob
from tests.pipeline.test_bad_inputs import _mp4


def _stts(src, dst, *, count=None, delta=None):
    """Copy ``src`` with its first time-to-sample entry replaced (frames ``count``, ``delta`` ticks each)."""
    data = bytearray(src.read_bytes())
    i = data.find(b"stts")
    c0, d0 = struct.unpack(">II", data[i + 12 : i + 20])
    data[i + 12 : i + 20] = struct.pack(">II", c0 if count is None else count, d0 if delta is None else delta)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("hardening_videos")
    _mp4(d / "good.mp4", seconds=2.0)
    _stts(d / "good.mp4", d / "many_frames.mp4", count=10**8)
    _stts(d / "good.mp4", d / "long_frames.mp4", delta=2**31 - 1)
    _stts(d / "good.mp4", d / "billions.mp4", count=2**31, delta=2**30)  # decord itself aborts on this one
    return d


def _av1(path):
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("no AV1 encoder in this PyAV build")
    c = av.open(str(path), "w")
    s = c.add_stream("libsvtav1", rate=25)
    s.width = s.height = 64
    s.pix_fmt = "yuv420p"
    s.options = {"preset": "12"}
    for i in range(10):
        for p in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * i, np.uint8), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def test_unsupported_codec_is_named(tmp_path):
    path = _av1(tmp_path / "av1.mp4")
    with pytest.raises(
        DecodeError,
        match=r"av1.mp4: video codec 'av1' \(tag 'av01'\) is not supported by the "
        r"decoder \(decord 0.6.0\); re-encode",
    ):
        decode_video(path, fps=[4], sample_rate=None)


@pytest.mark.parametrize(
    "name, match",
    [
        ("many_frames", "container reports 100000000 frames"),
        ("long_frames", "lasting 167772 s"),
        ("billions", "container reports 2147483648 frames"),
    ],
)
def test_over_reported_frames_are_the_videos_fault(videos, name, match):
    with pytest.raises(DecodeError, match=match):
        decode_video(videos / f"{name}.mp4", fps=[4], sample_rate=None)
    with pytest.raises(DecodeError, match=match):  # in the guarded child: a clean error, not a dead worker
        decode_with_timeout(videos / f"{name}.mp4", timeout_s=60, fps=[4], sample_rate=None)


def test_corrupt_headers_are_recorded_not_retryable(videos, tmp_path):
    extractors = build_stream_extractors(["vgg19"], random_weights=True, preset="tiny")
    writer = StoreWriter(tmp_path / "s", dataset="folder", streams={se.stream: se.spec() for se in extractors})
    jobs = [VideoJob(n, videos / f"{n}.mp4") for n in ("good", "many_frames", "long_frames", "billions")]
    report = run_local(jobs, extractors, writer, batch_size=4, decode_timeout_s=60)
    assert report.videos_ok == 1 and report.videos_failed == 3
    records = [json.loads(line) for line in (tmp_path / "s" / "errors.jsonl").read_text().splitlines()]
    assert {r["video_id"] for r in records} == {"many_frames", "long_frames", "billions"}
    assert all(r["error_type"] == "DecodeError" and not r.get("retryable") for r in records), records


def test_non_finite_rows_are_a_recorded_failure_never_written(videos, tmp_path, monkeypatch):
    extractors = build_stream_extractors(["vgg19", "vggish"], random_weights=True, preset="tiny")
    vggish = extractors[1].extractor
    real = vggish.extract

    def poisoned(windows):
        rows = real(windows)
        rows[0, 0] = float("nan")
        return rows

    monkeypatch.setattr(vggish, "extract", poisoned)
    writer = StoreWriter(tmp_path / "s", dataset="folder", streams={se.stream: se.spec() for se in extractors})
    report = run_local([VideoJob("good", videos / "good.mp4")], extractors, writer, batch_size=4, decode_timeout_s=60)
    assert report.videos_failed == 1
    store = FeatureStore(tmp_path / "s")
    assert store.video_streams("good") == ["vgg19"]  # the finite stream is kept
    (rec,) = store.errors()
    assert rec["error_type"] == "NonFiniteRowsError" and rec["stage"] == "extract:vggish"
    assert "good.mp4" in rec["message"] and "stream 'vggish'" in rec["message"] and "NaN or Inf" in rec["message"]
    assert not rec.get("retryable")
    assert np.isfinite(store.read("good", "vgg19")).all()


def test_a_failed_video_is_released_at_once_a_written_one_held_until_commit(videos, tmp_path):
    """The local runner settles each claim when its video finishes: a video that failed is free
    for another writer at once (not at close), a written one stays claimed until committed."""
    from avel.datasets.store_log import claim_path

    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    extractors = build_stream_extractors(["vgg19"], random_weights=True, preset="tiny")
    root = tmp_path / "s"
    writer = StoreWriter(root, dataset="folder", streams={se.stream: se.spec() for se in extractors})
    jobs = [VideoJob("broken", tmp_path / "broken.mp4"), VideoJob("good", videos / "good.mp4")]
    held = []

    def progress(report):
        held.append({j.video_id: claim_path(root, j.video_id).exists() for j in jobs})

    report = run_local(jobs, extractors, writer, batch_size=4, decode_timeout_s=60, progress=progress)
    assert (report.videos_ok, report.videos_failed) == (1, 1)
    assert held == [{"broken": False, "good": True}, {"broken": False, "good": True}], held
    writer.close()
    assert not claim_path(root, "good").exists()
    assert FeatureStore(root).videos() == ["good"]
