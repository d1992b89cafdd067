"""`kill -9` of `avel extract` (local runner) at several moments, then a rerun: the store is
complete, holds every video once, passes its checksums and equals an uninterrupted run bitwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.store import FeatureStore, StoreError
from avel.datasets.synth import SynthConfig, generate

STREAMS = ("vgg19", "vggish")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Eight short videos and a job file committing a shard every two videos (batches of 2: the
    local runner carries windows across videos, so a video is written when its last batch is
    full; small batches keep commits and decodes interleaved)."""
    root = tmp_path_factory.mktemp("kill")
    generate(
        SynthConfig(kind="unav100", videos=8, seed=11, size=64, min_duration_s=1.5, max_duration_s=2.5, num_classes=2),
        root,
    )
    (root / "job.yaml").write_text(
        f"dataset: folder\nvideos: {root / 'videos'}\nextractors: [{', '.join(STREAMS)}]\npreset: tiny\n"
        "random_weights: true\nbatch_size: 2\nshard_max_videos: 2\ndevice: cpu\n"
    )
    return root


def _args(job, out):
    return ["extract", "--config", str(job / "job.yaml"), "--out", str(out), "--json"]


def _start(job, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "avel.cli.main", *_args(job, out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _shards_committed(store) -> int:
    try:
        return len(FeatureStore(store).manifest["shards"])  # snapshot + log tail
    except StoreError:
        return 0


def _kill_when(proc, condition, timeout_s=90.0) -> bool:
    """SIGKILL ``proc`` as soon as ``condition()`` holds; False when it finished first."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    assert proc.poll() is not None, "extraction neither finished nor reached the kill point"
    return False


def _children(pid) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def test_kill_9_at_any_moment_then_rerun_equals_an_uninterrupted_run(job, tmp_path):
    ref = tmp_path / "reference"
    res = CliRunner().invoke(cli, _args(job, ref))
    assert res.exit_code == 0, res.output
    store = tmp_path / "killed"
    killed_at = []

    # 1. right after the first shard is committed
    proc = _start(job, store)
    if _kill_when(proc, lambda: _shards_committed(store) >= 1):
        killed_at.append("after a commit")
    # 2. while a decode child process runs (mid-video, nothing of it buffered yet or some)
    before = _shards_committed(store)
    proc = _start(job, store)
    if _kill_when(proc, lambda: _shards_committed(store) > before and _children(proc.pid)):
        killed_at.append("while decoding")
    # 3. while a shard file is being written (its temp file exists); the window is a few ms
    for _ in range(3):
        proc = _start(job, store)
        if _kill_when(proc, lambda: any(n.startswith(".tmp-") for n in os.listdir(store / "shards"))):
            killed_at.append("while writing a shard")
            assert any(n.startswith(".tmp-") for n in os.listdir(store / "shards"))  # left behind
            break
        if proc.returncode == 0:
            break  # the run finished before a temp file was seen
    assert killed_at[:2] == ["after a commit", "while decoding"], killed_at
    interrupted = FeatureStore(store)
    assert interrupted.verify() == [] and len(interrupted) > 0  # committed shards are whole

    # rerun to completion (in this process: the same code, one torch thread like the runs above)
    res = CliRunner().invoke(cli, _args(job, store))
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.splitlines()[0])
    assert report["videos_skipped"] == len(interrupted) and report["videos_failed"] == 0

    a, b = FeatureStore(ref), FeatureStore(store)
    assert sorted(b.videos()) == sorted(a.videos()) and len(a) == 8
    assert b.verify() == [] and b.errors() == []
    manifest = FeatureStore(store).manifest
    listed = [v for shard in manifest["shards"] for v in shard["videos"]]
    assert sorted(listed) == sorted(set(listed)), "a video was committed twice"
    files = {os.path.basename(s["file"]) for s in manifest["shards"]}
    assert set(os.listdir(store / "shards")) == files  # no orphan shard, no temp file left
    for v in a.videos():
        assert a.meta(v) == b.meta(v)
        for s in STREAMS:
            np.testing.assert_array_equal(a[v][s], b[v][s])  # bitwise (CPU, deterministic)
            assert a[v][s].tobytes() == b[v][s].tobytes()
            np.testing.assert_array_equal(a.times(v, s)[0], b.times(v, s)[0])
            assert a.is_padded(v, s) == b.is_padded(v, s)
    print("killed at:", killed_at)
