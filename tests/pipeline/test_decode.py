"""One decode per video: frames per requested fps, audio at 16 kHz, clear errors."""

from __future__ import annotations

import fractions
import os

import av
import numpy as np
import pytest

from avel.pipeline.decode import DecodeError, decode_video, frame_indices_for_fps


def _write(path, *, seconds=2.0, fps=25, w=96, h=64, sr=16000, audio=True):
    c = av.open(str(path), "w")
    vs = c.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    if audio:
        a = c.add_stream("aac", rate=sr)
        a.layout = "mono"
    for i in range(int(seconds * fps)):
        img = np.full((h, w, 3), (i * 5) % 256, np.uint8)
        for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in vs.encode():
        c.mux(p)
    if audio:
        x = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
        x[int(0.5 * sr) : int(0.5 * sr) + 200] = 0.9  # a click at exactly 0.5 s
        for k in range(0, len(x), 1024):
            fr = av.AudioFrame.from_ndarray(x[None, k : k + 1024], format="fltp", layout="mono")
            fr.sample_rate = sr
            # Explicit timestamps make the muxer record the AAC encoder delay (edit list),
            # so decoders drop the priming samples and audio stays aligned with video.
            fr.pts, fr.time_base = k, fractions.Fraction(1, sr)
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    c.close()


def test_frame_index_selection_nearest_previous():
    times = np.arange(50) / 25.0  # 2 s at 25 fps
    idx = frame_indices_for_fps(times, 2.0, 16.0)
    assert len(idx) == 32
    np.testing.assert_array_equal(idx[:5], [0, 1, 3, 4, 6])  # 0, .0625, .125, .1875, .25 s
    assert frame_indices_for_fps(times, 2.0, 25.0).tolist() == list(range(50))


def test_decode_once_for_two_rates_with_audio(tmp_path):
    path = tmp_path / "clip with space.mp4"
    _write(path)
    d = decode_video(path, fps=[25, 16], short_side=32)  # 48 px wide: decoded at 64
    assert d.frames[25.0].shape == (50, 42, 64, 3) and d.frames[25.0].dtype == np.uint8
    assert d.frames[16.0].shape == (32, 42, 64, 3)
    assert d.meta.num_frames == 50 and d.meta.native_fps == pytest.approx(25.0)
    assert d.meta.duration_s == pytest.approx(2.0, abs=1e-3)
    assert d.sample_rate == 16000 and abs(d.audio.size - 32000) <= 1024  # AAC frame padding
    click = int(np.argmax(np.abs(d.audio) > 0.6))
    assert abs(click - 8000) <= 2  # audio is not shifted against video (priming removed)
    # grey level encodes the frame index: frame k of the 16 fps stream is native frame floor(k*25/16)
    grey = d.frames[16.0][:, 20, 32, 0].astype(int)
    expected = (np.floor(np.arange(32) * 25 / 16).astype(int) * 5) % 256
    assert np.abs(grey - expected).max() <= 6  # lossy coding


def test_a_72_pixel_decode_width_is_avoided(tmp_path):
    """decord 0.6.0 cannot copy 72-pixel-wide frames: short side 72 decodes at 74 and the
    extractor's CPU resize still gets exactly the size it asks for."""
    from avel.extractors.base import DecodeSpec
    from avel.pipeline.engine import frames_for

    path = tmp_path / "v.mp4"
    _write(path, w=96, h=96, audio=False)
    d = decode_video(path, fps=[25], short_side=72, sample_rate=None)
    assert d.frames[25.0].shape == (50, 74, 74, 3)
    assert frames_for(d, DecodeSpec("video", fps=25.0, short_side=72)).shape == (50, 72, 72, 3)
    portrait = tmp_path / "p.mp4"
    _write(portrait, w=64, h=128, audio=False)  # width 64 -> 72 for short side 72
    assert decode_video(portrait, fps=[25], short_side=72, sample_rate=None).frames[25.0].shape[1:] == (148, 74, 3)


@pytest.mark.parametrize("ranges", [None, {25.0: (7, 31), 40.0: (10, 61), 16.0: (0, 0)}])
def test_blockwise_reading_equals_one_block(tmp_path, ranges):
    """Frames copied block by block (block boundaries inside every plan, a 40 fps plan that
    repeats native frames, chunk ranges) equal those of one get_batch call, bitwise."""
    path = tmp_path / "v.mp4"
    _write(path, audio=False)
    kw = dict(fps=[25, 40, 16], short_side=64, sample_rate=None, frame_ranges=ranges)
    whole = decode_video(path, block_frames=10**6, **kw)
    for block in (1, 7, 50):
        d = decode_video(path, block_frames=block, **kw)
        assert d.frames.keys() == whole.frames.keys()
        for f, x in whole.frames.items():
            np.testing.assert_array_equal(d.frames[f], x)
    assert whole.frames[40.0].shape[0] == (51 if ranges else 80)
    grey = whole.frames[40.0][:, 20, 32, 0].astype(int)  # frame k at 40 fps is native floor(k*25/40)
    k = np.arange(*(ranges or {40.0: (0, 80)})[40.0])
    assert np.abs(grey - (np.floor(k * 25 / 40).astype(int) * 5) % 256).max() <= 6


