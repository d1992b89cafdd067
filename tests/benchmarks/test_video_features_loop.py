"""The benchmark's baseline (a) does the same work as the pipeline: the same windows of the same
videos (``benchmarks/video_features_loop.py``). Its rows are not compared: the tiny random
extractors give rows that barely depend on the input (their spread between windows is smaller
than the effect of the baseline's re-encode), so a closeness check could not fail."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np

from avel.datasets.store import FeatureStore, StoreWriter
from avel.datasets.synth import SynthConfig, generate
from avel.pipeline.engine import build_stream_extractors, run_local
from avel.pipeline.jobs import VideoJob

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from video_features_loop import reencode_fps, run_video_features_loop  # noqa: E402


def test_reencode_changes_the_frame_rate_and_keeps_audio(tmp_path):
    generate(
        SynthConfig(
            kind="unav100", videos=1, seed=1, size=64, fps=30, min_duration_s=3.0, max_duration_s=3.0, num_classes=2
        ),
        tmp_path / "d",
    )
    (src,) = (tmp_path / "d" / "videos").glob("*.mp4")
    out = reencode_fps(src, tmp_path / "r.mp4", 25.0)
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == 25 and c.streams.audio
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 75


def test_same_windows_as_the_pipeline(tmp_path):
    generate(
        SynthConfig(kind="unav100", videos=2, seed=0, size=64, min_duration_s=4.0, max_duration_s=5.0, num_classes=2),
        tmp_path / "d",
    )
    jobs = [VideoJob(p.stem, p) for p in sorted((tmp_path / "d" / "videos").glob("*.mp4"))]
    exts = build_stream_extractors(["i3d_rgb", "vggish"], random_weights=True, preset="tiny")
    windows = run_video_features_loop(jobs, exts, tmp_path / "vf")
    writer = StoreWriter(tmp_path / "s", dataset="b", streams={se.stream: se.spec() for se in exts})
    report = run_local(jobs, exts, writer, batch_size=1, decode_timeout_s=None)
    assert windows == report.windows > 0
    store = FeatureStore(tmp_path / "s")
    for job in jobs:
        for se in exts:
            ours = store.read(job.video_id, se.stream)
            theirs = np.load(tmp_path / "vf" / f"{job.video_id}_{se.stream}.npy")
            assert theirs.shape == ours.shape and np.isfinite(theirs).all()
    assert not list((tmp_path / "vf").glob("*.mp4")) and not list((tmp_path / "vf").glob("*.wav"))
