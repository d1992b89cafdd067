"""The Ray runner: chunked decode tasks on CPU workers, a fixed actor pool per extractor, one writer.

::

    driver: video --submit--> decode task (CPU, chunk k of the video, killed after the timeout)
              chunk 0: decode the first chunk_s seconds (and the audio track, decoded once);
                       reports the video's frame counts -> the driver submits chunks 1..n-1
              every chunk: per stream, resize/crop once -> (frames, window index) payload;
                       audio: (waveform, window starts) -> object store (frames are not
                       duplicated into overlapping windows; the actor cuts its rows)
    driver: per-stream queue of row ranges (video, chunk, payload ref, rows a..b)
              -> exactly batch_size rows per call (windows of several videos/chunks) on that
                 stream's pool (least-loaded actor, <= 2 calls in flight per actor)
              -> rows per (video, chunk) -> when a video has all its rows: StoreWriter.add
    StoreWriter commits shards atomically; rerunning resumes from the manifest.

Memory: a decode task holds one chunk of frames, whatever the video's length; the driver
starts a decode only while every stream's queue holds fewer than ``high_water`` rows, so the
object store holds at most about ``high_water + decode_workers`` chunks of windows per stream.

Determinism: every CPU call computes exactly ``batch_size`` windows (the run's last batch per
stream is padded, see :func:`avel.pipeline.engine.extract_batch`); a window's row is then
bitwise independent of its batch neighbours, so the store equals the local runner's bitwise
and a resumed or retried run gives the same rows, for the same ``threads_per_actor`` (the local
runner's torch threads) — the thread count changes some kernels (i3d: ~3e-8).

Failures:

* a decode that fails or exceeds ``decode_timeout_s`` (its worker is killed) fails the video,
  recorded in ``errors.jsonl``; a decode worker that dies (killed, OOM) is retried once;
* an extractor actor that dies is restarted (``max_restarts``) and the lost calls are retried
  on it (``max_task_retries``): extraction is a pure function of its inputs, the retried
  batch gives the same rows; an exception inside ``extract`` fails that stream of the videos
  in the batch (recorded);
* the driver dying loses the videos not yet committed; rerunning the command completes them.

Ray stays inside this module: the library (datasets, extractors, models) never imports it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from avel.datasets.store import StoreWriter
from avel.pipeline.cluster import embedded_worker_env, shutdown_ray
from avel.pipeline.engine import RunReport, StreamExtractor, StreamInfo, decode_request, record_failure
from avel.pipeline.jobs import VideoJob
from avel.pipeline.scheduler import ExtractionScheduler, VideoState

ACTOR_MAX_RESTARTS = 2
DECODE_MAX_RETRIES = 1  # worker deaths only (application errors are not retried)


def _decode_chunk(
    path: str, request: dict, streams: list[StreamInfo], k: int, chunk_s: float, totals: dict[str, int] | None
) -> list:
    """Ray decode task: :func:`avel.pipeline.engine.decode_chunk` (one torch thread)."""
    from avel.pipeline.engine import decode_chunk

    return decode_chunk(path, request, streams, k, chunk_s, totals)


def _warm_decode_worker() -> int:
    """Import what decode tasks import, so the first timed decode does not pay for it."""
    import decord  # noqa: F401
    import torch  # noqa: F401

    import avel.pipeline.decode  # noqa: F401
    import avel.pipeline.engine  # noqa: F401

    time.sleep(0.2)  # keep this worker busy so the next warm-up task lands on another one
    return os.getpid()


class _ExtractorActor:
    """Holds one extractor on its device; extracts one fixed-size batch of windows per call."""

    def __init__(
        self,
        name: str,
        weights: str | None,
        random_weights: bool,
        preset: str,
        options: dict,
        device: str,
        batch_size: int,
        threads: int,
        fuse: bool = True,
        precision: str = "fp32",
    ) -> None:
        import torch

        from avel.pipeline.engine import build_stream_extractors

        torch.set_num_threads(max(1, min(threads, os.cpu_count() or threads)))
        self.device = torch.device(device)
        (self.se,) = build_stream_extractors(
            [name],
            weights={name: weights} if weights else {},
            random_weights=random_weights,
            preset=preset,
            device=self.device,
            overrides={name: options},
            fuse=fuse,
        )
        self.batch_size = batch_size
        self.precision = precision
        self.info = StreamInfo.of(self.se)

    def describe(self) -> dict[str, Any]:
        """``{pid, threads, device}`` of this actor (tests kill it by pid)."""
        import torch

        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "device": str(self.device)}

    def extract(self, pieces: list[tuple[int, int]], *payloads: Any) -> tuple[np.ndarray, float]:
        """Rows of ``pieces`` (rows ``a..b`` of each payload, ``sum(b - a) <= batch_size``) in
        one device call; returns ``(rows n x *feature_shape, busy seconds)``."""
        import torch

        from avel.pipeline.engine import extract_batch, payload_windows

        t0 = time.perf_counter()
        parts = [payload_windows(payload, a, b, self.info) for (a, b), payload in zip(pieces, payloads)]
        windows = torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))
        rows = extract_batch(
            self.se.extractor, windows, batch_size=self.batch_size, device=self.device, precision=self.precision
        )
        return rows, time.perf_counter() - t0

    def warm_up(self, shape: tuple[int, ...], dtype: str) -> float:
        """One batch of zeros of one window's ``shape``; returns its seconds (first-call costs)."""
        import torch

        from avel.pipeline.engine import extract_batch

        t0 = time.perf_counter()
        extract_batch(
            self.se.extractor,
            torch.zeros((1, *shape), dtype=getattr(torch, dtype)),
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,
        )
        return time.perf_counter() - t0


