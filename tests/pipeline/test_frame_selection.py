"""Frame selection (ffmpeg's ``fps`` filter rule) and the PIL resize of the published presets.

The reference for selection is ffmpeg's own ``fps`` filter, run through PyAV's filter graph on
frames whose grey level encodes their index.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from avel.pipeline.decode import decode_video, frame_indices_for_fps

TB = Fraction(1, 90000)


def ffmpeg_fps_filter(pts: list[int], end_pts: int, fps: int, tb: Fraction = TB) -> list[int]:
    """Input index of each frame ffmpeg's ``fps=fps`` filter outputs (defaults: round=near)."""
    graph = av.filter.Graph()
    src = graph.add_buffer(width=16, height=16, format="gray", time_base=tb)
    fps_filter = graph.add("fps", f"fps={fps}")
    sink = graph.add("buffersink")
    src.link_to(fps_filter)
    fps_filter.link_to(sink)
    graph.configure()
    out: list[int] = []

    def drain() -> None:
        while True:
            try:
                frame = sink.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            out.append(int(frame.to_ndarray()[0, 0]))

    for i, p in enumerate(pts):
        frame = av.VideoFrame.from_ndarray(np.full((16, 16), i, np.uint8), format="gray")
        frame.pts, frame.time_base = int(p), tb
        frame.duration = int((pts[i + 1] if i + 1 < len(pts) else end_pts) - p)
        src.push(frame)
        drain()
    src.push(None)
    drain()
    return out


def _cases():
    rng = np.random.default_rng(0)
    for native in (29.97, 60.0, 50.0, 19.62, 12.5, 24.0):  # constant rates
        n = 61
        pts = np.round(np.arange(n + 1) * 90000 / native).astype(int)
        yield f"cfr{native}", pts[:-1].tolist(), int(pts[-1])
    for seed in range(4):  # variable rates: gaps of 5-90 ms
        gaps = rng.integers(450, 8100, 60)
        pts = np.concatenate([[0], np.cumsum(gaps)])
        yield f"vfr{seed}", pts[:-1].tolist(), int(pts[-1])


@pytest.mark.parametrize("fps", [25, 16])
@pytest.mark.parametrize("name,pts,end", list(_cases()), ids=[c[0] for c in _cases()])
def test_ffmpeg_rule_equals_ffmpeg_fps_filter(name, pts, end, fps):
    expected = ffmpeg_fps_filter(pts, end, fps)
    times = np.asarray(pts, np.float64) * float(TB)
    got = frame_indices_for_fps(times, end * float(TB), float(fps), rule="ffmpeg_fps")
    assert got.tolist() == expected


@pytest.mark.parametrize("offset_s", [0.021333, 0.05, 1.013])
@pytest.mark.parametrize("name,pts,end", list(_cases())[:6], ids=[c[0] for c in _cases()][:6])
def test_ffmpeg_rule_on_a_shifted_origin_equals_the_filter(name, pts, end, offset_s):
    """A first frame after time 0 (a video stream starting after the file's start) is rounded
    on the shifted grid, as ffmpeg's filter does; the first-frame origin differs."""
    off = int(round(offset_s * 90000))
    shifted = [p + off for p in pts]
    expected = ffmpeg_fps_filter(shifted, end + off, 25)
    times = np.asarray(shifted, np.float64) * float(TB)
    got = frame_indices_for_fps(times, (end + off) * float(TB), 25.0, rule="ffmpeg_fps")
    assert got.tolist() == expected


def test_previous_rule_differs_from_ffmpeg_on_29_97_fps():
    """The old rule (nearest previous) is not the reference: a 29.97-fps video at 25 fps
    differs in slots and in the frame count."""
    pts = np.round(np.arange(91) * 90000 / 29.97).astype(int)
    expected = ffmpeg_fps_filter(pts[:-1].tolist(), int(pts[-1]), 25)
    times = pts[:-1] * float(TB)
    previous = frame_indices_for_fps(times, pts[-1] * float(TB), 25.0, rule="previous")
    nearest = frame_indices_for_fps(times, pts[-1] * float(TB), 25.0, rule="ffmpeg_fps")
    assert nearest.tolist() == expected
    assert len(previous) != len(expected) or np.mean(previous != np.asarray(expected)) > 0.2
    with pytest.raises(ValueError, match="frame selection rule"):
        frame_indices_for_fps(times, 3.0, 25.0, rule="nearest")


