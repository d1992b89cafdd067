"""The Ray runner: chunked decode, bitwise equality with the local runner, surviving a killed
actor or decode worker, resuming after ``kill -9`` of the driver; fixed-shape batches (both runners)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from avel.datasets.store import FeatureStore, StoreError, StoreWriter
from avel.datasets.synth import SynthConfig, generate
from avel.pipeline.engine import build_stream_extractors, extract_batch, frames_for, rows_per_chunk
from avel.pipeline.extract import ExtractConfig, run_extract

# overlapping windows in both modalities (stride < window), several rows per 1-s chunk
EXTRACTORS = ["vgg19", "vggish"]
OPTIONS = {"vgg19": {"fps": 8.0, "window_frames": 8, "stride_frames": 4}, "vggish": {"hop_s": 0.32}}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_videos")
    generate(
        SynthConfig(kind="unav100", videos=6, seed=11, size=64, min_duration_s=1.5, max_duration_s=4.5, num_classes=3),
        root,
    )
    return root / "videos"


def _config(videos: Path, out: Path, **kw) -> ExtractConfig:
    base = dict(
        dataset="folder",
        videos=str(videos),
        out=str(out),
        extractors=EXTRACTORS,
        random_weights=True,
        preset="tiny",
        extractor_options=OPTIONS,
        batch_size=8,
        threads_per_actor=1,
        decode_workers=2,
    )
    return ExtractConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def local_store(videos, tmp_path_factory):
    """The reference: local runner, whole videos in one chunk, this process's single thread."""
    out = tmp_path_factory.mktemp("ray_ref") / "local"
    report = run_extract(_config(videos, out, runner="local", chunk_s=60.0, device="cpu"))
    assert report["videos_ok"] == 6 and not report["failures"], report
    return FeatureStore(out)


def _assert_same_store(got: FeatureStore, want: FeatureStore) -> None:
    assert sorted(got.videos()) == sorted(want.videos())
    assert not got.verify(), got.verify()  # sizes, sha256, per-video CRCs
    for v in want.videos():
        for s in EXTRACTORS:
            np.testing.assert_array_equal(got[v][s], want[v][s], err_msg=f"{v} {s}")
            np.testing.assert_array_equal(got.times(v, s)[0], want.times(v, s)[0])


@pytest.fixture(scope="module")
def ray_instance():
    """One embedded Ray instance for the in-process tests of this module (runs reuse it)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_fixed_batch_rows_do_not_depend_on_neighbours():
    """A window's row is bitwise the same whatever shares its (fixed-size) batch and wherever it sits."""
    gen = torch.Generator().manual_seed(0)
    for se in build_stream_extractors(EXTRACTORS, random_weights=True, preset="tiny", overrides=OPTIONS):
        ext = se.extractor
        if ext.modality == "audio":
            data = torch.rand(12, ext.plan.window_units + ext.context_samples, generator=gen) * 2 - 1
        else:
            side = ext.decode_spec.size_hw[0]
            data = (torch.rand(12, ext.plan.window_units, side, side, 3, generator=gen) * 255).to(torch.uint8)
        alone = extract_batch(ext, data[:1], batch_size=4, device=torch.device("cpu"))  # padded: 1 of 4
        for pos in range(4):
            batch = data[4 + pos : 8 + pos].clone()
            batch[pos] = data[0]
            rows = extract_batch(ext, batch, batch_size=4, device=torch.device("cpu"))
            np.testing.assert_array_equal(rows[pos], alone[0], err_msg=f"{se.stream} at position {pos}")
        with pytest.raises(ValueError, match="do not fit"):
            extract_batch(ext, data[:5], batch_size=4, device=torch.device("cpu"))


