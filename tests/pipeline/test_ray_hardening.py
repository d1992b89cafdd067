"""Embedded Ray: loopback only, stdout of `--json` is the JSON alone, SIGINT / SIGTERM stop
every process it started (issue 14). Each test runs `avel extract --runner ray` in a
subprocess (benchmarks/ray_interrupt.py does the watching; it prints the linger figures)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from avel.datasets.store import FeatureStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ray_interrupt  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return ray_interrupt.make_videos(tmp_path_factory.mktemp("ray_hardening"), 30)


def _run_driver_script(script: str) -> Any:
    """Run ``script`` as a fresh driver process (``ray_interrupt`` importable, without
    ``AVEL_LEAN_TEST`` in its environment); the JSON of its last stdout line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("AVEL_LEAN_TEST", None)
    res = subprocess.run(
        [sys.executable, "-c", script, str(Path(ray_interrupt.__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_embedded_ray_listens_on_loopback_only():
    script = (
        "import json, os, sys; sys.path.insert(0, sys.argv[1]); import ray_interrupt as ri\n"
        "from avel.pipeline.cluster import ClusterConfig, shutdown_ray\n"
        "assert ClusterConfig(num_cpus=1).init_ray()\nimport ray\n"
        "ray.get(ray.remote(lambda: 1).remote())\n"
        "print(json.dumps(ri.listening_sockets(ri.process_tree(os.getpid()))))\nshutdown_ray()\n"
    )
    sockets = _run_driver_script(script)
    assert len(sockets) >= 3, sockets  # GCS, raylet, object manager, workers...
    assert all(ray_interrupt.is_loopback(ip) for ip, _, _ in sockets), sockets


def test_lean_embedded_ray_starts_only_what_a_job_uses_and_gives_workers_their_environment():
    """``init_ray(lean=True, worker_env=...)`` (the extraction runner's): no autoscaler monitor,
    log monitor or API server, every worker (tasks and actors, no ``runtime_env``) sees
    ``worker_env`` while the driver's own environment is left as it was, loopback only, and
    :func:`shutdown_ray` leaves no process behind."""
    script = (
        "import json, os, sys; sys.path.insert(0, sys.argv[1]); import ray_interrupt as ri\n"
        "from avel.pipeline.cluster import ClusterConfig, embedded_worker_env, shutdown_ray\n"
        "assert ClusterConfig(num_cpus=1).init_ray(lean=True, worker_env={'AVEL_LEAN_TEST': 'on'})\n"
        "import ray\n"
        "env = lambda: os.environ.get('AVEL_LEAN_TEST')\n"
        "A = ray.remote(num_cpus=0)(type('A', (), {'env': lambda self: env()}))\n"
        "seen = [ray.get(ray.remote(env).remote()), ray.get(A.remote().env.remote())]\n"
        "tree = ri.process_tree(os.getpid()) - {os.getpid()}\n"
        "cmds = [ri.process_name(p) for p in tree]\n"
        "out = dict(seen=seen, driver=env(), worker_env=embedded_worker_env(), cmds=cmds,\n"
        "           sockets=ri.listening_sockets(tree))\n"
        "shutdown_ray()\n"
        "out['left'] = sorted(p for p in tree if ri.start_time(p) is not None)\n"
        "print(json.dumps(out))\n"
    )
    out = _run_driver_script(script)
    assert out["seen"] == ["on", "on"] and out["driver"] is None, out
    assert out["worker_env"] == {"AVEL_LEAN_TEST": "on"}
    assert any("raylet" in c for c in out["cmds"]) and any("gcs_server" in c for c in out["cmds"]), out["cmds"]
    for skipped in ("monitor.py", "log_monitor.py", "dashboard.py"):  # the head processes left out
        assert not any(skipped in c for c in out["cmds"]), (skipped, out["cmds"])
    assert out["sockets"] and all(ray_interrupt.is_loopback(ip) for ip, _, _ in out["sockets"]), out["sockets"]
    assert not out["left"], out


def test_ray_json_stdout_is_the_json_alone_and_bad_headers_are_not_retryable(videos, tmp_path):
    """30 good videos plus an AV1 one and one whose sample table claims 2^31 frames (decord
    aborts the process on it; its audio alone decodes fine, so vgg19 is extracted too): the Ray
    runner records both as the videos' fault."""
    from tests.pipeline.test_bad_videos_hardening import _av1, _stts

    mixed = tmp_path / "videos"
    shutil.copytree(videos, mixed)
    _stts(videos / sorted(p.name for p in videos.iterdir())[0], mixed / "billions.mp4", count=2**31, delta=2**30)
    try:
        _av1(mixed / "av1.mp4")
        bad = {"billions", "av1"}
    except pytest.skip.Exception:
        bad = {"billions"}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "avel.cli.main",
            "extract",
            "--dataset",
            "folder",
            "--videos",
            str(mixed),
            "--extractors",
            "vgg19,vggish",
            "--preset",
            "tiny",
            "--random-weights",
            "--runner",
            "ray",
            "--json",
            "--decode-workers",
            "1",
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    report = json.loads(res.stdout)  # nothing else on stdout
    assert report["videos_ok"] == 30 and report["videos_failed"] == len(bad)
    records = [json.loads(line) for line in (tmp_path / "s" / "errors.jsonl").read_text().splitlines()]
    assert {r["video_id"] for r in records} == bad
    assert all(r["error_type"] == "DecodeError" and not r.get("retryable") for r in records), records


def test_a_killed_actor_is_retried_and_json_stdout_stays_the_report_alone(videos, tmp_path):
    """``avel extract --runner ray --json`` whose extractor actor is SIGKILLed mid-run (an OOM
    kill, a crash): Ray restarts it and retries its calls, every video is extracted, and Ray's
    notes on the retried calls go to stderr; stdout holds the JSON report alone."""
    job = tmp_path / "job.yaml"
    job.write_text("shard_max_videos: 1\n")
    out = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = ["--dataset", "folder", "--videos", str(videos), "--extractors", "vgg19,vggish", "--preset", "tiny"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "avel.cli.main", "extract", "--config", str(job), *args, "--random-weights"]
        + ["--runner", "ray", "--json", "--decode-workers", "1", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    killed = None
    try:
        while proc.poll() is None and killed is None:
            if ray_interrupt.committed_videos(out) >= 3:  # inside the run: its actors are extracting
                for pid in ray_interrupt.process_tree(proc.pid):
                    if any(b"_ExtractorActor" in a for a in ray_interrupt.cmdline(pid)):
                        os.kill(pid, signal.SIGKILL)
                        killed = pid
                        break
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed is not None, "no actor was killed while the run went on: the test tested nothing"
    assert proc.returncode == 0, stderr[-2000:]
    report = json.loads(stdout)  # nothing else on stdout
    assert report["videos_ok"] == 30 and report["videos_failed"] == 0, report
    assert "retries remaining" in stderr or "worker died" in stderr, stderr[-2000:]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_ray_run_stops_every_process(videos, tmp_path, sig, code):
    # both tiny extractors, one video per shard, the signal after the third commit: inside the
    # run on any machine (a fixed 5 s after the raylet started was its end on a fast one)
    job = tmp_path / "job.yaml"
    job.write_text("shard_max_videos: 1\n")
    trial = ray_interrupt.interrupt_trial(
        videos,
        tmp_path / "s",
        sig=sig,
        after_s=0.0,
        after_videos=3,
        extra_args=("--extractors", "vgg19,vggish", "--config", str(job)),
    )
    assert trial["exit_code"] == code, trial
    assert 3 <= len(FeatureStore(tmp_path / "s").videos()) < 30, trial  # what was committed stays
    assert not trial["still_alive"], trial
    # every process is gone when the command has exited (none left to time out on its own)
    assert trial["linger_s"] - trial["exit_s"] < 2.0, trial
    assert "Traceback" not in trial["stderr_tail"], trial["stderr_tail"]