# a decode task's heap above an idle worker: decord's reader state and the audio track of a
# first chunk (decord decodes it whole: ~300 MB for 20 minutes at 16 kHz, measured)
DECODE_BASE_MEMORY_BYTES = 512 * 2**20


def decode_task_memory_bytes(request: dict, streams: Sequence[Any], chunk_s: float, *, aspect: float = 16 / 9) -> int:
    """Estimated peak heap of one decode task: what :func:`_decode_chunk` holds at once.

    Per requested fps, the chunk's frames as decoded (``chunk_s x fps`` plus one window of
    context, short side ``request["short_side"]``, the long side ``aspect`` times it; sources
    wider than ``aspect`` decode larger), plus each video stream's CPU-resized / cropped copy,
    plus :data:`DECODE_BASE_MEMORY_BYTES`. A 30-s chunk of the I3D RGB request (25 fps, 256 px,
    224 crop): 0.86 GiB (the 20-minute benchmark measured the decode task 0.88 GiB above an idle
    worker). ``short_side=None`` (native size) assumes 1080p sources.
    """
    short = request.get("short_side") or 1080  # native size: assume up to 1080p
    frame = 3 * short * int(round(short * aspect))
    total = DECODE_BASE_MEMORY_BYTES
    for fps in request.get("fps", []):
        context = max(
            (
                s.plan.window_units + s.context_frames
                for s in streams
                if s.modality == "video" and float(s.plan.fps) == float(fps)
            ),
            default=0,
        )
        total += int(math.ceil(chunk_s * fps) + context) * frame
    for s in streams:
        if s.modality != "video":
            continue
        spec = s.decode_spec
        side_h, side_w = (
            (spec.center_crop, spec.center_crop)
            if spec.center_crop
            else tuple(spec.size_hw)
            if spec.size_hw
            else (short, int(round(short * aspect)))
        )
        total += int(math.ceil(chunk_s * s.plan.fps) + s.plan.window_units + s.context_frames) * 3 * side_h * side_w
    return int(total)