def test_decode_chunks_are_bounded_and_cut_the_whole_video_windows(videos):
    """Chunk tasks ship about chunk_s seconds of frames each, and their windows are the video's."""
    from avel.extractors.base import cut_audio_windows, cut_video_windows
    from avel.pipeline.decode import decode_video
    from avel.pipeline.ray_extract import RayExtraction, _decode_chunk

    path = max(videos.glob("*.mp4"), key=lambda p: p.stat().st_size)
    exts = build_stream_extractors(EXTRACTORS, random_weights=True, preset="tiny", overrides=OPTIONS)
    pipe = RayExtraction(_config(videos, Path("unused")), exts)
    video_stream, audio_stream = pipe.streams
    chunk_s = 1.0
    whole = decode_video(path, **pipe.request)
    want_video = cut_video_windows(frames_for(whole, video_stream.decode_spec), video_stream.plan).data.numpy()
    want_audio = cut_audio_windows(
        torch.from_numpy(whole.audio), audio_stream.plan, context_samples=audio_stream.context_samples
    ).data.numpy()

    info, vid_payload, aud_payload = _decode_chunk(str(path), pipe.request, pipe.streams, 0, chunk_s, None)
    assert info["n_chunks"] >= 3 and not info["errors"]
    wave, starts = aud_payload  # the audio track comes whole with chunk 0
    got_audio = wave[starts[:, None] + np.arange(want_audio.shape[1])]
    np.testing.assert_array_equal(got_audio, want_audio)
    per_chunk = rows_per_chunk(video_stream.plan, chunk_s)
    max_frames = (per_chunk - 1) * video_stream.plan.step_units + video_stream.plan.window_units
    windows = []
    for k in range(info["n_chunks"]):
        if k:
            info_k, vid_payload = _decode_chunk(str(path), pipe.request, [video_stream], k, chunk_s, info["totals"])
            assert info_k["rows"]["vgg19"] <= per_chunk
        frames, index = vid_payload
        assert frames.shape[0] <= max_frames  # memory per task bounded by the chunk, not the video
        windows.append(frames[index])
    np.testing.assert_array_equal(np.concatenate(windows), want_video)


@pytest.mark.slow
def test_ray_runner_chunked_equals_local_runner_bitwise(videos, local_store, ray_instance, tmp_path):
    """Chunks of 1 s, windows of several videos per batch, 2 decode workers: the same bytes."""
    report = run_extract(_config(videos, tmp_path / "ray", runner="ray", chunk_s=1.0))
    assert report["videos_ok"] == 6 and not report["failures"], report
    _assert_same_store(FeatureStore(tmp_path / "ray"), local_store)
    # rerun: everything committed is skipped
    report = run_extract(_config(videos, tmp_path / "ray", runner="ray", chunk_s=1.0))
    assert report["videos_ok"] == 0 and report["videos_skipped"] == 6


@pytest.mark.slow
def test_ray_runner_survives_a_killed_actor(videos, local_store, ray_instance, tmp_path):
    """SIGKILL of an extractor actor's process mid-run: Ray restarts it and retries its calls;
    every video is extracted once, bitwise equal to the uninterrupted local run."""
    from avel.pipeline.ray_extract import RayExtraction

    cfg = _config(videos, tmp_path / "ray", runner="ray", chunk_s=1.0, decode_workers=1, batch_size=4)
    exts = build_stream_extractors(EXTRACTORS, random_weights=True, preset="tiny", overrides=OPTIONS)
    writer = StoreWriter(tmp_path / "ray", dataset="folder", streams={se.stream: se.spec() for se in exts})
    pipe = RayExtraction(cfg, exts)
    pipe.start()
    try:
        before = pipe.actor_info()["vgg19"][0]
        assert before["threads"] == 1
        killed, done, finished = [], threading.Event(), []

        def kill_when_busy():
            # polls from a thread: a call can be in flight between two progress callbacks only
            while not done.is_set():
                if pipe.calls_in_flight().get("vgg19"):
                    os.kill(before["pid"], signal.SIGKILL)
                    killed.append(len(finished))
                    return
                time.sleep(0.001)

        from avel.pipeline.jobs import VideoJob

        jobs = [VideoJob(p.stem, p) for p in sorted(videos.glob("*.mp4"))]
        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        try:
            report = pipe.run(jobs, writer, progress=lambda r: finished.append(r.videos_ok))
        finally:
            done.set()
            killer.join()
        after = pipe.actor_info()["vgg19"][0]
    finally:
        pipe.close()
    assert killed and killed[0] < 6, "the actor was never killed while busy: the test did not test anything"
    assert after["pid"] != before["pid"]  # restarted
    assert report.videos_ok == 6 and report.videos_failed == 0, report.failures
    _assert_same_store(FeatureStore(tmp_path / "ray"), local_store)


