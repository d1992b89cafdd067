"""Bad inputs never stop a run: each gives a recorded error naming the video, or correct output.

Every input is generated here (PyAV writes the videos); frame ``i`` of a generated video has
the grey level ``_grey(i)``, so a test can tell which native frame the decoder picked.
"""

from __future__ import annotations

import fractions
import json
import os
import time

import av
import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.annotations import AnnotationSet, Sample
from avel.datasets.store import FeatureStore
from avel.datasets.unav100 import write_unav100
from avel.pipeline.decode import DecodeError, DecodeTimeout, decode_video, decode_with_timeout
from avel.pipeline.jobs import plan_jobs, unsafe_id_reason


def _grey(i):
    """Grey level of frame ``i``: frames up to 6 apart differ by >= 34 levels."""
    return (np.asarray(i) * 37) % 256


TOL = 8  # grey levels lossy coding may move a flat frame (4 seen)


def _mp4(
    path,
    *,
    seconds,
    video=True,
    audio=True,
    fps=25,
    size=64,
    width=None,
    height=None,
    pts_s=None,
    rotation=None,
    pix_fmt="yuv420p",
    image=None,
    audio_codec="aac",
):
    """Write a test video.

    Args:
        seconds: length (frames: ``seconds * fps``; audio: ``seconds`` of a sine).
        fps: nominal frame rate.
        size / width / height: frame size (``width``/``height`` override the square ``size``).
        pts_s: presentation time of each frame (variable frame rate; overrides ``seconds * fps``).
        rotation: display-matrix rotation in degrees, counter-clockwise (as phones record it).
        pix_fmt: ``yuv444p`` allows odd sizes down to 1 x 1.
        image: ``image(i) -> uint8 H x W x 3``; default a flat frame of grey ``_grey(i)``.
        audio_codec: ``aac`` (mp4) or ``flac`` (mkv; fast to encode for long tests).
    """
    w, h = width or size, height or size
    c = av.open(str(path), "w")
    if video:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.options = {"preset": "ultrafast"}
        if rotation is not None:
            vs.set_display_rotation(rotation)
        if pts_s is not None:
            vs.codec_context.time_base = vs.time_base = fractions.Fraction(1, 1000)
    if audio:
        a = c.add_stream(audio_codec, rate=16000)
        a.layout = "mono"
    if video:
        n = len(pts_s) if pts_s is not None else max(1, int(seconds * fps))
        cache = {}
        for i in range(n):
            if image is not None:
                frame = av.VideoFrame.from_ndarray(image(i), format="rgb24")
            else:  # flat frames: one per grey level, reused
                g = int(_grey(i))
                if g not in cache:
                    cache[g] = np.full((h, w, 3), g, np.uint8)
                frame = av.VideoFrame.from_ndarray(cache[g], format="rgb24")
            if pts_s is not None:
                frame.pts, frame.time_base = int(round(pts_s[i] * 1000)), fractions.Fraction(1, 1000)
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    if audio:
        x = (0.3 * np.sin(np.arange(int(seconds * 16000)) * 0.2)).astype(np.float32)
        fmt, step = ("fltp", 1024) if audio_codec == "aac" else ("s16", 4096)
        if fmt == "s16":
            x = (x * 32767).astype(np.int16)
        for k in range(0, len(x), step):
            fr = av.AudioFrame.from_ndarray(x[None, k : k + step], format=fmt, layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = 16000, k, fractions.Fraction(1, 16000)
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    c.close()


# A variable-frame-rate timeline: bursts and gaps (seconds), ending at 2.3 s.
VFR_PTS_S = [0.0, 0.04, 0.08, 0.4, 0.44, 1.0, 1.04, 1.08, 1.5, 1.9, 2.3]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    _mp4(d / "good.mp4", seconds=2.5)
    _mp4(d / "short.mp4", seconds=0.3)  # shorter than one window of either extractor
    _mp4(d / "no_audio.mp4", seconds=2.5, audio=False)
    _mp4(d / "audio_only.mp4", seconds=2.5, video=False)
    _mp4(d / "-dash ünï.mp4", seconds=2.5)
    _mp4(d / "vfr.mp4", seconds=2.5, pts_s=VFR_PTS_S)
    _mp4(d / "portrait.mp4", seconds=2.5, width=96, height=64, rotation=90)  # displayed 64 wide, 96 high
    _mp4(d / "one_px.mp4", seconds=2.5, size=1, pix_fmt="yuv444p")
    _mp4(d / "uhd.mp4", seconds=2.0, fps=4, width=3840, height=2160)  # 8 frames of 4K
    full = (d / "good.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(full[: len(full) // 3])
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("hello\n" * 50)
    _mp4(d / "twice.mp4", seconds=1.0)
    _mp4(d / "twice.mkv", seconds=1.0)  # two files, one id
    # unreadable: a dangling symlink, a symlink loop, a FIFO (opening it would block forever)
    os.symlink(d / "gone" / "nothing.mp4", d / "dangling.mp4")
    os.symlink("loop.mp4", d / "loop.mp4")
    os.mkfifo(d / "fifo.mp4")
    return d


def test_every_bad_input_is_recorded_and_the_rest_extracted(bad_dir, tmp_path):
    t0 = time.perf_counter()
    res = CliRunner().invoke(
        cli,
        [
            "extract",
            "--dataset",
            "folder",
            "--videos",
            str(bad_dir),
            "--extractors",
            "vgg19,vggish",
            "--preset",
            "tiny",
            "--random-weights",
            "--out",
            str(tmp_path / "s"),
            "--json",
            "--decode-timeout-s",
            "60",
        ],
    )
    assert res.exit_code == 1
    assert time.perf_counter() - t0 < 60  # the FIFO did not block the run
    st = FeatureStore(tmp_path / "s")
    errors = {}
    for e in st.errors():
        errors.setdefault(e["video_id"], []).append(e)
    # correct output (tiny vgg19: 4 fps, 4-frame windows; tiny vggish: 0.96 s windows)
    assert st.num_rows("good", "vgg19") == 2 and st.num_rows("good", "vggish") == 2
    assert st.num_rows("short", "vgg19") == 1 and st.is_padded("short", "vgg19")
    assert st.num_rows("short", "vggish") == 1 and st.is_padded("short", "vggish")
    assert st.num_rows("-dash ünï", "vgg19") == 2
    for vid in ("portrait", "one_px"):
        assert st.num_rows(vid, "vgg19") == 2 and st.num_rows(vid, "vggish") == 2, vid
    assert st.num_rows("uhd", "vgg19") == 2 and st.num_rows("uhd", "vggish") == 2
    assert st.meta("uhd").num_frames == 8
    # variable frame rate: 2.34 s (last frame at 2.3 s plus its 0.04 s) -> 9 frames at 4 fps -> 2 rows
    assert st.meta("vfr").duration_s == pytest.approx(2.34, abs=1e-3) and st.num_rows("vfr", "vgg19") == 2
    # visual streams still extracted without audio; the audio failure is recorded
    assert st.video_streams("no_audio") == ["vgg19"]
    assert errors["no_audio"][0]["stage"] == "extract:vggish" and "no usable audio" in errors["no_audio"][0]["message"]
    # clear recorded errors, each naming the file
    for vid in ("truncated", "zero", "text", "audio_only", "dangling", "loop", "fifo"):
        assert vid in errors, vid
        assert errors[vid][0]["path"].endswith(f"{vid}.mp4") and f"{vid}.mp4" in errors[vid][0]["message"]
        assert errors[vid][0]["stage"] == "decode" and vid not in st
    assert (
        "no decodable video stream" in errors["audio_only"][0]["message"]
        or "video stream" in errors["audio_only"][0]["message"]
    )
    assert "cannot stat (No such file or directory)" in errors["dangling"][0]["message"]
    assert "cannot stat (Too many levels of symbolic links)" in errors["loop"][0]["message"]
    assert "not a regular file (a FIFO)" in errors["fifo"][0]["message"]
    assert errors["twice"][0]["error_type"] == "DuplicateVideoId" and "twice" not in st
    assert "twice.mkv" in errors["twice"][0]["message"] and "twice.mp4" in errors["twice"][0]["message"]
    assert set(errors) == {"no_audio", "truncated", "zero", "text", "audio_only", "twice", "dangling", "loop", "fifo"}


def test_variable_frame_rate_frames_are_picked_by_time(bad_dir):
    pts = np.array(VFR_PTS_S)
    for fps in (10.0, 25.0):
        d = decode_video(bad_dir / "vfr.mp4", fps=[fps], short_side=None, sample_rate=None)
        grey = d.frames[fps][:, 32, 32, 0].astype(int)
        n = int(np.floor(2.34 * fps + 1e-6))
        # output frame k shows the last native frame shown at or before k / fps
        by_time = np.array([np.nonzero(pts <= k / fps + 1e-9)[0].max() for k in range(n)])
        by_index = np.minimum(np.floor(np.arange(n) * d.meta.native_fps / fps).astype(int), len(pts) - 1)
        assert np.abs(_grey(by_time) - _grey(by_index)).max() > 2 * TOL  # the rules disagree on this video
        assert grey.shape == (n,)
        assert np.abs(grey - _grey(by_time)).max() <= TOL, (fps, grey, _grey(by_time))
    assert d.meta.num_frames == len(pts) and d.meta.duration_s == pytest.approx(2.34, abs=1e-3)


def test_long_constant_rate_video_picks_every_frame(tmp_path):
    """decord's float32 timestamps round up to ~2 us after 32 s; frames must still be picked
    on the exact ``index / fps`` grid (a 25 -> 25 fps resampling keeps every frame)."""
    path = tmp_path / "forty_s.mp4"
    _mp4(path, seconds=40.0, size=32, audio=False)  # 1000 frames
    d = decode_video(
        path, fps=[25.0, 16.0], short_side=None, sample_rate=None, frame_ranges={25.0: (900, 1000), 16.0: (600, 640)}
    )
    assert d.total_frames == {25.0: 1000, 16.0: 640} and d.meta.duration_s == 40.0
    grey = d.frames[25.0][:, 16, 16, 0].astype(int)
    assert np.abs(grey - _grey(np.arange(900, 1000))).max() <= TOL
    grey16 = d.frames[16.0][:, 16, 16, 0].astype(int)  # output k shows native floor(k * 25 / 16)
    assert np.abs(grey16 - _grey(np.arange(600, 640) * 25 // 16)).max() <= TOL


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied_like_a_player(tmp_path, degrees):
    """Frames come out as displayed: rotated by the display matrix (counter-clockwise), like
    ffmpeg's autorotate; a portrait phone video gives frames taller than wide."""
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :48, 0] = 250  # red left half
    img[:32, :, 1] = 250  # green top half
    path = tmp_path / f"rot{degrees}.mp4"
    _mp4(path, seconds=0.4, width=96, height=64, rotation=degrees, audio=False, pix_fmt="yuv444p", image=lambda i: img)
    with av.open(str(path)) as c:
        ccw = next(c.decode(video=0)).rotation  # what the container says, read back by PyAV
    expected = np.rot90(img, k=ccw // 90)
    d = decode_video(path, fps=[25.0], short_side=None, sample_rate=None)
    frames = d.frames[25.0]
    assert frames.shape == (10, *expected.shape)
    assert np.abs(frames[0].astype(int) - expected).mean() < 4
    if degrees != 180:
        assert frames.shape[1] > frames.shape[2]  # portrait
    # resized at decode in the displayed orientation: short side 64 (the width when portrait)
    big = tmp_path / f"big{degrees}.mp4"
    _mp4(big, seconds=0.2, width=256, height=128, rotation=degrees, audio=False)
    shape = decode_video(big, fps=[25.0], short_side=64, sample_rate=None).frames[25.0].shape
    assert shape[1:3] == ((64, 128) if degrees == 180 else (128, 64))


def test_one_pixel_and_4k_frames(bad_dir, tmp_path):
    """1 x 1 frames are scaled up (decord needs >= 64 px of width), 4K frames are scaled down
    at decode; the picked frames are the right ones in both cases."""
    d = decode_video(bad_dir / "one_px.mp4", fps=[25.0], short_side=None, sample_rate=None)
    assert d.frames[25.0].shape == (62, 64, 64, 3)
    assert np.abs(d.frames[25.0][:, 0, 0, 0].astype(int) - _grey(np.arange(62))).max() <= TOL
    d = decode_video(bad_dir / "one_px.mp4", fps=[4.0], short_side=224, sample_rate=None)
    assert d.frames[4.0].shape == (9, 224, 224, 3)  # 62 frames = 2.48 s
    d = decode_video(bad_dir / "uhd.mp4", fps=[4.0, 8.0], short_side=256, sample_rate=None)
    assert d.frames[4.0].shape == (8, 256, 456, 3)  # 3840 x 2160 -> 456 x 256 (even sizes)
    assert np.abs(d.frames[4.0][:, 100, 200, 0].astype(int) - _grey(np.arange(8))).max() <= TOL
    assert np.abs(d.frames[8.0][:, 5, 5, 0].astype(int) - _grey(np.arange(16) // 2)).max() <= TOL


def test_unreadable_paths_raise_a_clear_error(tmp_path):
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    with pytest.raises(DecodeError, match=r"folder.mp4: not a regular file \(a directory\)"):
        decode_video(folder, fps=[25.0])
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(DecodeError, match=r"pipe.mp4: not a regular file \(a FIFO\)") as info:
        decode_with_timeout(fifo, timeout_s=30, fps=[25.0])
    assert not isinstance(info.value, DecodeTimeout) and time.perf_counter() - t0 < 10


def test_a_file_that_cannot_be_read_is_recorded(tmp_path):
    """Needs a regular, non-empty file this user cannot read: mode 000 for a normal user; root
    reads those, but not a write-only sysfs attribute."""
    if os.geteuid() != 0:
        target = tmp_path / "locked.bin"
        target.write_bytes(b"\0" * 100)
        target.chmod(0)
    else:
        target = next(
            (
                p
                for p in ("/sys/bus/pci/rescan", "/sys/kernel/mm/page_idle/bitmap")
                if os.path.isfile(p) and os.stat(p).st_size and not _readable(p)
            ),
            None,
        )
        if target is None:
            pytest.skip("running as root and no write-only sysfs file here")
    path = tmp_path / "locked.mp4"
    os.symlink(target, path)
    with pytest.raises(DecodeError, match=r"locked.mp4: cannot read \(Permission denied\)"):
        decode_video(path, fps=[25.0])


def _readable(path) -> bool:
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False


def test_a_decoder_blocked_in_native_code_is_killed(tmp_path, monkeypatch):
    """decord opening a FIFO blocks inside FFmpeg (C code); the per-video limit kills it."""
    import decord

    import avel.pipeline.decode as dec

    fifo = tmp_path / "stuck.mp4"
    os.mkfifo(fifo)

    def open_without_checks(path, **kwargs):  # what decode_video would do without its file checks
        decord.VideoReader(str(path), ctx=decord.cpu(0))

    monkeypatch.setattr(dec, "decode_video", open_without_checks)
    t0 = time.perf_counter()
    with pytest.raises(DecodeTimeout, match="stuck.mp4: decoding took longer than 1 s; worker killed"):
        decode_with_timeout(fifo, timeout_s=1, fps=[25.0])
    assert time.perf_counter() - t0 < 10


def test_unsafe_and_missing_ids_are_rejected_not_dropped(tmp_path):
    assert unsafe_id_reason("../x") and unsafe_id_reason("a/../../b") and unsafe_id_reason("/abs")
    assert unsafe_id_reason("tab\there") and unsafe_id_reason("")
    assert unsafe_id_reason("-leading dash ünï") is None and unsafe_id_reason("sub/dir/name") is None
    plan = plan_jobs(
        {"../x": tmp_path / "x.mp4", "ok": tmp_path / "ok.mp4"},
        store_root=tmp_path / "s",
        streams=["vgg19"],
        missing=["gone"],
    )
    assert [j.video_id for j in plan.todo] == ["ok"]
    rejected = {r["video_id"]: r for r in plan.rejected}
    assert rejected["../x"]["error_type"] == "UnsafeVideoId" and "escape" in rejected["../x"]["message"]
    assert rejected["gone"]["error_type"] == "MissingVideoFile"


def test_unav100_ids_escaping_the_store_are_recorded(bad_dir, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    (vids / "good.mp4").write_bytes((bad_dir / "good.mp4").read_bytes())
    (vids / "folder.mp4").mkdir()  # a directory where a video should be
    os.symlink(vids / "nowhere.mp4", vids / "dangling.mp4")
    samples = [Sample(v, v, 2.5, "train", []) for v in ("good", "../good", "absent", "folder", "dangling")]
    write_unav100(AnnotationSet("unav100", [], samples), tmp_path / "ann.json")
    res = CliRunner().invoke(
        cli,
        [
            "extract",
            "--dataset",
            "unav100",
            "--videos",
            str(vids),
            "--annotations",
            str(tmp_path / "ann.json"),
            "--extractors",
            "vggish",
            "--preset",
            "tiny",
            "--random-weights",
            "--out",
            str(tmp_path / "s"),
            "--json",
        ],
    )
    assert res.exit_code == 1
    report = json.loads(res.stdout.splitlines()[0])
    assert report["videos_ok"] == 1 and report["videos_failed"] == 4
    st = FeatureStore(tmp_path / "s")
    assert st.videos() == ["good"]
    kinds = {e["video_id"]: e["error_type"] for e in st.errors()}
    assert kinds == {
        "../good": "UnsafeVideoId",
        "absent": "MissingVideoFile",
        "folder": "MissingVideoFile",
        "dangling": "MissingVideoFile",
    }


@pytest.mark.slow
def test_twenty_minute_video(tmp_path):
    """A 20-minute video (10 fps, audio) through `avel extract`, local runner, in 20 chunks of
    60 s: every row present, frames picked on the exact grid to the end (0.1 s is not exact
    in float32 either)."""
    vdir = tmp_path / "videos"
    vdir.mkdir()
    path = vdir / "twenty.mkv"
    _mp4(path, seconds=1200.0, fps=10, size=32, audio_codec="flac")  # 12,000 frames, 19.2 M samples
    (tmp_path / "job.yaml").write_text(
        "extractor_options: {vgg19: {fps: 1.0, window_frames: 1, stride_frames: 1, image_size: 32}}\n"
    )
    res = CliRunner().invoke(
        cli,
        [
            "extract",
            "--config",
            str(tmp_path / "job.yaml"),
            "--dataset",
            "folder",
            "--videos",
            str(vdir),
            "--extractors",
            "vgg19,vggish",
            "--preset",
            "tiny",
            "--random-weights",
            "--out",
            str(tmp_path / "s"),
            "--json",
            "--batch-size",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.splitlines()[0])
    assert report["videos_ok"] == 1 and report["busy_s"]["decode"] > 0
    st = FeatureStore(tmp_path / "s")
    meta = st.meta("twenty")
    assert meta.duration_s == 1200.0 and meta.num_frames == 12000
    assert st.num_rows("twenty", "vgg19") == 1200  # one row per second
    start, end = st.times("twenty", "vgg19")
    np.testing.assert_array_equal(start, np.arange(1200.0))
    assert st.num_rows("twenty", "vggish") == 1250  # 0.96-s windows
    # the last minute: 1 fps output frame k shows native frame 10 k, 10 fps keeps every frame
    d = decode_video(
        path, fps=[1.0, 10.0], short_side=None, sample_rate=None, frame_ranges={1.0: (1140, 1200), 10.0: (11400, 12000)}
    )
    assert np.abs(d.frames[1.0][:, 16, 16, 0].astype(int) - _grey(np.arange(1140, 1200) * 10)).max() <= TOL
    assert np.abs(d.frames[10.0][:, 16, 16, 0].astype(int) - _grey(np.arange(11400, 12000))).max() <= TOL
