"""Extraction throughput: sequential loop vs decode alone vs models alone vs the Ray pipeline.

On the same synthetic videos and the same extractor weights, in one run:

    (a) sequential   one video at a time, decode then extract, batch of one window, no overlap
                     (what v-iashin/video_features does)
    (b) decode       decoding alone (the pipeline's decode request for these extractors)
    (c) models       the extractors alone on pre-decoded, pre-cut windows, batch --batch-size
    (d) ray          the Ray pipeline (decode tasks + extractor actor pools, cross-video batches)

prints videos/s and windows/s for each and the ratios d/a and d/min(b, c).

    python benchmarks/extract_throughput.py --extractors i3d_rgb --preset full --videos 4
    python benchmarks/extract_throughput.py --extractors vgg19,vggish --preset tiny --videos 24

Random weights are used (``--preset full`` is the real architecture, UnAV-100 plan).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractors", default="i3d_rgb")
    ap.add_argument("--preset", default="full", choices=["full", "tiny"])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=128, help="synthetic frame side (px)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--decode-workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for (a) and (c)")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()

    from avel.datasets.store import StoreWriter
    from avel.datasets.synth import SynthConfig, generate
    from avel.pipeline.decode import decode_video
    from avel.pipeline.engine import build_stream_extractors, decode_request, frames_for, run_sequential
    from avel.pipeline.extract import ExtractConfig
    from avel.pipeline.jobs import VideoJob
    from avel.pipeline.ray_extract import run_ray

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="avel-extract-bench-"))
    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    try:
        generate(SynthConfig(kind="unav100", videos=args.videos, seed=0, size=args.size,
                             min_duration_s=args.duration_s, max_duration_s=args.duration_s), work / "data")
        jobs = [VideoJob(p.stem, p) for p in sorted((work / "data" / "videos").glob("*.mp4"))]
        exts = build_stream_extractors(names, random_weights=True, preset=args.preset)
        specs = {se.stream: se.spec() for se in exts}
        request = decode_request(exts)
        results: dict[str, dict] = {}

        def record(name: str, seconds: float, windows: int) -> None:
            results[name] = {"seconds": round(seconds, 2), "videos_per_s": round(len(jobs) / seconds, 3),
                             "windows_per_s": round(windows / seconds, 2), "windows": windows}

        # (a) sequential, batch of one window, no overlap
        writer = StoreWriter(work / "seq", dataset="bench", streams=specs)
        t0 = time.perf_counter()
        rep = run_sequential(jobs, exts, writer, batch_size=1, decode_timeout_s=None, chunk_s=1e9)
        record("a_sequential", time.perf_counter() - t0, rep.windows)

        # (b) decode alone
        t0 = time.perf_counter()
        decoded = [decode_video(j.path, **request) for j in jobs]
        record("b_decode", time.perf_counter() - t0, rep.windows)

        # (c) models alone on pre-cut windows
        cut = []
        for d in decoded:
            for se in exts:
                ext = se.extractor
                src = frames_for(d, ext.decode_spec) if ext.modality == "video" else torch.from_numpy(d.audio)
                cut.append((ext, ext.windows(src).data))
        del decoded
        n_windows = sum(w.shape[0] for _, w in cut)
        t0 = time.perf_counter()
        for ext, data in cut:
            for a in range(0, data.shape[0], args.batch_size):
                ext.extract(data[a:a + args.batch_size])
        record("c_models", time.perf_counter() - t0, n_windows)
        del cut

        # (d) the Ray pipeline
        cfg = ExtractConfig(dataset="folder", videos=str(work / "data" / "videos"), extractors=names,
                            random_weights=True, preset=args.preset, out=str(work / "ray"), runner="ray",
                            batch_size=args.batch_size, decode_workers=args.decode_workers)
        writer = StoreWriter(work / "ray", dataset="bench", streams=specs, extra={"cfg": dataclasses.asdict(cfg)})
        import ray

        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        t0 = time.perf_counter()
        rep = run_ray(jobs, cfg, exts, writer)
        record("d_ray", time.perf_counter() - t0, rep.windows)
        ray.shutdown()

        a, b, c, d = (results[k]["seconds"] for k in ("a_sequential", "b_decode", "c_models", "d_ray"))
        report = {"extractors": names, "preset": args.preset, "videos": len(jobs), "duration_s": args.duration_s,
                  "batch_size": args.batch_size, "threads": args.threads, **results,
                  # throughput ratios (higher is better for the pipeline)
                  "ratio_d_over_a": round(a / d, 3),
                  "ratio_d_over_min_b_c": round(max(b, c) / d, 3)}
        print(json.dumps(report, indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
