"""Two `avel extract` processes (local runner) on one store share the videos: each video is
extracted and committed exactly once. Then manifest.json is lost and the job rerun: nothing is
lost or redone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from avel.datasets.store import FeatureStore
from avel.datasets.synth import SynthConfig, generate

STREAMS = ("vgg19", "vggish")


@pytest.mark.slow
def test_two_extract_processes_share_one_store(tmp_path):
    generate(
        SynthConfig(kind="unav100", videos=10, seed=5, size=64, min_duration_s=1.5, max_duration_s=2.5, num_classes=2),
        tmp_path,
    )
    (tmp_path / "job.yaml").write_text(
        f"dataset: folder\nvideos: {tmp_path / 'videos'}\nextractors: [{', '.join(STREAMS)}]\npreset: tiny\n"
        "random_weights: true\nbatch_size: 8\nshard_max_videos: 2\ndevice: cpu\nrunner: local\n"
    )
    store = tmp_path / "store"
    args = [
        sys.executable,
        "-m",
        "avel.cli.main",
        "extract",
        "--config",
        str(tmp_path / "job.yaml"),
        "--out",
        str(store),
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    reports = [json.loads(out.splitlines()[0]) for out, _ in outs]
    assert sum(r["videos_ok"] for r in reports) == 10, reports  # each video extracted by one writer only
    assert all(r["videos_failed"] == 0 for r in reports)
    st = FeatureStore(store)
    listed = [v for sh in st.manifest["shards"] for v in sh["videos"]]
    assert len(listed) == len(set(listed)) == 10
    assert st.verify() == [] and st.errors() == []
    assert all(set(st.video_streams(v)) == set(STREAMS) for v in st.videos())
    # manifest.json lost (a bad copy, a sync tool): the rerun keeps and skips everything
    (store / "manifest.json").unlink()
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    again = json.loads(res.stdout.splitlines()[0])
    assert again["videos_skipped"] == 10 and again["videos_ok"] == 0
    st2 = FeatureStore(store)
    assert sorted(st2.videos()) == sorted(st.videos()) and st2.verify() == []
    assert not (store / "deletions.jsonl").exists()