@pytest.mark.slow
def test_ray_runner_survives_a_killed_decode_worker(videos, local_store, ray_instance, tmp_path):
    """SIGKILL of the worker process running a decode task: Ray runs the task again on a new
    worker (one retry); every video is extracted once, bitwise equal to the local run."""
    from avel.pipeline.jobs import VideoJob
    from avel.pipeline.ray_extract import RayExtraction

    cfg = _config(videos, tmp_path / "ray", runner="ray", chunk_s=60.0, decode_workers=1)
    exts = build_stream_extractors(EXTRACTORS, random_weights=True, preset="tiny", overrides=OPTIONS)
    writer = StoreWriter(tmp_path / "ray", dataset="folder", streams={se.stream: se.spec() for se in exts})
    pipe = RayExtraction(cfg, exts)
    pipe.start()
    killed, done = [], threading.Event()

    def kill_a_decoding_worker():
        while not done.is_set():
            for pid in _descendants(os.getpid()):
                try:
                    title = (Path("/proc") / str(pid) / "cmdline").read_bytes()
                except OSError:
                    continue
                if title.startswith(b"ray::_decode_chunk"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_a_decoding_worker, daemon=True)
    killer.start()
    try:
        report = pipe.run([VideoJob(p.stem, p) for p in sorted(videos.glob("*.mp4"))], writer)
    finally:
        done.set()
        killer.join()
        pipe.close()
    assert killed, "no decode task was caught running: the test did not test anything"
    assert report.videos_ok == 6 and report.videos_failed == 0, report.failures
    assert not FeatureStore(tmp_path / "ray").errors()
    _assert_same_store(FeatureStore(tmp_path / "ray"), local_store)


@pytest.mark.slow
def test_an_actor_that_cannot_be_built_stops_the_run(videos, ray_instance, tmp_path):
    """The actors build their models while the first chunks decode (``start(wait=False)``, as
    ``avel extract`` runs it): a checkpoint that became unreadable after the driver checked it
    raises from ``run``, as ``start`` did when it waited, instead of failing video after video."""
    import avel.extractors as E
    from avel.pipeline.jobs import VideoJob
    from avel.pipeline.ray_extract import RayExtraction

    ckpt = tmp_path / "rgb_imagenet.pt"
    torch.save(
        {k.removeprefix("rgb."): v for k, v in E.get("i3d_rgb").random_init(preset="tiny").state_dict().items()}, ckpt
    )
    cfg = _config(
        videos, tmp_path / "ray", extractors=["i3d_rgb"], random_weights=False, weights={"i3d_rgb": str(ckpt)}
    )
    cfg.extractor_options = {}
    exts = build_stream_extractors(["i3d_rgb"], weights=cfg.weights, preset="tiny", spec_only=True)
    ckpt.write_bytes(b"not a checkpoint any more")
    writer = StoreWriter(tmp_path / "ray", dataset="folder", streams={se.stream: se.spec() for se in exts})
    pipe = RayExtraction(cfg, exts)
    try:
        pipe.start(wait=False)
        with pytest.raises(ray_instance.exceptions.RayActorError, match="rgb_imagenet.pt"):
            pipe.run([VideoJob(p.stem, p) for p in sorted(videos.glob("*.mp4"))], writer)
    finally:
        pipe.close()
        writer.abort()
    assert not (tmp_path / "ray" / "errors.jsonl").exists()  # no video was failed for it


def test_decode_memory_estimate_follows_the_request():
    from avel.pipeline.ray_extract import DECODE_BASE_MEMORY_BYTES, RayExtraction, decode_task_memory_bytes

    exts = build_stream_extractors(["i3d_rgb", "vggish"], random_weights=True, preset="full")
    pipe = RayExtraction(ExtractConfig(extractors=["i3d_rgb", "vggish"]), exts)
    # 25 fps, 256 x 455 decoded (16:9), 224 x 224 crop, 24-frame windows: by hand
    want = DECODE_BASE_MEMORY_BYTES + (750 + 24) * 3 * 256 * 455 + (750 + 24) * 3 * 224 * 224
    assert decode_task_memory_bytes(pipe.request, pipe.streams, 30.0) == want
    assert decode_task_memory_bytes(pipe.request, pipe.streams, 60.0) > want


