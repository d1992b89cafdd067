"""The Ray runner on a two-node cluster on this machine: `ray start --head` plus a second
`ray start --address=...` node, then `avel extract --runner ray --address HEAD:PORT`.

The head offers no CPU (the usual layout of a Ray cluster: the head coordinates), the second
node two: decode tasks (one CPU each) can only run on the second node, so their data crosses
from its object store to the driver on the head. Extractor actors reserve no CPU and Ray may
place them on either node.

The nodes are started in their own sessions with a dedicated temp dir, and only their
processes are killed afterwards: `ray stop` would also kill every other Ray instance on the
machine (other tests, other users).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.store import FeatureStore
from avel.datasets.synth import SynthConfig, generate

STREAMS = ("vgg19", "vggish")
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs() -> dict[int, tuple[int, int, str]]:
    """``{pid: (ppid, process group, state)}`` of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            out[int(d)] = (int(fields[1]), int(fields[2]), fields[0])
    return out


def _kill_sessions(leaders: list[int]) -> None:
    """SIGKILL the process groups led by ``leaders`` and every descendant (Ray workers get
    process groups of their own)."""
    procs = _procs()
    doomed = {pid for pid, (_, pgrp, _) in procs.items() if pgrp in leaders}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in doomed} - doomed
        doomed |= more
        grew = bool(more)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _nodes_that_ran_jobs(session_logs: Path) -> set[str]:
    """``{node id: workers}`` of the Ray workers that ran tasks or actors of a job (not idle pool workers).

    Each worker writes ``worker-<worker id>-<job id>-<pid>.out`` for the job it serves and
    ``python-core-worker-<worker id>_<pid>.log``, which names its node (``node_id=...``).
    """
    job_workers = {
        m.group(1)
        for p in session_logs.glob("worker-*.out")
        if (m := re.match(r"worker-([0-9a-f]+)-([0-9a-f]+)-\d+\.out$", p.name)) and m.group(2) != "ffffffff"
    }
    nodes: dict[str, int] = {}
    for p in session_logs.glob("python-core-worker-*.log"):
        wid = p.name[len("python-core-worker-") :].split("_")[0]
        if wid in job_workers:
            m = re.search(r"node_id=([0-9a-f]+)", p.read_text(errors="replace"))
            if m:
                nodes[m.group(1)] = nodes.get(m.group(1), 0) + 1
    return nodes


NODES_SCRIPT = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(json.dumps({n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]}))
"""


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    generate(
        SynthConfig(kind="unav100", videos=4, seed=21, size=64, min_duration_s=2.0, max_duration_s=3.0, num_classes=2),
        root,
    )
    return root / "videos"


@pytest.mark.slow
@pytest.mark.cluster
def test_extraction_on_a_two_node_ray_cluster(videos, tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="avray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # token authentication (Ray's default for `ray start --head`): every node and the driver
    # need the same token; a fresh one keeps this cluster private to the test
    env.update(OMP_NUM_THREADS="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    leaders = []
    try:
        # started together: the second node retries until the head's GCS answers
        starts = [
            [
                RAY,
                "start",
                "--head",
                f"--port={port}",
                "--num-cpus=0",
                "--disable-usage-stats",
                f"--temp-dir={temp_dir}",
                "--include-dashboard=false",
                f"--ray-client-server-port={_free_port()}",
                f"--dashboard-port={_free_port()}",
            ],
            [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2", "--disable-usage-stats"],
        ]
        procs = []
        for cmd in starts:
            procs.append(
                subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            )
            leaders.append(procs[-1].pid)
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out.decode()[-3000:]

        (tmp_path / "job.yaml").write_text(
            f"runner: ray\ncluster: {{address: '127.0.0.1:{port}'}}\ndecode_workers: 2\n"
        )
        args = [
            "extract",
            "--config",
            str(tmp_path / "job.yaml"),
            "--dataset",
            "folder",
            "--videos",
            str(videos),
            "--extractors",
            ",".join(STREAMS),
            "--preset",
            "tiny",
            "--random-weights",
            "--batch-size",
            "8",
            "--json",
        ]
        run = subprocess.run(
            [sys.executable, "-m", "avel.cli.main", *args, "--out", str(tmp_path / "ray")],
            env=env,
            capture_output=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr.decode()[-3000:]
        report = json.loads(run.stdout.decode().splitlines()[0])
        assert report["videos_ok"] == 4 and report["videos_failed"] == 0

        # the second node ran the job's decode tasks (the head has no CPU for them)
        nodes = subprocess.run(
            [sys.executable, "-c", NODES_SCRIPT, f"127.0.0.1:{port}"], env=env, capture_output=True, timeout=120
        )
        assert nodes.returncode == 0, nodes.stderr.decode()[-3000:]
        cpus = json.loads(nodes.stdout.decode().splitlines()[-1])
        assert sorted(cpus.values()) == [0.0, 2.0]
        (worker_node,) = [n for n, c in cpus.items() if c == 2.0]
        logs = Path(temp_dir) / "session_latest" / "logs"
        ran = _nodes_that_ran_jobs(logs)
        assert worker_node in ran and set(ran) <= set(cpus), (ran, cpus)
    finally:
        _kill_sessions(leaders)
        shutil.rmtree(temp_dir, ignore_errors=True)

    res = CliRunner().invoke(cli, [*args, "--runner", "local", "--out", str(tmp_path / "local")])
    assert res.exit_code == 0, res.output
    ray_store, local = FeatureStore(tmp_path / "ray"), FeatureStore(tmp_path / "local")
    assert sorted(ray_store.videos()) == sorted(local.videos()) and len(local) == 4
    assert ray_store.verify() == [] and ray_store.errors() == []
    for v in local.videos():
        assert ray_store.meta(v).duration_s == local.meta(v).duration_s
        for s in STREAMS:
            # the Ray runner batches windows of several videos together; it currently matches
            # the local runner up to float rounding (bitwise equality is being worked on)
            np.testing.assert_allclose(ray_store[v][s], local[v][s], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(ray_store.times(v, s)[0], local.times(v, s)[0])