class RayExtraction:
    """The Ray pipeline, in three steps: :meth:`start` (Ray, actor pools, optional warm-up),
    :meth:`run` (any number of job lists), :meth:`close`.

    Args:
        cfg: :class:`avel.pipeline.extract.ExtractConfig` (``cluster``, ``batch_size``,
            ``gpus_per_actor``, ``actors_per_extractor``, ``threads_per_actor``,
            ``decode_workers``, ``decode_timeout_s``, ``chunk_s``, weights and preset).
        extractors: the run's extractors (built in the driver: decode request, plans, specs).

    Resources: decode tasks take one CPU slot each (at most ``decode_workers`` at a time) and
    reserve ``decode_memory_gb`` of Ray's ``memory`` resource (default: estimated,
    :func:`decode_task_memory_bytes`), so a node never starts more than its memory holds;
    extractor actors take ``gpus_per_actor`` of a GPU and no CPU slot, so on a small machine
    the decode tasks are never starved by actors; a CPU actor runs ``threads_per_actor`` torch
    threads; every value left unset is chosen by :func:`avel.pipeline.tuning.choose_ray_pool`.
    """

    def __init__(self, cfg: Any, extractors: Sequence[StreamExtractor]) -> None:
        self.cfg = cfg
        self.extractors = list(extractors)
        self.request = decode_request(self.extractors)
        self.streams = [StreamInfo.of(se) for se in self.extractors]
        self.pools: dict[str, list] = {}
        self.threads = 0
        self.batch_sizes: dict[str, int] = {}
        self.settings: dict[str, Any] = {}  # what start() chose and why (the report's ``settings``)
        self.decode_memory_bytes = 0
        self.started_ray = False
        self.startup_s = 0.0
        self._decode: Any = None  # the decode task (a Ray remote function), made by start()
        self._pending_ready: list = []  # describe() calls of actors not known to be built yet
        self._actors_t0 = 0.0  # perf_counter when the actors were submitted
        self.load_s = 0.0  # actors submitted -> every actor built (its model loaded)
        self._load: dict[str, list[int]] = {}  # stream -> calls in flight per actor

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, *, warm_up: bool = False, wait: bool = True) -> float:
        """Connect to / start Ray and build the actor pools; returns the seconds it took.

        Args:
            warm_up: also run one batch per actor and the imports of every decode worker, so
                that :meth:`run` measures the steady state (the benchmark does this).
            wait: return when every actor is built (an extractor that cannot be built raises
                here). ``False``: return once the actors are submitted; they import torch and
                build their models while :meth:`run` decodes the first chunks, and a failed
                build raises from :meth:`run` (``load_s`` says when they were all built).
        """
        import ray

        from avel.pipeline.tuning import choose_batch_sizes, choose_ray_pool, precision_why

        t0 = time.perf_counter()
        cfg = self.cfg
        precision = getattr(cfg, "precision", "fp32")
        # CPU actors share cores with decode tasks: OpenMP threads that spin while waiting for a
        # descheduled sibling make a 2-thread model 10x slower on a busy 2-core machine
        # (measured); passive waiting costs little when the cores are free
        omp_env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        self.started_ray = cfg.cluster.init_ray(lean=True, worker_env=omp_env)
        resources = ray.cluster_resources()
        pool = choose_ray_pool(
            actors_per_extractor=cfg.actors_per_extractor,
            threads_per_actor=cfg.threads_per_actor,
            gpus_per_actor=cfg.gpus_per_actor,
            extractors=len(self.extractors),
            cpus=resources.get("CPU", 1),
            gpus=resources.get("GPU", 0),
        )
        gpu = bool(pool["gpus_per_actor"])
        n_actors = pool["actors_per_extractor"]
        self.threads = threads = pool["threads_per_actor"]
        self.batch_sizes, batch_why = choose_batch_sizes(cfg.batch_size, self.extractors, "cuda" if gpu else "cpu")
        self.settings = {
            "runner": "ray",
            "device": "cuda" if gpu else "cpu",
            "batch_size": dict(self.batch_sizes),
            **{k: v for k, v in pool.items() if k != "why"},
            "decode_workers": cfg.decode_workers,
            "precision": precision,
            "why": {**pool["why"], "batch_size": batch_why, "precision": precision_why(precision)},
        }
        gb = cfg.decode_memory_gb
        self.decode_memory_bytes = (
            decode_task_memory_bytes(self.request, self.streams, cfg.chunk_s) if gb is None else int(gb * 2**30)
        )
        largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if self.decode_memory_bytes > largest:
            raise ValueError(
                f"decode tasks would reserve {self.decode_memory_bytes / 2**30:.2f} GiB of memory "
                f"(decode_memory_gb={gb}{' (estimated)' if gb is None else ''}), more than any node offers "
                f"({largest / 2**30:.2f} GiB): lower chunk_s, set decode_memory_gb, or 0 for no reservation"
            )
        decode_opts: dict[str, Any] = {"num_cpus": 1, "max_retries": DECODE_MAX_RETRIES, "retry_exceptions": False}
        if self.decode_memory_bytes:  # 0: no reservation
            decode_opts["memory"] = self.decode_memory_bytes
        self._decode = ray.remote(**decode_opts)(_decode_chunk)
        actor_cls = ray.remote(_ExtractorActor)
        opts: dict[str, Any] = {
            "num_cpus": 0,
            "max_restarts": ACTOR_MAX_RESTARTS,
            "max_task_retries": ACTOR_MAX_RESTARTS,
        }
        if gpu:
            opts["num_gpus"] = pool["gpus_per_actor"]
        elif embedded_worker_env() != omp_env:  # not inherited: a cluster, or Ray started elsewhere
            opts["runtime_env"] = {"env_vars": omp_env}
        for se in self.extractors:
            self.pools[se.stream] = [
                actor_cls.options(**opts).remote(
                    se.stream,
                    cfg.weights.get(se.stream),
                    cfg.random_weights,
                    cfg.preset,
                    cfg.extractor_options.get(se.stream, {}),
                    "cuda" if gpu else "cpu",
                    self.batch_sizes[se.stream],
                    threads,
                    getattr(cfg, "fuse_models", True),
                    precision,
                )
                for _ in range(n_actors)
            ]
        self._actors_t0 = time.perf_counter()
        calls = [a.describe.remote() for pool in self.pools.values() for a in pool]
        if not wait and not warm_up:
            self._pending_ready = calls
            self.startup_s = time.perf_counter() - t0
            return self.startup_s
        if warm_up:
            calls += [
                a.warm_up.remote(*self._window_shape(se)) for se in self.extractors for a in self.pools[se.stream]
            ]
            warm = ray.remote(num_cpus=1)(_warm_decode_worker)
            calls += [warm.remote() for _ in range(max(1, cfg.decode_workers))]
        ray.get(calls)  # raises here if an extractor cannot be built (weights, config)
        self.startup_s = self.load_s = time.perf_counter() - t0
        return self.startup_s

    def _actors_built(self, refs: Sequence[Any]) -> None:
        """``describe`` calls of :meth:`start` (``wait=False``) that finished: raises the build
        error of an actor that could not be built, else notes when the last one was built."""
        import ray

        pending = set(refs)
        self._pending_ready = [r for r in self._pending_ready if r not in pending]
        ray.get(list(refs))  # an extractor that cannot be built (weights, config) raises here
        if not self._pending_ready:
            self.load_s = time.perf_counter() - self._actors_t0

    @staticmethod
    def _window_shape(se: StreamExtractor) -> tuple[tuple[int, ...], str]:
        ext = se.extractor
        if ext.modality == "audio":
            return (ext.plan.window_units + ext.context_samples,), "float32"
        spec = ext.decode_spec
        side = spec.center_crop or (spec.size_hw if spec.size_hw else (spec.short_side, spec.short_side))
        h, w = (side, side) if isinstance(side, int) else side
        return (ext.plan.window_units + ext.context_frames, h, w, 3), "uint8"

    def actor_info(self) -> dict[str, list[dict]]:
        """``{stream: [{pid, threads, device}, ...]}`` of the pools."""
        import ray

        return {s: ray.get([a.describe.remote() for a in pool]) for s, pool in self.pools.items()}

    def calls_in_flight(self) -> dict[str, int]:
        """Extraction calls submitted and not yet returned, per stream (during :meth:`run`)."""
        return {s: sum(n) for s, n in self._load.items()}

    def close(self) -> None:
        """Kill the actors; stop Ray when :meth:`start` started it."""
        import ray

        for pool in self.pools.values():
            for a in pool:
                ray.kill(a, no_restart=True)
        self.pools = {}
        self._pending_ready = []
        if self.started_ray:
            shutdown_ray()
            self.started_ray = False

    # -- the run -------------------------------------------------------------------------------
    def run(
        self, jobs: Sequence[VideoJob], writer: StoreWriter, *, progress: Callable[[RunReport], None] | None = None
    ) -> RunReport:
        """Extract ``jobs`` into ``writer`` (videos already committed for every stream are
        skipped, others get only their missing streams); returns the run's report.

        The state and the rules live in :class:`avel.pipeline.scheduler.ExtractionScheduler`;
        this loop submits the decodes and extraction calls it asks for, waits on Ray and reports
        back what finished."""
        import ray

        if not self.pools:
            raise RuntimeError("RayExtraction.run: call start() first")
        cfg = self.cfg
        report = RunReport()
        t_start = time.perf_counter()
        gpu = self.settings.get("device") == "cuda"

        def finish(v: VideoState) -> None:
            features = v.features()
            if features:
                t0 = time.perf_counter()
                writer.add(v.job.video_id, features, meta=v.meta, padded={s: v.padded.get(s, False) for s in features})
                report.write_s += time.perf_counter() - t0
                report.windows += sum(r.shape[0] for r in features.values())
                for stream, r in features.items():
                    report.work.written(stream, r.shape[0])
            if v.ok:
                report.videos_ok += 1
            else:
                report.videos_failed += 1
            writer.settle(v.job.video_id)  # kept until committed when written, else released for a retry
            if progress:
                progress(report)

        sched = ExtractionScheduler(
            jobs,
            self.streams,
            {s.name: writer.committed(s.name) for s in self.streams},
            pool_sizes={s: len(p) for s, p in self.pools.items()},
            batch_sizes=dict(self.batch_sizes),
            decode_slots=cfg.decode_workers,
            decode_timeout_s=cfg.decode_timeout_s,
            on_finish=finish,
            on_failure=lambda job, stage, exc: record_failure(writer.root, report, job, stage, exc),
        )
        self._load = sched.load
        report.videos_skipped += sched.skipped

        def claim(video_id: str) -> bool:
            return writer.claim(video_id) == "mine"

        while sched.busy:
            while (nxt := sched.next_decode(claim)) is not None:
                v, k, streams = nxt
                refs = self._decode.options(num_returns=1 + len(streams)).remote(
                    str(v.job.path), self.request, streams, k, cfg.chunk_s, v.totals
                )
                sched.decode_started(
                    refs[0], v.job.video_id, k, zip([s.name for s in streams], refs[1:]), time.perf_counter()
                )
            final = not sched.input_left
            for stream, pool in self.pools.items():
                while (call := sched.next_batch(stream, final=final)) is not None:
                    actor, pieces, payloads = call
                    ref = pool[actor].extract.remote([(a, b) for _, _, a, b in pieces], *payloads)
                    n = sum(b - a for _, _, a, b in pieces)  # a CPU call is padded to the batch
                    report.work.computed(stream, n if gpu else self.batch_sizes[stream])
                    sched.batch_started(ref, stream, actor, pieces)
            waitable = sched.in_flight() + self._pending_ready
            if not waitable:
                continue
            ready, _ = ray.wait(waitable, num_returns=1, timeout=1.0)
            if ready:
                ready, _ = ray.wait(waitable, num_returns=len(waitable), timeout=0)
            built = [r for r in ready if r in self._pending_ready]
            if built:
                self._actors_built(built)
            for task in sched.expire_decodes(time.perf_counter(), done=ready):  # per-chunk time limit
                ray.cancel(task.token, force=True)
                _consume_errors([task.token, *(r for _, r in task.outputs)])
            for ref in ready:
                if ref in sched.decoding:
                    try:
                        info = ray.get(ref)
                    except Exception as e:  # the task's exception (or the worker's death), recorded
                        task = sched.decode_failed(ref, getattr(e, "cause", None) or e)
                        _consume_errors([r for _, r in task.outputs])
                        continue
                    if sched.decode_done(ref, info):
                        report.decode_s += info["busy_s"]
                        report.work.add_frames(info["frames"])
                elif ref in sched.running:
                    try:
                        rows, busy_s = ray.get(ref)
                    except Exception as e:  # the call's exception: that stream of its videos fails
                        if self._pending_ready:  # unless an actor could not be built: that raises
                            self._actors_built(list(self._pending_ready))
                        sched.batch_done(ref, None, getattr(e, "cause", None) or e)
                        continue
                    report.extract_s += busy_s
                    sched.batch_done(ref, rows)
        t0 = time.perf_counter()
        writer.flush()
        report.write_s += time.perf_counter() - t0
        report.wall_s = time.perf_counter() - t_start
        return report