def _write_vfr(path, pts: list[int], *, w=64, h=48, textured=False) -> None:
    """Lossless H.264 clip whose frame ``i`` has grey level ``4 i`` (pts in 1/90000 s)."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=30, options={"qp": "0"})
    s.width, s.height, s.pix_fmt = w, h, "yuv444p"
    s.codec_context.time_base = TB
    rng = np.random.default_rng(1)
    for i, p in enumerate(pts):
        img = np.full((h, w, 3), 4 * i, np.uint8)
        if textured:
            img[: h // 2] = rng.integers(0, 256, (h // 2, w, 3), dtype=np.uint8)  # detail for the resize test
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = int(p), TB
        for packet in s.encode(frame):
            c.mux(packet)
    for packet in s.encode():
        c.mux(packet)
    c.close()


def test_decoder_picks_the_frames_ffmpeg_picks_on_a_vfr_clip(tmp_path):
    """decode_video's ``ffmpeg_fps`` selection on a real variable-rate file equals ffmpeg's fps
    filter fed with the same file's decoded frames and timestamps."""
    rng = np.random.default_rng(3)
    pts = np.concatenate([[0], np.cumsum(rng.integers(1200, 6000, 47))]).tolist()  # 13-67 ms gaps
    path = tmp_path / "vfr.mp4"
    _write_vfr(path, pts)
    with av.open(str(path)) as c:  # what ffmpeg's CLI feeds its filter: the file's timestamps
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        file_pts = [int(round(f.pts * f.time_base / TB)) for f in frames]
        end = file_pts[-1] + int(round(frames[-1].duration * frames[-1].time_base / TB))
    expected = ffmpeg_fps_filter(file_pts, end, 25)
    d = decode_video(path, fps=[25], short_side=None, sample_rate=None, frame_selection="ffmpeg_fps")
    got = np.round(d.frames[25.0][:, 10, 10].astype(float).mean(axis=1) / 4).astype(int)
    assert got.tolist() == expected
    old = decode_video(path, fps=[25], short_side=None, sample_rate=None)  # default: previous
    assert len(old.frames[25.0]) != len(expected) or not np.array_equal(
        np.round(old.frames[25.0][:, 10, 10].astype(float).mean(axis=1) / 4), expected
    )


def _write_late_video(path, native: float, n: int, video_start_s: float) -> None:
    """H.264 (lossless, frame ``i`` grey ``4 i``) starting ``video_start_s`` after an AAC track."""
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=Fraction(native).limit_denominator(1001), options={"qp": "0"})
    v.width, v.height, v.pix_fmt = 64, 48, "yuv444p"
    v.codec_context.time_base = TB
    a = c.add_stream("aac", rate=16000)
    a.layout = "mono"
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * i, np.uint8), format="rgb24")
        frame.pts, frame.time_base = int(round((video_start_s + i / native) * 90000)), TB
        for packet in v.encode(frame):
            c.mux(packet)
    for packet in v.encode():
        c.mux(packet)
    for k in range(0, int((video_start_s + n / native) * 16000), 1024):
        block = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        block.sample_rate, block.pts, block.time_base = 16000, k, Fraction(1, 16000)
        for packet in a.encode(block):
            c.mux(packet)
    for packet in a.encode():
        c.mux(packet)
    c.close()


@pytest.mark.parametrize("native,video_start_s", [(30.0, 0.021), (29.97, 0.1), (24.0, 0.033)])
def test_decoder_counts_time_from_the_file_start_like_ffmpeg_cli(tmp_path, native, video_start_s):
    """A video stream starting after the file's start (here after its audio): ffmpeg's CLI
    (video_features' re-encode) feeds its ``fps`` filter timestamps from the file's start, so
    ``ffmpeg_fps`` does too. (The same three cases were checked against ffmpeg n9.0.2's CLI
    ``-filter:v fps=fps=25`` re-encode; the expected lists here come from its filter.)"""
    path = tmp_path / "late.mp4"
    _write_late_video(path, native, 60, video_start_s)
    with av.open(str(path)) as c:
        start_s = c.start_time / 1e6
        frames = list(c.decode(video=0))
        file_pts = [int(round((f.pts * f.time_base - Fraction(start_s)) / TB)) for f in frames]
        end = file_pts[-1] + int(round(frames[-1].duration * frames[-1].time_base / TB))
    assert file_pts[0] > 0  # the container reports the video's late start
    expected = ffmpeg_fps_filter(file_pts, end, 25)
    d = decode_video(path, fps=[25], short_side=None, sample_rate=None, frame_selection="ffmpeg_fps")
    got = np.round(d.frames[25.0][:, 10, 10].astype(float).mean(axis=1) / 4).astype(int)
    assert got.tolist() == expected == d.native_index[25.0].tolist()
    first_frame_origin = ffmpeg_fps_filter([p - file_pts[0] for p in file_pts], end - file_pts[0], 25)
    assert first_frame_origin != expected  # the shift matters for these cases
    previous = decode_video(path, fps=[25], short_side=None, sample_rate=None, frame_selection="previous")
    assert previous.native_index[25.0][0] == 0  # "previous" keeps the first-frame origin


