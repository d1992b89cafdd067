"""Store read throughput: concatenated arrays + offsets (ours) vs one HDF5 group per video.

Writes the same synthetic UnAV-100-like features (I3D rgb + flow 1024 + 1024, VGGish 128,
T uniform in [min_rows, max_rows]) in both layouts with the same shard size, then reads every
video's streams in a random order, the access pattern of a shuffled training epoch, and
prints videos/s and MB/s for each, measured side by side in one run.

    python benchmarks/store_read_throughput.py [--videos 1000] [--out DIR] [--repeats 3]

The "group per video" variant stores ``/<video_id>/<stream>`` datasets (the layout of
per-video feature files folded into shards). Both read paths open each shard once and
keep it open, as the FeatureStore does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from avel.datasets.sampling import UNAV100_I3D, UNAV100_VGGISH
from avel.datasets.store import FeatureStore, StoreWriter, StreamSpec

STREAMS = {"i3d_rgb": 1024, "i3d_flow": 1024, "vggish": 128}


def _features(rng: np.random.Generator, t: int) -> dict[str, np.ndarray]:
    return {s: rng.standard_normal((t, d), dtype=np.float32) for s, d in STREAMS.items()}


def write_ours(root: Path, lengths: list[int], seed: int, shard_videos: int) -> float:
    specs = {s: StreamSpec("bench", UNAV100_VGGISH if s == "vggish" else UNAV100_I3D, (d,)) for s, d in STREAMS.items()}
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with StoreWriter(root, dataset="bench", streams=specs, shard_max_videos=shard_videos, shard_max_bytes=1 << 40) as w:
        for i, t in enumerate(lengths):
            w.add(f"v{i:05d}", _features(rng, t))
    return time.perf_counter() - t0


def write_groups(root: Path, lengths: list[int], seed: int, shard_videos: int) -> float:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    f = None
    for i, t in enumerate(lengths):
        if i % shard_videos == 0:
            if f is not None:
                f.close()
            f = h5py.File(root / f"shard-{i // shard_videos:04d}.h5", "w")
        g = f.create_group(f"v{i:05d}")
        for s, a in _features(rng, t).items():
            g.create_dataset(s, data=a)
            g.create_dataset(f"{s}_start_s", data=np.arange(t) * 0.32)
    f.close()
    return time.perf_counter() - t0


def read_ours(root: Path, order: list[str]) -> tuple[float, int]:
    st = FeatureStore(root)
    nbytes = 0
    t0 = time.perf_counter()
    for vid in order:
        view = st[vid]
        for s in STREAMS:
            nbytes += view[s].nbytes
    dt = time.perf_counter() - t0
    st.close()
    return dt, nbytes


def read_groups(root: Path, order: list[str], shard_videos: int) -> tuple[float, int]:
    files: dict[int, h5py.File] = {}
    nbytes = 0
    t0 = time.perf_counter()
    for vid in order:
        k = int(vid[1:]) // shard_videos
        f = files.get(k)
        if f is None:
            f = files[k] = h5py.File(root / f"shard-{k:04d}.h5", "r")
        g = f[vid]
        for s in STREAMS:
            nbytes += g[s][()].nbytes
            g[f"{s}_start_s"][()]
    dt = time.perf_counter() - t0
    for f in files.values():
        f.close()
    return dt, nbytes


def _drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--min-rows", type=int, default=30, help="shortest video in rows (30 ~ 10 s at 0.32 s)")
    ap.add_argument("--max-rows", type=int, default=187, help="longest video in rows (187 ~ 60 s)")
    ap.add_argument("--shard-videos", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a temp dir, removed)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="avel-bench-"))
    rng = random.Random(args.seed)
    lengths = [rng.randint(args.min_rows, args.max_rows) for _ in range(args.videos)]
    try:
        w_ours = write_ours(work / "ours", lengths, args.seed, args.shard_videos)
        w_groups = write_groups(work / "groups", lengths, args.seed, args.shard_videos)
        size_ours = sum(p.stat().st_size for p in (work / "ours").rglob("*.h5"))
        size_groups = sum(p.stat().st_size for p in (work / "groups").rglob("*.h5"))
        ids = [f"v{i:05d}" for i in range(args.videos)]
        cold = _drop_page_cache()
        report = {
            "videos": args.videos,
            "rows_total": sum(lengths),
            "write_seconds": {"concatenated": round(w_ours, 2), "group_per_video": round(w_groups, 2)},
            "file_mib": {"concatenated": round(size_ours / 2**20, 1), "group_per_video": round(size_groups / 2**20, 1)},
        }
        modes = [("cold_page_cache", True), ("warm_page_cache", False)] if cold else [("warm_page_cache", False)]
        for mode, drop in modes:
            report[mode] = _measure(work, ids, args, drop)
        print(json.dumps(report, indent=1))
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


def _measure(work: Path, ids: list[str], args: argparse.Namespace, drop: bool) -> dict:
    results: dict[str, dict[str, list[float]]] = {"concatenated": {}, "group_per_video": {}}
    for rep in range(args.repeats):
        order = ids[:]
        random.Random(rep).shuffle(order)
        # Alternate which layout goes first so neither always profits from a warmer cache.
        runs = [
            ("concatenated", lambda order=order: read_ours(work / "ours", order)),
            ("group_per_video", lambda order=order: read_groups(work / "groups", order, args.shard_videos)),
        ]
        if rep % 2:
            runs.reverse()
        for name, fn in runs:
            if drop:
                _drop_page_cache()
            dt, nbytes = fn()
            results[name].setdefault("seconds", []).append(dt)
            results[name]["bytes"] = [nbytes]
    report = {}
    for name, r in results.items():
        best = min(r["seconds"])
        report[name] = {
            "best_seconds": round(best, 3),
            "videos_per_s": round(args.videos / best, 1),
            "mb_per_s": round(r["bytes"][0] / best / 1e6, 1),
        }
    report["speedup_concatenated_over_groups"] = round(
        report["group_per_video"]["best_seconds"] / report["concatenated"]["best_seconds"], 2
    )
    return report


if __name__ == "__main__":
    main()
