"""Extraction throughput: sequential loop vs decode alone vs models alone vs the Ray pipeline.

On the same synthetic videos and the same extractor weights, in one run:

    (a) video_features  v-iashin/video_features' loop: with ``--video-features-repo`` video_features
                     itself (``video_features_reference.py``, I3D RGB; its random checkpoint is
                     then loaded by every other stage, converted from its layout); otherwise
                     re-created (``video_features_loop.py``): one pass per extractor, one video at
                     a time: re-encode to the extractor's fps, read frame by frame, resize each
                     frame with PIL, one window per forward, no overlap
    (a2) sequential  the same order with our decoder: one video at a time, one decode for every
                     extractor (no re-encode), batch of one window, no overlap
    (b) decode       the pipeline's decode stage alone, one process: decode_video (once per video
                     for every extractor) + each extractor's CPU resize/crop
    (c) models       the extractors alone on pre-decoded, pre-cut windows of all videos together,
                     full batches of --batch-size (what the actors run), --threads torch threads
    (d) ray          the Ray pipeline (chunked decode tasks + one warm actor pool per extractor,
                     windows of several videos per batch), once per --decode-workers value

prints videos/s and windows/s for each and the ratios d/a, d/a2 and d/min(b, c) (throughputs:
d/a = a_seconds / d_seconds). (d) is the steady state: Ray is started, the actors built and warmed up
(one batch each) and the decode workers' imports done before its clock starts; those start-up
seconds are printed separately (``startup``), as is (d) with start-up included.

    benchmarks/setup_video_features.sh /tmp/vf    # prints the three options below
    python benchmarks/extract_throughput.py --extractors i3d_rgb --preset full --videos 4 \\
        --video-features-repo VF --video-features-pythonpath DEPS --ffmpeg-dir FFMPEG_DIR
    python benchmarks/extract_throughput.py --extractors vgg19,vggish --preset tiny --videos 48 \\
        --decode-workers 1,2

Peak memory of one long video through the Ray runner (chunked), summed over the driver and
every process below it (Ray's gcs, raylet with the object store, workers, actors), sampled
from /proc every 0.2 s (``--long-video-runner local``: the local runner, its decode children
included, on the same video):

    python benchmarks/extract_throughput.py --long-video-s 1200 --chunk-s 30 --extractors vgg19,vggish \\
        --preset tiny --decode-workers 1 --options '{"vgg19": {"fps": 25, "window_frames": 24,
        "stride_frames": 8, "preprocessing": "torchvision", "image_size": 224, "resize_short_side": 256,
        "width_divisor": 64}, "vggish": {"hop_s": 0.32}}'

(the I3D decode: 25 fps, 256 px, 224 crop; models too small to matter: the run is about memory).

Random weights are used (``--preset full`` is the real architecture, UnAV-100 plan for i3d).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _memory_kib(pid: int) -> tuple[int, int]:
    """``(RSS, PSS)`` of one process in KiB (0, 0 when it is gone)."""
    rss = pss = 0
    try:
        for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


class MemorySampler(threading.Thread):
    """Peak memory of this process and all its descendants, sampled every ``period_s``."""

    def __init__(self, period_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.period_s = period_s
        self.stop = threading.Event()
        self.peak = {"pss_total_kib": 0, "rss_total_kib": 0, "rss_max_process_kib": 0, "processes": 0}
        self.breakdown: list[dict] = []  # per process at the PSS peak

    def run(self) -> None:
        while not self.stop.is_set():
            pids = [os.getpid(), *_descendants(os.getpid())]
            mem = [_memory_kib(p) for p in pids]
            p = self.peak
            if sum(m[1] for m in mem) > p["pss_total_kib"]:
                self.breakdown = sorted(
                    (
                        {"process": _process_name(pid), "pss_gib": _gib(m[1]), "rss_gib": _gib(m[0])}
                        for pid, m in zip(pids, mem)
                    ),
                    key=lambda r: -r["pss_gib"],
                )
            p["pss_total_kib"] = max(p["pss_total_kib"], sum(m[1] for m in mem))
            p["rss_total_kib"] = max(p["rss_total_kib"], sum(m[0] for m in mem))
            p["rss_max_process_kib"] = max(p["rss_max_process_kib"], max(m[0] for m in mem))
            p["processes"] = max(p["processes"], len(pids))
            self.stop.wait(self.period_s)


def _process_name(pid: int) -> str:
    try:
        args = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    name = args[0].decode(errors="replace")
    if name.endswith(("python", "python3")) and len(args) > 1:  # the script, not the interpreter
        name = args[1].decode(errors="replace")
    return os.path.basename(name)[:60]


def _gib(kib: int) -> float:
    return round(kib / 2**20, 3)


def long_video(args, names: list[str], options: dict, work: Path) -> dict:
    """One video of ``--long-video-s`` through the Ray or the local runner: peak memory and throughput."""
    from avel.datasets.store import StoreWriter
    from avel.datasets.synth import SynthConfig, generate
    from avel.pipeline.engine import build_stream_extractors, run_local
    from avel.pipeline.extract import ExtractConfig
    from avel.pipeline.jobs import VideoJob
    from avel.pipeline.ray_extract import RayExtraction

    t0 = time.perf_counter()
    if not (work / "data" / "videos").is_dir():  # a kept --work holds the same video already
        generate(
            SynthConfig(
                kind="unav100",
                videos=1,
                seed=0,
                size=args.size,
                min_duration_s=args.long_video_s,
                max_duration_s=args.long_video_s,
            ),
            work / "data",
        )
    gen_s = time.perf_counter() - t0
    (path,) = sorted((work / "data" / "videos").glob("*.mp4"))
    exts = build_stream_extractors(names, random_weights=True, preset=args.preset, overrides=options)
    runner = args.long_video_runner
    cfg = ExtractConfig(
        dataset="folder",
        videos=str(path.parent),
        extractors=names,
        random_weights=True,
        preset=args.preset,
        extractor_options=options,
        out=str(work / runner),
        runner=runner,
        batch_size=args.batch_size,
        decode_workers=int(args.decode_workers.split(",")[0]),
        chunk_s=args.chunk_s,
        threads_per_actor=args.threads_per_actor,
    )
    shutil.rmtree(work / runner, ignore_errors=True)
    writer = StoreWriter(work / runner, dataset="bench", streams={se.stream: se.spec() for se in exts})
    job = VideoJob(path.stem, path)
    sampler = MemorySampler()
    sampler.start()
    pipe = RayExtraction(cfg, exts) if runner == "ray" else None
    startup_s = 0.0
    try:
        if pipe is not None:
            startup_s = pipe.start()
        t1 = time.perf_counter()
        if pipe is not None:
            rep = pipe.run([job], writer)
        else:
            rep = run_local([job], exts, writer, batch_size=args.batch_size, chunk_s=args.chunk_s)
        run_s = time.perf_counter() - t1
    finally:
        if pipe is not None:
            pipe.close()
        sampler.stop.set()
        sampler.join()
    peak = sampler.peak
    return {
        "mode": "long_video",
        "runner": runner,
        "extractors": names,
        "preset": args.preset,
        "options": options,
        "video_s": args.long_video_s,
        "video_bytes": path.stat().st_size,
        "generate_s": round(gen_s, 1),
        "chunk_s": args.chunk_s,
        "batch_size": args.batch_size,
        "decode_workers": cfg.decode_workers,
        "threads_per_actor": pipe.threads if pipe else None,
        "startup_s": round(startup_s, 2),
        "run_s": round(run_s, 2),
        "windows": rep.windows,
        "videos_ok": rep.videos_ok,
        "failures": rep.failures,
        "windows_per_s": round(rep.windows / run_s, 2),
        "peak_memory_gib": {
            "pss_sum_all_processes": _gib(peak["pss_total_kib"]),
            "rss_sum_all_processes": _gib(peak["rss_total_kib"]),
            "rss_largest_process": _gib(peak["rss_max_process_kib"]),
            "processes": peak["processes"],
        },
        "at_peak_per_process_gib": sampler.breakdown,
        "memory_method": "/proc/<pid>/smaps_rollup of the driver and all its descendants every 0.2 s; "
        "PSS splits shared pages (object store) between the processes mapping them",
    }


def run_video_features_reference(args, jobs: list, out_dir: Path) -> dict:
    """``video_features_reference.py`` in a child process (video_features' imports, its working
    directory); returns its JSON (seconds of the timed loop, windows, checkpoint path)."""
    import subprocess
    import sys

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(args.video_features_repo), *args.video_features_pythonpath])
    if args.ffmpeg_dir:
        env["PATH"] = os.pathsep.join([str(args.ffmpeg_dir), env.get("PATH", "")])
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("video_features_reference.py")),
        "--repo",
        str(Path(args.video_features_repo).resolve()),
        "--out-dir",
        str(out_dir.resolve()),
        "--threads",
        str(args.threads),
        "--make-random-weights",
        *(str(j.path.resolve()) for j in jobs),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"video_features failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["missing"]:
        raise SystemExit(f"video_features extracted nothing for {result['missing']}:\n{done.stdout[-3000:]}")
    return result


def compare_rows(vf_dir: Path, store) -> dict:
    """video_features' rows against ours (same weights): differences next to the spread of
    the rows (how much rows differ between windows)."""
    import numpy as np

    diffs, spreads, corr = [], [], []
    for vid in store.videos():
        ours = store.read(vid, "i3d_rgb")
        theirs = np.load(vf_dir / f"{vid}_rgb.npy")
        n = min(len(ours), len(theirs))
        mean = ours.mean(axis=0)
        diffs.append(np.abs(ours[:n] - theirs[:n]))
        spreads.append(ours.std(axis=0).mean())
        corr += [float(np.corrcoef(ours[i] - mean, theirs[i] - mean)[0, 1]) for i in range(n)]
    d = np.concatenate(diffs)
    return {
        "max_abs_diff": float(d.max()),
        "mean_abs_diff": float(d.mean()),
        "row_spread_mean_std": float(np.mean(spreads)),
        "mean_correlation_of_deviations": float(np.mean(corr)),
    }


def throughput(args, names: list[str], options: dict, work: Path) -> dict:
    import torch
    from video_features_loop import run_video_features_loop

    from avel.datasets.store import FeatureStore, StoreWriter
    from avel.datasets.synth import SynthConfig, generate
    from avel.pipeline.decode import decode_video
    from avel.pipeline.engine import build_stream_extractors, decode_request, extract_batch, frames_for, run_local
    from avel.pipeline.extract import ExtractConfig
    from avel.pipeline.jobs import VideoJob
    from avel.pipeline.ray_extract import RayExtraction

    t0 = time.perf_counter()
    generate(
        SynthConfig(
            kind="unav100",
            videos=args.videos,
            seed=0,
            size=args.size,
            min_duration_s=args.duration_s,
            max_duration_s=args.duration_s,
        ),
        work / "data",
    )
    gen_s = time.perf_counter() - t0
    jobs = [VideoJob(p.stem, p) for p in sorted((work / "data" / "videos").glob("*.mp4"))]
    results: dict[str, dict] = {}

    def record(name: str, seconds: float, windows: int, **extra) -> None:
        results[name] = {
            "seconds": round(seconds, 3),
            "videos_per_s": round(len(jobs) / seconds, 3),
            "windows_per_s": round(windows / seconds, 3),
            "windows": windows,
            **extra,
        }

    weights: dict[str, str] = {}
    if args.video_features_repo:
        # (a) video_features itself; it writes the random checkpoint every stage then loads
        if names != ["i3d_rgb"] or args.preset != "full":
            raise SystemExit("--video-features-repo runs video_features' I3D: use --extractors i3d_rgb --preset full")
        vf = run_video_features_reference(args, jobs, work / "video_features")
        record("a_video_features", vf["seconds"], vf["windows"], tool="v-iashin/video_features (its own code)")
        (work / "weights").mkdir()
        shutil.copy(vf["checkpoint"], work / "weights" / "rgb_imagenet.pt")
        weights = {"i3d_rgb": str(work / "weights")}
        options = {**options, "i3d_rgb": {**options.get("i3d_rgb", {}), "bn_eps": 1e-5}}  # the hassony2 port's
    exts = build_stream_extractors(
        names, weights=weights, random_weights=not weights, preset=args.preset, overrides=options
    )
    specs = {se.stream: se.spec() for se in exts}
    request = decode_request(exts)
    cpu = torch.device("cpu")

    # first-call costs (kernel selection, allocations) of both batch shapes, for (a), (a2) and (c) alike
    for se in exts:
        ext = se.extractor
        shape, dtype = RayExtraction._window_shape(se)
        for b in (1, args.batch_size):
            extract_batch(ext, torch.zeros((1, *shape), dtype=getattr(torch, dtype)), batch_size=b, device=cpu)

    if not args.video_features_repo:
        # (a) video_features' loop re-created: per extractor, per video: re-encode, frame-by-frame
        # read, batch of one
        t0 = time.perf_counter()
        windows = run_video_features_loop(jobs, exts, work / "video_features")
        record("a_video_features", time.perf_counter() - t0, windows, tool="re-created (video_features_loop.py)")

    # (a2) the same sequential order with our decoder: one decode per video for every extractor
    # (no re-encode), batch of one window, no overlap
    writer = StoreWriter(work / "seq", dataset="bench", streams=specs)
    t0 = time.perf_counter()
    rep = run_local(jobs, exts, writer, batch_size=1, decode_timeout_s=None, chunk_s=1e9)
    record("a2_sequential_our_decoder", time.perf_counter() - t0, rep.windows)
    if results["a_video_features"]["windows"] != rep.windows:
        raise RuntimeError(
            f"(a) computed {results['a_video_features']['windows']} windows, (a2) {rep.windows}: not the same work"
        )
    if args.video_features_repo:
        results["a_video_features"]["rows_vs_a2"] = compare_rows(work / "video_features", FeatureStore(work / "seq"))

    # (b) the decode stage alone: decode once per video + each extractor's CPU resize/crop
    t0 = time.perf_counter()
    decoded = []
    for j in jobs:
        d = decode_video(j.path, **request)
        decoded.append(
            [
                frames_for(d, se.extractor.decode_spec)
                if se.extractor.modality == "video"
                else torch.from_numpy(d.audio)
                for se in exts
            ]
        )
    record("b_decode", time.perf_counter() - t0, rep.windows)

    # (c) the models alone on pre-cut windows of all videos, fixed full batches (no per-video padding)
    cut = [
        (se.extractor, torch.cat([se.extractor.windows(src[i]).data for src in decoded])) for i, se in enumerate(exts)
    ]
    del decoded
    n_windows = sum(w.shape[0] for _, w in cut)
    t0 = time.perf_counter()
    for ext, data in cut:
        for a in range(0, data.shape[0], args.batch_size):
            extract_batch(ext, data[a : a + args.batch_size], batch_size=args.batch_size, device=cpu)
    record("c_models", time.perf_counter() - t0, n_windows)
    del cut

    # (d) the Ray pipeline: start-up timed apart, then one steady-state run per decode-worker count
    workers = [int(n) for n in args.decode_workers.split(",")]
    cfg = ExtractConfig(
        dataset="folder",
        videos=str(work / "data" / "videos"),
        extractors=names,
        weights=weights,
        random_weights=not weights,
        preset=args.preset,
        extractor_options=options,
        out=str(work / "ray"),
        runner="ray",
        batch_size=args.batch_size,
        decode_workers=max(workers),
        chunk_s=args.chunk_s,
        threads_per_actor=args.threads_per_actor,
        actors_per_extractor=args.actors,
    )
    t0 = time.perf_counter()
    cfg.cluster.init_ray()
    ray_init_s = time.perf_counter() - t0
    pipe = RayExtraction(cfg, exts)
    try:
        pool_s = pipe.start(warm_up=True)
        for n in workers:
            pipe.cfg = dataclasses.replace(cfg, decode_workers=n)
            writer = StoreWriter(work / f"ray{n}", dataset="bench", streams=specs)
            t0 = time.perf_counter()
            rep = pipe.run(jobs, writer)
            seconds = time.perf_counter() - t0
            assert rep.videos_ok == len(jobs), rep.failures
            record(
                f"d_ray_{n}_decode_workers",
                seconds,
                rep.windows,
                with_startup_s=round(seconds + ray_init_s + pool_s, 3),
                busy_s={
                    "decode": round(rep.decode_s, 3),
                    "extract": round(rep.extract_s, 3),
                    "write": round(rep.write_s, 3),
                },
            )
        threads = pipe.threads
    finally:
        pipe.close()
        import ray

        ray.shutdown()

    a, a2, b, c = (
        results[k]["seconds"] for k in ("a_video_features", "a2_sequential_our_decoder", "b_decode", "c_models")
    )
    ratios = {}
    for n in workers:
        d = results[f"d_ray_{n}_decode_workers"]["seconds"]
        d_startup = results[f"d_ray_{n}_decode_workers"]["with_startup_s"]
        ratios[f"{n}_decode_workers"] = {
            "d_over_a": round(a / d, 3),
            "d_over_min_b_c": round(max(b, c) / d, 3),
            "d_over_a2": round(a2 / d, 3),
            "d_with_startup_over_a": round(a / d_startup, 3),
            "d_with_startup_over_a2": round(a2 / d_startup, 3),
        }
    return {
        "mode": "throughput",
        "extractors": names,
        "preset": args.preset,
        "options": options,
        "videos": len(jobs),
        "duration_s": args.duration_s,
        "size": args.size,
        "generate_s": round(gen_s, 1),
        "batch_size": args.batch_size,
        "threads_a_c": args.threads,
        "actors_per_extractor": args.actors,
        "threads_per_actor": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "chunk_s": args.chunk_s,
        "cpus": os.cpu_count(),
        "startup": {"ray_init_s": round(ray_init_s, 2), "actors_and_warm_up_s": round(pool_s, 2)},
        **results,
        "ratios (throughput; d = steady state, start-up excluded)": ratios,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractors", default="i3d_rgb")
    ap.add_argument("--preset", default="full", choices=["full", "tiny"])
    ap.add_argument("--options", default="{}", help='per-extractor config overrides, JSON: {"vgg19": {...}}')
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=128, help="synthetic frame side (px)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--decode-workers", default="1,2", help="comma-separated; one (d) run per value")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for (a), (a2) and (c)")
    ap.add_argument("--threads-per-actor", type=int, default=0, help="0: the CPUs divided among the actors")
    ap.add_argument("--actors", type=int, default=1, help="actors per extractor (d)")
    ap.add_argument("--chunk-s", type=float, default=30.0, help="the runners' default")
    ap.add_argument(
        "--long-video-s",
        type=float,
        default=0.0,
        help="measure peak memory of one video this long through the Ray runner instead",
    )
    ap.add_argument(
        "--long-video-runner", default="ray", choices=["ray", "local"], help="the runner --long-video-s measures"
    )
    ap.add_argument(
        "--video-features-repo",
        type=Path,
        default=None,
        help="a v-iashin/video_features checkout: (a) runs it (i3d_rgb only) instead of the re-creation",
    )
    ap.add_argument(
        "--video-features-pythonpath",
        nargs="*",
        default=[],
        help="directories with video_features' other imports (cv2, omegaconf)",
    )
    ap.add_argument("--ffmpeg-dir", type=Path, default=None, help="directory of an ffmpeg executable")
    ap.add_argument("--work", type=Path, default=None, help="keep the videos and stores here")
    ap.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        choices=["PASSIVE", "ACTIVE", "default"],
        help="OpenMP idle threads sleep (PASSIVE) or spin (ACTIVE) in every stage (the actors "
        "inherit it); spinning threads are 10x slower on a busy machine",
    )
    args = ap.parse_args()

    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # before torch loads OpenMP
    import torch

    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    options = json.loads(args.options)
    work = args.work or Path(tempfile.mkdtemp(prefix="avel-extract-bench-"))
    try:
        if args.long_video_s:
            report = long_video(args, names, options, work)
        else:
            report = throughput(args, names, options, work)
        print(json.dumps(report, indent=1, default=str))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