def test_published_presets_select_like_ffmpeg_and_resize_once_with_pil(tmp_path):
    """I3D (UnAV-100) and VGG-19 (AVE) defaults: ffmpeg's selection and one PIL bilinear resize
    of the full decoded frame (short side for I3D, 224 x 224 for VGG-19), through the engine's
    decode request; the old path (decoder scaling + torch resize) gives other pixels."""
    from PIL import Image

    import avel.extractors as E
    from avel.pipeline.engine import StreamExtractor, decode_request, frame_args, frames_for

    pts = np.round(np.arange(40) * 90000 / 29.97).astype(int).tolist()
    path = tmp_path / "v.mp4"
    _write_vfr(path, pts, w=200, h=150, textured=True)
    native = decode_video(path, fps=[25, 16], short_side=None, sample_rate=None, frame_selection="ffmpeg_fps")
    for name, preset, fps in (("i3d_rgb", "full", 25.0), ("vgg19", "full", 16.0)):
        ext = E.get(name).build(device="meta", preset=preset)
        spec = ext.decode_spec
        assert (spec.frame_selection, spec.resize) == ("ffmpeg_fps", "pil")
        request = decode_request([StreamExtractor(name, ext)])
        d = decode_video(path, fps=request["fps"], sample_rate=None, **frame_args(request))
        got = frames_for(d, spec).numpy()
        if spec.size_hw:
            size = spec.size_hw
        else:  # short side, long side rounded down as video_features' ResizeImproved
            size = (spec.short_side, int(spec.short_side * 200 / 150))
        want = np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], Image.BILINEAR)) for f in native.frames[fps]])
        if spec.center_crop:
            c, (h, w) = spec.center_crop, size
            want = want[:, (h - c) // 2 : (h - c) // 2 + c, (w - c) // 2 : (w - c) // 2 + c]
        np.testing.assert_array_equal(got, want)
        old_spec = type(spec)(**{**spec.__dict__, "resize": "torch"})
        old_request = decode_request(
            [StreamExtractor(name, type(ext).build(device="meta", preset=preset, resize="torch"))]
        )
        old = frames_for(decode_video(path, fps=[fps], sample_rate=None, **frame_args(old_request)), old_spec)
        assert old.shape == got.shape and (old.numpy().astype(int) - got).any()


def test_conflicting_rules_at_one_rate_are_refused():
    import avel.extractors as E
    from avel.pipeline.engine import StreamExtractor, decode_request

    a = E.get("vgg19").build(device="meta", preset="tiny")
    b = E.get("vgg19").build(device="meta", preset="tiny", frame_selection="previous")
    with pytest.raises(ValueError, match="different rules"):
        decode_request([StreamExtractor("a", a), StreamExtractor("b", b)])
    c = E.get("vgg19").build(device="meta", preset="tiny", resize="pil")
    with pytest.raises(ValueError, match="resize 4-fps frames differently"):
        decode_request([StreamExtractor("a", a), StreamExtractor("c", c)])
    assert (a.decode_spec.frame_selection, a.decode_spec.resize) == ("ffmpeg_fps", "torch")  # tiny: fast resize
    with pytest.raises(ValueError, match="frame_selection must be one of"):
        E.get("i3d_rgb").make_config("tiny", frame_selection="nearest")


def test_pil_resize_keeps_decoding_blockwise(tmp_path):
    """Native-size blocks of any length give the same PIL-resized frames."""
    pts = np.round(np.arange(30) * 90000 / 30).astype(int).tolist()
    path = tmp_path / "v.mp4"
    _write_vfr(path, pts, w=96, h=64, textured=True)
    kw = dict(
        fps=[25],
        short_side=None,
        sample_rate=None,
        frame_selection="ffmpeg_fps",
        pil_resize={25.0: (40, None)},
        frame_ranges={25.0: (3, 20)},
    )
    whole = decode_video(path, block_frames=1000, **kw).frames[25.0]
    assert whole.shape == (17, 40, 60, 3)
    for block in (1, 4):
        np.testing.assert_array_equal(decode_video(path, block_frames=block, **kw).frames[25.0], whole)
