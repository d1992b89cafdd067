"""Bad inputs never stop a run: each gives a recorded error naming the video, or correct output."""
from __future__ import annotations

import fractions
import json

import av
import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.annotations import AnnotationSet, Sample
from avel.datasets.store import FeatureStore
from avel.datasets.unav100 import write_unav100
from avel.pipeline.jobs import plan_jobs, unsafe_id_reason


def _mp4(path, *, seconds, video=True, audio=True, fps=25, size=64):
    c = av.open(str(path), "w")
    if video:
        vs = c.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
    if audio:
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
    if video:
        for i in range(max(1, int(seconds * fps))):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.full((size, size, 3), i % 255, np.uint8), format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    if audio:
        x = (0.3 * np.sin(np.arange(int(seconds * 16000)) * 0.2)).astype(np.float32)
        for k in range(0, len(x), 1024):
            fr = av.AudioFrame.from_ndarray(x[None, k:k + 1024], format="fltp", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = 16000, k, fractions.Fraction(1, 16000)
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    c.close()


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    _mp4(d / "good.mp4", seconds=2.5)
    _mp4(d / "short.mp4", seconds=0.3)  # shorter than one window of either extractor
    _mp4(d / "no_audio.mp4", seconds=2.5, audio=False)
    _mp4(d / "audio_only.mp4", seconds=2.5, video=False)
    _mp4(d / "-dash ünï.mp4", seconds=2.5)
    full = (d / "good.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(full[: len(full) // 3])
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("hello\n" * 50)
    _mp4(d / "twice.mp4", seconds=1.0)
    _mp4(d / "twice.mkv", seconds=1.0)  # two files, one id
    return d


def test_every_bad_input_is_recorded_and_the_rest_extracted(bad_dir, tmp_path):
    res = CliRunner().invoke(cli, ["extract", "--dataset", "folder", "--videos", str(bad_dir), "--extractors",
                                   "vgg19,vggish", "--preset", "tiny", "--random-weights", "--out",
                                   str(tmp_path / "s"), "--json"])
    assert res.exit_code == 1
    st = FeatureStore(tmp_path / "s")
    errors = {}
    for e in st.errors():
        errors.setdefault(e["video_id"], []).append(e)
    # correct output
    assert st.num_rows("good", "vgg19") == 2 and st.num_rows("good", "vggish") == 2
    assert st.num_rows("short", "vgg19") == 1 and st.is_padded("short", "vgg19")
    assert st.num_rows("short", "vggish") == 1 and st.is_padded("short", "vggish")
    assert st.num_rows("-dash ünï", "vgg19") == 2
    # visual streams still extracted without audio; the audio failure is recorded
    assert st.video_streams("no_audio") == ["vgg19"]
    assert errors["no_audio"][0]["stage"] == "extract:vggish" and "no usable audio" in errors["no_audio"][0]["message"]
    # clear recorded errors
    for vid in ("truncated", "zero", "text", "audio_only"):
        assert vid in errors, vid
        assert errors[vid][0]["path"].endswith(f"{vid}.mp4")
        assert vid not in st
    assert "no decodable video stream" in errors["audio_only"][0]["message"] or \
        "video stream" in errors["audio_only"][0]["message"]
    assert errors["twice"][0]["error_type"] == "DuplicateVideoId" and "twice" not in st
    assert "twice.mkv" in errors["twice"][0]["message"] and "twice.mp4" in errors["twice"][0]["message"]
    assert set(errors) == {"no_audio", "truncated", "zero", "text", "audio_only", "twice"}


def test_unsafe_and_missing_ids_are_rejected_not_dropped(tmp_path):
    assert unsafe_id_reason("../x") and unsafe_id_reason("a/../../b") and unsafe_id_reason("/abs")
    assert unsafe_id_reason("tab\there") and unsafe_id_reason("")
    assert unsafe_id_reason("-leading dash ünï") is None and unsafe_id_reason("sub/dir/name") is None
    plan = plan_jobs({"../x": tmp_path / "x.mp4", "ok": tmp_path / "ok.mp4"}, store_root=tmp_path / "s",
                     streams=["vgg19"], missing=["gone"])
    assert [j.video_id for j in plan.todo] == ["ok"]
    rejected = {r["video_id"]: r for r in plan.rejected}
    assert rejected["../x"]["error_type"] == "UnsafeVideoId" and "escape" in rejected["../x"]["message"]
    assert rejected["gone"]["error_type"] == "MissingVideoFile"


def test_unav100_ids_escaping_the_store_are_recorded(bad_dir, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    (vids / "good.mp4").write_bytes((bad_dir / "good.mp4").read_bytes())
    samples = [Sample(v, v, 2.5, "train", []) for v in ("good", "../good", "absent")]
    write_unav100(AnnotationSet("unav100", [], samples), tmp_path / "ann.json")
    res = CliRunner().invoke(cli, ["extract", "--dataset", "unav100", "--videos", str(vids), "--annotations",
                                   str(tmp_path / "ann.json"), "--extractors", "vggish", "--preset", "tiny",
                                   "--random-weights", "--out", str(tmp_path / "s"), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.stdout.splitlines()[0])
    assert report["videos_ok"] == 1 and report["videos_failed"] == 2
    st = FeatureStore(tmp_path / "s")
    assert st.videos() == ["good"]
    kinds = {e["video_id"]: e["error_type"] for e in st.errors()}
    assert kinds == {"../good": "UnsafeVideoId", "absent": "MissingVideoFile"}
