"""The Ray runner: decode tasks on CPU workers, a fixed actor pool per extractor, one writer.

::

    driver: jobs --submit (bounded)--> decode task (CPU, 1 per video, killed after the timeout)
              decode task: decode once -> per stream: resize/crop, cut windows -> object store
              returns [info, windows(stream 1), windows(stream 2), ...] (separate objects)
    driver: info -> per-stream queues of window refs
              when a queue holds >= batch_size windows (or nothing else is coming):
              actor.extract(keys, *refs) on that stream's pool (least-loaded actor)
              -> rows per video -> when a video has all its streams: StoreWriter.add
    StoreWriter commits shards atomically; rerunning resumes from the manifest.

Windows of several videos are concatenated into one device batch, so short videos do not
run at batch size one. Decode of later videos overlaps extraction of earlier ones (up to
``decode_workers * 2`` decodes in flight). A failed or timed-out decode, or a failed
extraction, is recorded in ``errors.jsonl`` and the run goes on.

Ray stays inside this module: the library (datasets, extractors, models) never imports it.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from avel.datasets.store import StoreWriter
from avel.pipeline.engine import RunReport, StreamExtractor, decode_request, record_failure
from avel.pipeline.jobs import VideoJob


def _decode_and_cut(path: str, request: dict, streams: list[tuple[str, Any, Any, int, int]]):
    """Ray task body: decode once, cut every stream's windows. Returns [info, *windows]."""
    import torch

    from avel.extractors.base import cut_audio_windows, cut_video_windows
    from avel.pipeline.decode import decode_video
    from avel.pipeline.engine import frames_for

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    decoded = decode_video(path, **request)
    info: dict[str, Any] = {"meta": decoded.meta, "padded": {}, "rows": {}, "errors": {}}
    outs = []
    for name, spec, plan, context, context_samples in streams:
        try:
            if spec.modality == "video":
                win = cut_video_windows(frames_for(decoded, spec), plan, context_frames=context)
            else:
                if decoded.audio is None:
                    raise RuntimeError(decoded.audio_error or f"{path}: no audio")
                win = cut_audio_windows(torch.from_numpy(decoded.audio), plan, context_samples=context_samples)
            outs.append(win.data.numpy())
            info["padded"][name] = win.padded
            info["rows"][name] = win.num_rows
        except Exception as e:  # recorded per stream; other streams of the video still run
            info["errors"][name] = (type(e).__name__, str(e))
            outs.append(None)
    info["busy_s"] = time.perf_counter() - t0
    return [info, *outs]


class _ExtractorActor:
    """Holds one extractor on its device; extracts windows of several videos per call."""

    def __init__(self, name: str, weights: str | None, random_weights: bool, preset: str,
                 options: dict, device: str, batch_size: int) -> None:
        import torch

        from avel.pipeline.engine import build_stream_extractors

        torch.set_num_threads(1)
        self.device = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        (self.se,) = build_stream_extractors([name], weights={name: weights} if weights else {},
                                             random_weights=random_weights, preset=preset, device=self.device,
                                             overrides={name: options})
        self.batch_size = batch_size
        self.use_amp = self.device.type == "cuda"

    def extract(self, *arrays: np.ndarray) -> tuple[list[np.ndarray], float]:
        """Rows per input array, and the seconds this call was busy."""
        import torch

        t0 = time.perf_counter()
        counts = [a.shape[0] for a in arrays]
        data = torch.from_numpy(np.concatenate(arrays, axis=0))
        out = []
        ext = self.se.extractor
        for a in range(0, data.shape[0], self.batch_size):
            batch = data[a:a + self.batch_size]
            if self.device.type == "cuda":
                batch = batch.pin_memory().to(self.device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_amp):
                out.append(ext.extract(batch).float().cpu().numpy())
        rows = np.concatenate(out, axis=0)
        return np.split(rows, np.cumsum(counts)[:-1]), time.perf_counter() - t0


@dataclass
class _Video:
    job: VideoJob
    info: dict | None = None
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    failed: bool = False


