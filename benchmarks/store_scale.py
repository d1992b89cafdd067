"""Store v2 at scale: commit latency from 1k to 1M videos, open time, one video's read latency,
and 1/2/4 concurrent `avel extract` writers on one store.

Part 1 builds a store of ``--videos`` (default 1,000,000) tiny videos through the real
StoreWriter (one row of 4 floats per video and stream, two streams, ``--shard-videos`` videos
per shard as in a real run), timing every commit: ``flush()`` as a whole (build the HDF5
image, write, fsync, lock, log append, fsync) and the part under the store lock. It prints
p50/p99 over the commits that brought the store to each size, then the time to open the
store (compacted snapshot; and the worst case: snapshot lost, whole log replayed) and the
latency of reading one video's rows (first read of a shard, which opens it; later reads).

Part 2 (``--writers 1,2,4``) runs that many `avel extract` processes (local runner, tiny
presets, one torch thread each) on one store over a synthetic folder of short videos and
prints the total throughput relative to one writer, and checks every video is committed once.

    python benchmarks/store_scale.py                       # both parts
    python benchmarks/store_scale.py --videos 100000 --writers ''
    python benchmarks/store_scale.py --dir D --reuse --writers ''   # the store built in D earlier:
        # open, read, then 200 more commits at its size (e.g. 1M videos)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avel.datasets import store as store_mod  # noqa: E402
from avel.datasets import store_log  # noqa: E402
from avel.datasets.sampling import UNAV100_I3D, UNAV100_VGGISH  # noqa: E402
from avel.datasets.store import FeatureStore, StoreWriter, StreamSpec  # noqa: E402

SPECS = {"rgb": StreamSpec("i3d", UNAV100_I3D, (4,)), "vggish": StreamSpec("vggish", UNAV100_VGGISH, (4,))}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1e3


class _TimedLock:
    """The store lock, timing how long it is held (the serialised part of a commit)."""

    held_s: list[float] = []
    real = staticmethod(store_log.store_lock)

    def __init__(self, r):
        self.cm = self.real(r)

    def __enter__(self):
        self.cm.__enter__()
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.held_s.append(time.perf_counter() - self.t0)
        return self.cm.__exit__(*exc)


def _timed_commits(
    w: StoreWriter, first: int, videos: int, shard_videos: int
) -> tuple[list[float], list[float], list[int]]:
    """Add ``videos`` videos (ids from ``first``) committing every ``shard_videos``; returns the
    flush and locked seconds of each commit and the store size after it."""
    rows = {"rgb": np.ones((1, 4), np.float32), "vggish": np.ones((1, 4), np.float32)}
    flush_s: list[float] = []
    lock_s: list[float] = []
    sizes: list[int] = []
    store_mod.store_lock = _TimedLock
    try:
        for start in range(first, first + videos, shard_videos):
            for i in range(start, min(first + videos, start + shard_videos)):
                w.add(f"video-{i:07d}", rows)
            _TimedLock.held_s.clear()
            t0 = time.perf_counter()
            w.flush()
            flush_s.append(time.perf_counter() - t0)
            lock_s.append(sum(_TimedLock.held_s))
            sizes.append(min(first + videos, start + shard_videos))
    finally:
        store_mod.store_lock = _TimedLock.real
    return flush_s, lock_s, sizes


def _commit_header() -> None:
    print(
        f"{'store size':>12} {'commits':>8} {'flush p50':>10} {'flush p99':>10} {'locked p50':>11} {'locked p99':>11}"
    )


def _commit_row(size: int, f: list[float], g: list[float]) -> None:
    print(
        f"{size:>12,} {len(f):>8} {_pct(f, 50):>8.1f}ms {_pct(f, 99):>8.1f}ms {_pct(g, 50):>9.2f}ms {_pct(g, 99):>9.2f}ms"
    )


def commit_scaling(root: Path, videos: int, shard_videos: int, *, reuse: bool = False) -> None:
    if reuse:  # an existing store (--dir DIR --reuse): open and read, then 200 more commits
        open_and_read(root)
        return commits_on_existing(root, shard_videos)
    checkpoints = [c for c in (1_000, 10_000, 100_000, 1_000_000) if c <= videos] or [videos]
    t_build = time.perf_counter()
    w = StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=10**9, shard_max_bytes=1 << 40)
    flush_s, lock_s, sizes = _timed_commits(w, 0, videos, shard_videos)
    t0 = time.perf_counter()
    w.close()
    close_s = time.perf_counter() - t0
    build_s = time.perf_counter() - t_build
    print(
        f"built {videos:,} videos in {len(sizes):,} shards of {shard_videos} in {build_s:.0f} s "
        f"(closing the writer, which writes the snapshot: {close_s:.2f} s)"
    )
    _commit_header()
    lo = 0
    for c in checkpoints:  # the last 200 commits that brought the store from the previous checkpoint to c
        idx = [k for k, n in enumerate(sizes) if lo < n <= c][-200:]
        _commit_row(c, [flush_s[k] for k in idx], [lock_s[k] for k in idx])
        lo = c
    open_and_read(root)


def commits_on_existing(root: Path, shard_videos: int, commits: int = 200) -> None:
    """``commits`` more commits on the store in ``root`` (at its size, e.g. 1M videos)."""
    t0 = time.perf_counter()
    w = StoreWriter(root, dataset="unav100", streams=SPECS, shard_max_videos=10**9, shard_max_bytes=1 << 40)
    open_s = time.perf_counter() - t0
    size = len(w.committed())
    first = 1 + max(int(v.split("-")[1]) for v in w.committed())
    flush_s, lock_s, _ = _timed_commits(w, first, commits * shard_videos, shard_videos)
    t0 = time.perf_counter()
    w.close()
    print(
        f"writer opened on {size:,} videos in {open_s:.2f} s; closed (snapshot written) in {time.perf_counter() - t0:.2f} s"
    )
    _commit_header()
    _commit_row(size, flush_s, lock_s)


def open_and_read(root: Path) -> None:
    log_mb = (root / store_log.LOG).stat().st_size / 2**20
    snap = root / store_log.MANIFEST
    index_files = list((root / "snapshot").glob("index-*.bin"))
    snap_mb = (snap.stat().st_size + sum(p.stat().st_size for p in index_files[-1:])) / 2**20
    opens = []
    for _ in range(3):
        t0 = time.perf_counter()
        st = FeatureStore(root)
        opens.append(time.perf_counter() - t0)
    kind = "binary index + manifest.json" if index_files else "JSON manifest"
    print(
        f"open (snapshot: {kind}, {snap_mb:.1f} MB; empty log tail): best of 3 {min(opens) * 1e3:.1f} ms, "
        f"worst {max(opens) * 1e3:.1f} ms, {len(st):,} videos"
    )
    shutil.move(snap, root / "manifest.json.bench")
    t0 = time.perf_counter()
    st = FeatureStore(root)
    replay_s = time.perf_counter() - t0
    shutil.move(root / "manifest.json.bench", snap)
    print(f"open, snapshot lost (whole {log_mb:.1f} MB log replayed): {replay_s:.3f} s")
    st = FeatureStore(root)
    t0 = time.perf_counter()
    ids = st.videos()
    print(f"list all {len(ids):,} video ids: {time.perf_counter() - t0:.3f} s")
    t0 = time.perf_counter()
    set(json.loads(json.dumps(ids)))
    print(
        f"machine calibration: a set of {len(ids):,} fresh id strings built in {time.perf_counter() - t0:.3f} s "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    rng = np.random.default_rng(0)
    n_shards = len(st.state.shards)
    picked = []
    for k in rng.choice(n_shards, size=min(300, n_shards), replace=False):  # one video per shard
        in_shard = st.state.shard_videos(int(k))
        picked.append((int(k), in_shard[int(rng.integers(len(in_shard)))]))
    for cache in ("cold", "warm"):
        if cache == "cold":  # evict these shards' pages (clean pages: nothing is lost)
            for k, _ in picked:
                fd = os.open(root / st.state.shards[k]["file"], os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        st = FeatureStore(root)  # no shard open yet
        first, again, other = [], [], []
        for _, vid in picked:
            for s, out in (("rgb", first), ("rgb", again), ("vggish", other)):
                t0 = time.perf_counter()
                st[vid][s]
                out.append(time.perf_counter() - t0)
        print(
            f"read one video's rows (checked), {len(first)} videos of distinct shards, page cache {cache}: first read "
            f"in its shard (opens it) p50 {_pct(first, 50):.2f} ms, p99 {_pct(first, 99):.2f} ms; the same rows "
            f"again p50 {_pct(again, 50):.3f} ms, p99 {_pct(again, 99):.3f} ms; another stream of the open shard "
            f"p50 {_pct(other, 50):.3f} ms, p99 {_pct(other, 99):.3f} ms"
        )


def concurrent_writers(work: Path, counts: list[int], videos: int) -> None:
    from avel.datasets.synth import SynthConfig, generate

    data = work / "synth"
    generate(
        SynthConfig(
            kind="unav100", videos=videos, seed=3, size=64, min_duration_s=2.0, max_duration_s=3.0, num_classes=2
        ),
        data,
    )
    job = work / "job.yaml"
    job.write_text(
        f"dataset: folder\nvideos: {data / 'videos'}\nextractors: [vgg19, vggish]\npreset: tiny\n"
        "random_weights: true\nbatch_size: 8\nshard_max_videos: 4\ndevice: cpu\nrunner: local\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    base = None
    print(
        f"{videos} synthetic videos (2-3 s, 64 px), extractors vgg19 + vggish, tiny preset, local runner, "
        f"1 torch thread per process, {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}"
    )
    for n in counts:
        out = work / f"store-{n}"
        args = [sys.executable, "-m", "avel.cli.main", "extract", "--config", str(job), "--out", str(out), "--json"]
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)
        ]
        outs = [p.communicate() for p in procs]
        wall = time.perf_counter() - t0
        bad = [err[-500:] for p, (_, err) in zip(procs, outs) if p.returncode != 0]
        if bad:
            raise SystemExit(f"{n} writers: a process failed: {bad[0]}")
        reports = [json.loads(o.splitlines()[0]) for o, _ in outs]
        st = FeatureStore(out)
        listed = [v for sh in st.manifest["shards"] for v in sh["videos"]]
        once = len(listed) == len(set(listed)) == videos and sum(r["videos_ok"] for r in reports) == videos
        rate = videos / wall
        run_s = max(r["wall_s"] for r in reports)  # the extraction loops, without process start-up
        base = base or (rate, videos / run_s)
        print(
            f"{n} writer(s): {wall:6.1f} s wall, {rate:5.2f} videos/s ({rate / base[0]:4.2f}x one writer); "
            f"extraction loops {run_s:6.1f} s, {videos / run_s:5.2f} videos/s ({videos / run_s / base[1]:4.2f}x); "
            f"per writer {[r['videos_ok'] for r in reports]}, every video exactly once: {once}, "
            f"verify: {'ok' if not st.verify() else 'PROBLEMS'}, load average {os.getloadavg()[0]:.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=1_000_000)
    ap.add_argument("--shard-videos", type=int, default=256)
    ap.add_argument("--writers", default="1,2,4", help="comma-separated writer counts ('' to skip)")
    ap.add_argument("--writer-videos", type=int, default=24)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir, removed)")
    ap.add_argument("--reuse", action="store_true", help="part 1: only open and read the store already in --dir")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="store_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.videos:
            commit_scaling(work / "scale", args.videos, args.shard_videos, reuse=args.reuse)
        if args.writers:
            concurrent_writers(work, [int(x) for x in args.writers.split(",")], args.writer_videos)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