def test_decode_reservation_larger_than_any_node_is_a_clear_error(videos, ray_instance, tmp_path):
    from avel.pipeline.ray_extract import RayExtraction

    exts = build_stream_extractors(EXTRACTORS, random_weights=True, preset="tiny", overrides=OPTIONS)
    pipe = RayExtraction(_config(videos, tmp_path / "ray", runner="ray", decode_memory_gb=100_000.0), exts)
    try:
        with pytest.raises(ValueError, match=r"decode_memory_gb=100000.0.*more than any node offers"):
            pipe.start()
    finally:
        pipe.close()
    pipe = RayExtraction(_config(videos, tmp_path / "ray", runner="ray", decode_memory_gb=0.0), exts)
    try:
        pipe.start()
        assert pipe.decode_memory_bytes == 0  # no reservation
    finally:
        pipe.close()


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pids: set[int]) -> set[int]:
    """The running ones of ``pids``, except Ray's dashboard and runtime-env agents: they poll the
    raylet and leave by themselves 20-40 s after it died (measured), too slow to wait for here."""
    alive = set()
    for p in pids:
        try:
            state = (Path("/proc") / str(p) / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (Path("/proc") / str(p) / "cmdline").read_bytes()
        except OSError:
            continue
        if state != "Z" and b"DashboardAgent" not in cmdline and b"RuntimeEnvAgent" not in cmdline:
            alive.add(p)
    return alive


def _shards_committed(store: Path) -> int:
    try:
        return len(FeatureStore(store).manifest["shards"])
    except StoreError:  # not created yet
        return 0


@pytest.mark.slow
def test_kill_9_driver_then_rerun_completes_bitwise(videos, local_store, tmp_path):
    """`avel extract --runner ray` killed by SIGKILL once a shard is committed: its Ray processes
    go with it; the rerun skips what was committed and the store equals an uninterrupted run."""
    store = tmp_path / "store"
    cfg = dataclasses.asdict(_config(videos, store, runner="ray", chunk_s=1.0, shard_max_videos=1, decode_workers=1))
    cfg["cluster"] = {"num_cpus": 2}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [str(Path(sys.executable).parent / "avel"), "extract", "--config", str(tmp_path / "job.yaml"), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    ray_procs: set[int] = set()
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ray_procs |= _descendants(proc.pid)
            if _shards_committed(store):  # the store's snapshot + log tail (manifest.json lags behind)
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    committed = FeatureStore(store).videos()
    assert 1 <= len(committed) < 6
    assert ray_procs, "no Ray processes were seen under the driver"
    end = time.monotonic() + 30
    while _alive(ray_procs) and time.monotonic() < end:  # raylet & co. share the driver's fate
        time.sleep(0.5)
    assert not _alive(ray_procs), f"Ray processes outlived the killed driver: {_alive(ray_procs)}"

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["videos_skipped"] == len(committed) and report["videos_ok"] == 6 - len(committed)
    st = FeatureStore(store)  # raises if a (video, stream) were committed twice
    assert sorted(st.videos()) == sorted(local_store.videos())
    _assert_same_store(st, local_store)


@pytest.mark.parametrize("first_chunk_s", [None, 0.5, 2.0, 30.0])
def test_chunks_tile_the_rows_with_a_short_first_chunk(first_chunk_s):
    """Chunk 0 of ``first_chunk_s`` and the ``chunk_s`` chunks after it cover every row once, and
    ``chunk_count`` is the number of chunks that hold rows (at least one)."""
    from avel.datasets.sampling import SamplingPlan
    from avel.pipeline.engine import chunk_count, chunk_rows

    plan = SamplingPlan("video", fps=25.0, window_frames=24, stride_frames=8)  # I3D: 0.32-s steps
    chunk_s = 3.0  # 9 rows
    first = rows_per_chunk(plan, chunk_s if first_chunk_s is None else min(chunk_s, first_chunk_s))
    assert chunk_rows(plan, 0, chunk_s, first_chunk_s) == (0, first)
    for rows in (0, 1, first, first + 1, first + 9, first + 10, 100):
        n = chunk_count(plan, rows, chunk_s, first_chunk_s)
        spans = [chunk_rows(plan, k, chunk_s, first_chunk_s) for k in range(n)]
        covered = [r for r0, r1 in spans for r in range(r0, min(r1, rows))]
        assert covered == list(range(rows))
        assert n == 1 or spans[-1][0] < rows  # no chunk without rows
        assert all(r1 - r0 == 9 for r0, r1 in spans[1:])


def test_decode_chunk_decodes_with_one_torch_thread_and_restores_the_callers(monkeypatch):
    """A decode (Ray task, forked child or in-process call) must not take the cores of the
    forward beside it; an in-process call gives the caller its thread count back, also on error."""
    import avel.pipeline.decode as decode
    from avel.pipeline.engine import decode_chunk

    seen = []

    def fake_decode_video(path, **kwargs):
        seen.append(torch.get_num_threads())
        raise decode.DecodeError(f"{path}: stop here")

    monkeypatch.setattr(decode, "decode_video", fake_decode_video)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(decode.DecodeError, match="stop here"):
            decode_chunk("v.mp4", {"short_side": None, "sample_rate": None}, [], 0, 30.0, None)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