def test_missing_audio_is_reported_not_fatal(tmp_path):
    path = tmp_path / "silent.mp4"
    _write(path, audio=False)
    d = decode_video(path, fps=[25])
    assert d.audio is None and "no usable audio track" in d.audio_error
    with pytest.raises(DecodeError, match="no usable audio track"):
        decode_video(path, fps=[])


def test_bad_files_raise_decode_error_naming_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty.mp4: empty file"):
        decode_video(empty, fps=[25])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(DecodeError, match="notes.mp4: no decodable video stream"):
        decode_video(text, fps=[25])
    with pytest.raises(DecodeError, match="cannot stat"):
        decode_video(tmp_path / "absent.mp4", fps=[25])


def test_timeout_guard_kills_a_hanging_decode(tmp_path, monkeypatch):
    import time

    import avel.pipeline.decode as dec

    path = tmp_path / "ok.mp4"
    _write(path, seconds=1.0)
    d = dec.decode_with_timeout(path, timeout_s=60, fps=[25])
    assert d.frames[25.0].shape[0] == 25

    def hang(*args, **kwargs):  # stands in for decord looping forever inside get_batch
        while True:
            time.sleep(1)

    monkeypatch.setattr(dec, "decode_video", hang)
    t0 = time.perf_counter()
    with pytest.raises(dec.DecodeTimeout, match="ok.mp4: decoding took longer than 1 s"):
        dec.decode_with_timeout(path, timeout_s=1, fps=[25])
    assert time.perf_counter() - t0 < 10
    monkeypatch.undo()
    with pytest.raises(dec.DecodeError, match="empty file"):
        (tmp_path / "e.mp4").write_bytes(b"")
        dec.decode_with_timeout(tmp_path / "e.mp4", timeout_s=30, fps=[25])


def test_killed_decoder_is_recorded_retryable_and_redone_by_a_plain_rerun(tmp_path, monkeypatch):
    """kill -9 of the decode worker is not the video's fault: the failure is recorded with
    ``retryable`` and the next run (without --retry-failed) extracts the video."""
    import json
    import signal

    import avel.pipeline.decode as dec
    from avel.datasets.store import FeatureStore
    from avel.pipeline.extract import ExtractConfig, run_extract

    videos = tmp_path / "videos"
    videos.mkdir()
    _write(videos / "v.mp4", seconds=2.0)
    cfg = ExtractConfig(
        dataset="folder",
        videos=str(videos),
        extractors=["vggish"],
        preset="tiny",
        random_weights=True,
        out=str(tmp_path / "store"),
        device="cpu",
        decode_timeout_s=60,
    )

    def killed(*args, **kwargs):  # the decode child dies as under `kill -9` or the OOM killer
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(dec, "decode_video", killed)
    first = run_extract(cfg)
    assert first["videos_failed"] == 1 and first["failures"][0]["error_type"] == "WorkerKilled"
    rec = json.loads((tmp_path / "store" / "errors.jsonl").read_text().splitlines()[0])
    assert rec["retryable"] is True and rec["video_id"] == "v"
    monkeypatch.undo()
    second = run_extract(cfg)
    assert second["videos_ok"] == 1 and second["videos_failed"] == 0
    assert "v" in FeatureStore(tmp_path / "store").videos()


def test_decode_child_dies_with_a_killed_driver(tmp_path):
    """kill -9 of the process running decode_with_timeout takes its decode child with it
    (before, the child blocked forever writing to a pipe nobody read)."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "ok.mp4"
    _write(path, seconds=1.0)
    pid_file = tmp_path / "child.pid"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, sys, time\n"
                "import avel.pipeline.decode as dec\n"
                "def hang(*a, **k):\n"
                "    open(sys.argv[2], 'w').write(str(os.getpid()))\n"
                "    time.sleep(600)\n"
                "dec.decode_video = hang\n"
                "dec.decode_with_timeout(sys.argv[1], timeout_s=600, fps=[25])\n"
            ),
            str(path),
            str(pid_file),
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)

        def alive(pid: int) -> bool:
            try:
                state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                return False
            return state != "Z"

        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), f"decode child {child} outlived its killed driver"
    finally:
        driver.kill()