def run_ray(jobs: Sequence[VideoJob], cfg: Any, extractors: Sequence[StreamExtractor], writer: StoreWriter, *,
            progress: Callable[[RunReport], None] | None = None) -> RunReport:
    """Run the extraction on Ray (``cfg.cluster``: embedded local instance unless an address is set)."""
    import ray

    cfg.cluster.init_ray()
    report = RunReport()
    t_start = time.perf_counter()
    request = decode_request(extractors)
    committed = {se.stream: writer.committed(se.stream) for se in extractors}
    stream_args = [(se.stream, se.extractor.decode_spec, se.extractor.plan, se.extractor.context_frames,
                    se.extractor.context_samples) for se in extractors]
    decode = ray.remote(num_cpus=1, max_retries=0)(_decode_and_cut)
    actor_cls = ray.remote(_ExtractorActor)
    pools: dict[str, list] = {}
    for se in extractors:
        # CPU actors reserve no CPU slot: a reserved slot per actor would starve the decode
        # tasks on small machines (2 actors on 2 cores = no decode ever scheduled).
        opts = {"num_gpus": cfg.gpus_per_actor, "num_cpus": 0} if cfg.gpus_per_actor else {"num_cpus": 0}
        weights = cfg.weights.get(se.stream)
        pools[se.stream] = [
            actor_cls.options(**opts).remote(se.stream, weights, cfg.random_weights, cfg.preset,
                                             cfg.extractor_options.get(se.stream, {}),
                                             "cuda" if cfg.gpus_per_actor else "cpu", cfg.batch_size)
            for _ in range(max(1, cfg.actors_per_extractor))]
    load = {s: [0] * len(p) for s, p in pools.items()}

    todo = deque(j for j in jobs if not all(j.video_id in committed[s.stream] for s in extractors))
    report.videos_skipped += len(jobs) - len(todo)
    videos: dict[str, _Video] = {}
    decoding: dict[Any, tuple[str, list, float]] = {}  # info ref -> (video id, window refs, start time)
    queues: dict[str, deque] = {se.stream: deque() for se in extractors}  # (video_id, ref, n_windows)
    running: dict[Any, tuple[str, int, list[str]]] = {}  # result ref -> (stream, actor index, video ids)
    max_decodes = max(1, cfg.decode_workers) * 2

    def finish(vid: str) -> None:
        v = videos.pop(vid)
        if v.rows:
            t0 = time.perf_counter()
            writer.add(vid, v.rows, meta=v.info["meta"],
                       padded={s: v.info["padded"].get(s, False) for s in v.rows})
            report.write_s += time.perf_counter() - t0
        if v.failed:
            report.videos_failed += 1
        else:
            report.videos_ok += 1
        if progress:
            progress(report)

    def dispatch(stream: str, force: bool) -> None:
        q = queues[stream]
        while q:
            total = sum(n for _, _, n in q)
            if total < cfg.batch_size and not force:
                return
            take, n = [], 0
            while q and (n < cfg.batch_size or not take):
                item = q.popleft()
                take.append(item)
                n += item[2]
            k = int(np.argmin(load[stream]))
            load[stream][k] += 1
            ref = pools[stream][k].extract.remote(*[r for _, r, _ in take])
            running[ref] = (stream, k, [v for v, _, _ in take])

    while todo or decoding or running or any(queues.values()):
        while todo and len(decoding) < max_decodes:
            job = todo.popleft()
            todo_streams = [a for a in stream_args if job.video_id not in committed[a[0]]]
            refs = decode.options(num_returns=1 + len(todo_streams)).remote(str(job.path), request, todo_streams)
            videos[job.video_id] = _Video(job, waiting={a[0] for a in todo_streams})
            decoding[refs[0]] = (job.video_id, list(zip([a[0] for a in todo_streams], refs[1:])),
                                 time.perf_counter())
        waitable = list(decoding) + list(running)
        ready, _ = ray.wait(waitable, num_returns=1, timeout=0.5) if waitable else ([], [])
        now = time.perf_counter()
        for ref, (vid, _wrefs, t0) in list(decoding.items()):  # per-video decode time limit
            if ref not in ready and now - t0 > cfg.decode_timeout_s:
                ray.cancel(ref, force=True)
                del decoding[ref]
                v = videos[vid]
                record_failure(writer.root, report, v.job, "decode",
                               TimeoutError(f"{v.job.path}: decoding took longer than {cfg.decode_timeout_s:g} s; "
                                            f"worker killed"))
                v.failed, v.waiting = True, set()
                v.info = {"meta": None, "padded": {}}
                finish(vid)
        for ref in ready:
            if ref in decoding:
                vid, wrefs, _t0 = decoding.pop(ref)
                v = videos[vid]
                try:
                    v.info = ray.get(ref)
                    report.decode_s += v.info["busy_s"]
                except Exception as e:  # decode failed: the task's exception, recorded
                    cause = getattr(e, "cause", None) or e
                    record_failure(writer.root, report, v.job, "decode", cause)
                    v.failed, v.waiting, v.info = True, set(), {"meta": None, "padded": {}}
                    finish(vid)
                    continue
                for stream, wref in wrefs:
                    if stream in v.info["errors"]:
                        name, msg = v.info["errors"][stream]
                        record_failure(writer.root, report, v.job, f"extract:{stream}", RuntimeError(f"{name}: {msg}"))
                        v.failed = True
                        v.waiting.discard(stream)
                    else:
                        queues[stream].append((vid, wref, v.info["rows"][stream]))
                if not v.waiting:
                    finish(vid)
            elif ref in running:
                stream, k, vids = running.pop(ref)
                load[stream][k] -= 1
                try:
                    parts, busy_s = ray.get(ref)
                    report.extract_s += busy_s
                except Exception as e:
                    cause = getattr(e, "cause", None) or e
                    for vid in vids:
                        record_failure(writer.root, report, videos[vid].job, f"extract:{stream}", cause)
                        videos[vid].failed = True
                        videos[vid].waiting.discard(stream)
                        if not videos[vid].waiting:
                            finish(vid)
                    continue
                for vid, rows in zip(vids, parts):
                    v = videos[vid]
                    v.rows[stream] = rows
                    report.windows += rows.shape[0]
                    v.waiting.discard(stream)
                    if not v.waiting:
                        finish(vid)
        no_more_input = not todo and not decoding
        for stream in queues:
            dispatch(stream, force=no_more_input or len(decoding) < max_decodes // 2)
    t0 = time.perf_counter()
    writer.flush()
    report.write_s += time.perf_counter() - t0
    report.wall_s = time.perf_counter() - t_start
    return report