def _consume_errors(refs: list) -> None:
    """Fetch the error objects of a failed task (already recorded), so Ray does not log them
    again as unhandled when the references are dropped."""
    import ray

    for r in refs:
        try:
            ray.get(r, timeout=10)
        except Exception:  # the expected failure of a failed or cancelled task
            pass


def run_ray(
    jobs: Sequence[VideoJob],
    cfg: Any,
    extractors: Sequence[StreamExtractor],
    writer: StoreWriter,
    *,
    progress: Callable[[RunReport], None] | None = None,
) -> RunReport:
    """Run the extraction on Ray (``cfg.cluster``: embedded local instance unless an address is
    set): start, run, close. The report's ``wall_s`` includes the start-up. Nothing to do
    (every job committed): Ray is not started."""
    if not jobs:
        t0 = time.perf_counter()
        writer.flush()
        return RunReport(wall_s=time.perf_counter() - t0)
    pipeline = RayExtraction(cfg, extractors)
    try:
        startup_s = pipeline.start(wait=False)  # the actors build their models while the first chunks decode
        report = pipeline.run(jobs, writer, progress=progress)
    finally:
        pipeline.close()
    report.startup_s = startup_s
    report.load_s = pipeline.load_s
    report.wall_s += startup_s
    report.settings = pipeline.settings
    return report
