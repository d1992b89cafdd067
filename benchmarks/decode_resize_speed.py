"""Cost of the exact resize path (``resize="pil"``, the published presets) against the
decoder-scaled one (``resize="torch"``), for :func:`avel.pipeline.decode.decode_video`.

    python benchmarks/decode_resize_speed.py [--video FILE] [--seconds 2] [--size 1920x1080] \\
        [--repeats 3] [--profile]

Without ``--video`` a ``--seconds`` long H.264 clip (30 fps, libx264 CRF 23, moving texture)
of ``--size`` is written to a temporary folder. Each path decodes it for I3D's request (25
fps, short side 256) ``--repeats`` times in this process (one decoder thread, as the
pipeline's decode workers); the best and median wall seconds are printed with the frame
counts, and the pixels of the two paths are compared with the PIL reference
(``pil_resize_frames`` on frames decoded at the native size) so a faster path that changed
the output would show. ``--profile`` adds a cProfile of one ``pil`` decode (top 12 by
cumulative time).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> None:
    """A textured clip whose content moves (so the encoder has real work, as in a real video)."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height + 64, width + 64, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(int(round(seconds * fps))):
            img = texture[i % 64 : i % 64 + height, (2 * i) % 64 : (2 * i) % 64 + width].copy()
            img[..., 0] = ((xx + 8 * i) % 256).astype(np.uint8)  # a moving gradient
            img[..., 1] = ((yy + 4 * i) % 256).astype(np.uint8) // 2 + img[..., 1] // 2
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch

    from avel.extractors.preprocess import pil_resize_frames, resize_target_hw
    from avel.pipeline.decode import decode_video

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            w, h = (int(x) for x in args.size.split("x"))
            video = Path(tmp) / "clip.mp4"
            write_clip(video, args.seconds, w, h)
        common = dict(fps=[25.0], sample_rate=None, frame_selection="ffmpeg_fps")
        paths = {
            "pil": dict(short_side=256, pil_resize={25.0: (256, None)}),
            "torch": dict(short_side=256),
        }
        times: dict[str, list[float]] = {k: [] for k in paths}
        frames = {}
        for _ in range(args.repeats):
            for name, kw in paths.items():
                t0 = time.perf_counter()
                d = decode_video(video, **common, **kw)
                times[name].append(time.perf_counter() - t0)
                frames[name] = d.frames[25.0]
        native = decode_video(video, **common, short_side=None).frames[25.0]
        size = resize_target_hw(*native.shape[1:3], short_side=256)
        want = pil_resize_frames(native, size)
        print(f"video {video.name}: {native.shape[2]}x{native.shape[1]}, {len(native)} frames at 25 fps -> {size}")
        for name in paths:
            got = frames[name]
            diff = np.abs(got.astype(int) - want).max() if got.shape == want.shape else "shape differs"
            print(
                f"{name:<6} best {min(times[name]):7.2f} s  median {statistics.median(times[name]):7.2f} s"
                f"  ({len(got) / min(times[name]):6.1f} frames/s)  max |px - PIL reference| {diff}"
            )
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            decode_video(video, **common, **paths["pil"])
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()
