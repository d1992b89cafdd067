"""Extraction without Ray: decode once, cut windows per extractor, run batches, write rows.

Data flow for one video (:func:`extract_video_chunked`)::

    file --probe: frame counts per fps, audio decoded once (16 kHz mono)
         --chunk k: decode_video(output frames of chunk k for every fps, short side = largest need)
         --per extractor: CPU resize/crop per its DecodeSpec--> frames T_k x H x W x 3
         --windows of the chunk's rows--> batches of `batch_size` on the device--> rows
    rows of all chunks + plan times --> StoreWriter.add(video)

This module is the building block of both runners: :func:`run_sequential` (one video at a
time, the reference tools' behaviour; also the benchmark's baseline) and the Ray pipeline in
:mod:`avel.pipeline.ray_extract`, which calls the same functions in its stages.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from avel.datasets.store import StoreWriter, StreamSpec, VideoMeta, append_error
from avel.extractors.base import cut_audio_windows
from avel.pipeline.decode import DecodedVideo, DecodeError, decode_with_timeout
from avel.pipeline.jobs import VideoJob


@dataclass
class StreamExtractor:
    """An extractor bound to the store stream it fills."""

    stream: str
    extractor: Any  # avel.extractors.base.Extractor

    def spec(self) -> StreamSpec:
        ext = self.extractor
        return StreamSpec(extractor=ext.name, plan=ext.plan, feature_shape=tuple(ext.feature_shape),
                          dtype="float32", config=ext.config.to_dict(), weights_sha256=ext.weights_sha256,
                          provenance={"decode": _jsonable(ext.decode_spec)})


def _jsonable(obj: Any) -> Any:
    import dataclasses

    d = dataclasses.asdict(obj)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def decode_request(extractors: Sequence[StreamExtractor]) -> dict[str, Any]:
    """Arguments of :func:`decode_video` that serve every extractor with one decode."""
    fps: list[float] = []
    sides: list[int] = []
    sample_rate = None
    for se in extractors:
        spec = se.extractor.decode_spec
        if spec.modality == "video":
            if spec.fps not in fps:
                fps.append(float(spec.fps))
            if spec.short_side:
                sides.append(int(spec.short_side))
            if spec.size_hw:
                sides.append(int(max(spec.size_hw)))
        else:
            if sample_rate not in (None, spec.sample_rate):
                raise ValueError(f"audio extractors need different sample rates ({sample_rate} vs "
                                 f"{spec.sample_rate}); run them separately")
            sample_rate = int(spec.sample_rate)
    return {"fps": fps, "short_side": max(sides) if sides else None, "sample_rate": sample_rate}


def frames_for(decoded: DecodedVideo, spec: Any) -> torch.Tensor:
    """The frames one video extractor expects: resampled to its fps, then resized and cropped
    by the extractors' own rule (:func:`avel.extractors.preprocess.apply_decode_spec`)."""
    from avel.extractors.preprocess import apply_decode_spec

    return apply_decode_spec(torch.from_numpy(decoded.frames[float(spec.fps)]), spec).contiguous()


def extract_batch(ext: Any, windows: torch.Tensor, *, batch_size: int, device: torch.device,
                  amp: bool = False) -> np.ndarray:
    """Rows of ``windows`` (``n <= batch_size`` of them) from one device call: ``n x *feature_shape``.

    On the CPU every call has exactly ``batch_size`` windows: a short batch is padded with
    copies of its last window, whose rows are dropped. The kernels torch picks depend on the
    batch shape (batches of 1-3 windows gave rows up to 3e-8 away from batches of 8 for vggish
    and i3d); with one fixed shape a window's row is bitwise independent of its neighbours and
    of its position in the batch (measured for vgg19, vggish, i3d_rgb), so rows do not depend
    on how a runner groups windows. On a GPU batches are not padded (no bitwise promise there).

    Args:
        ext: the extractor.
        windows: ``n x ...`` windows as :meth:`Extractor.windows` cuts them (CPU tensor).
        batch_size: the fixed CPU batch shape.
        device: where ``ext`` lives.
        amp: bfloat16 autocast on CUDA.
    """
    n = int(windows.shape[0])
    if n > batch_size:
        raise ValueError(f"{n} windows do not fit a batch of {batch_size}")
    if device.type == "cpu" and n < batch_size:
        windows = torch.cat([windows, windows[-1:].expand(batch_size - n, *windows.shape[1:])])
    if device.type == "cuda":
        windows = windows.pin_memory().to(device, non_blocking=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        rows = ext.extract(windows.to(device))
    return rows[:n].float().cpu().numpy()


def _extract_batches(ext: Any, data: torch.Tensor, *, batch_size: int, device: torch.device,
                     index: torch.Tensor | None = None) -> np.ndarray:
    """Rows of every window in fixed batches. Windows are ``data`` itself (possibly a strided
    view of overlapping windows: each batch is copied to contiguous memory), or with ``index``
    (``N x window`` frame indices) ``data[index]`` cut one batch at a time, so overlapping
    windows are never materialised all at once (3x the frames for I3D's 24/8 plan)."""
    n = int(data.shape[0] if index is None else index.shape[0])

    def batch(a: int) -> torch.Tensor:
        return data[a:a + batch_size].contiguous() if index is None else data[index[a:a + batch_size]]

    out = [extract_batch(ext, batch(a), batch_size=batch_size, device=device) for a in range(0, n, batch_size)]
    return np.concatenate(out, axis=0).astype(np.float32, copy=False)


def rows_per_chunk(plan: Any, chunk_s: float) -> int:
    """Rows of one stream per chunk of about ``chunk_s`` seconds (at least one)."""
    return max(1, int(round(chunk_s / plan.step_seconds)))


def chunk_plan(streams: Sequence[tuple[str, Any, int, int | None]], k: int, chunk_s: float
               ) -> tuple[dict[float, tuple[int, int]], dict[str, tuple[int, int]]]:
    """What chunk ``k`` of a video decodes and extracts (both runners use this).

    Chunk ``k`` of a stream holds rows ``[k*R, (k+1)*R)`` with ``R = rows_per_chunk(plan,
    chunk_s)``; it needs output frames ``[k*R*stride, last start + window + context)``.

    Args:
        streams: ``(stream, plan, context_frames, total_frames)`` per video stream;
            ``total_frames`` (output frames of the whole video at ``plan.fps``) is None while
            unknown (a first chunk decoded without a probe): rows and frames are then not
            clipped to the video's end, :func:`decode_video` clips the frame ranges.
        k: chunk index.
        chunk_s: chunk length in seconds.

    Returns:
        ``({fps: (first, end) output frames to decode}, {stream: (r0, r1) rows of chunk k})``;
        streams with no rows in chunk ``k`` are left out.
    """
    ranges: dict[float, tuple[int, int]] = {}
    rows: dict[str, tuple[int, int]] = {}
    for stream, plan, context_frames, total in streams:
        per_chunk = rows_per_chunk(plan, chunk_s)
        r0, r1 = k * per_chunk, (k + 1) * per_chunk
        if total is not None:
            r1 = min(r1, plan.num_rows(total))
        if r0 >= r1:
            continue
        a, b = r0 * plan.step_units, (r1 - 1) * plan.step_units + plan.window_units + context_frames
        if total is not None:
            b = min(total, b)
        lo, hi = ranges.get(float(plan.fps), (a, b))
        ranges[float(plan.fps)] = (min(lo, a), max(hi, b))
        rows[stream] = (r0, r1)
    return ranges, rows


def window_index(plan: Any, r0: int, r1: int, *, context_frames: int, total_frames: int,
                 first_frame: int) -> torch.Tensor:
    """Frame indices of rows ``[r0, r1)``: ``(r1 - r0) x (window + context)`` into frames that
    start at output frame ``first_frame``. Windows are cut exactly as
    :func:`avel.extractors.base.cut_video_windows` cuts them (indices clamped to the last frame)."""
    starts = torch.arange(r0, r1) * plan.step_units
    idx = (starts[:, None] + torch.arange(plan.window_units + context_frames)).clamp_(max=total_frames - 1)
    return idx - first_frame


def extract_video_chunked(
    path: Path,
    extractors: Sequence[StreamExtractor],
    *,
    chunk_s: float,
    batch_size: int,
    device: torch.device,
    decode_timeout_s: float | None,
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, bool], dict[str, BaseException], VideoMeta]:
    """Extract every stream of one video, decoding about ``chunk_s`` seconds of frames at a time.

    Memory per video is bounded by one chunk of frames (plus the audio track, decoded once),
    whatever the video's length. Chunks are laid out by :func:`chunk_plan`; the frames of chunk
    ``k`` are decoded for all streams in one call and cut by :func:`window_index`.

    Returns rows and padded flags per stream, errors per failed stream, and the video metadata.
    Raises :class:`DecodeError` when the video cannot be opened at all. ``timings``, when given,
    gets ``decode_s`` added: the seconds spent decoding (the rest of the call is extraction).
    """
    request = decode_request(extractors)
    fps_list = request["fps"]
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    probe = decode_with_timeout(path, timeout_s=decode_timeout_s, fps=fps_list, short_side=request["short_side"],
                                sample_rate=request["sample_rate"], frame_ranges={f: (0, 0) for f in fps_list})
    timings["decode_s"] = timings.get("decode_s", 0.0) + time.perf_counter() - t0
    rows: dict[str, list[np.ndarray]] = {}
    padded: dict[str, bool] = {}
    errors: dict[str, BaseException] = {}
    video = []
    for se in extractors:
        ext = se.extractor
        plan = ext.plan
        if ext.modality == "audio":
            try:
                if probe.audio is None:
                    raise DecodeError(probe.audio_error or f"{path}: no audio")
                # a view: each batch of windows is copied when it is extracted, not all at once
                win = cut_audio_windows(torch.from_numpy(probe.audio), plan, context_samples=ext.context_samples,
                                        copy=False)
                rows[se.stream] = [_extract_batches(ext, win.data, batch_size=batch_size, device=device)]
                padded[se.stream] = win.padded
            except (DecodeError, ValueError, RuntimeError) as e:
                errors[se.stream] = e
            continue
        total = probe.total_frames[float(plan.fps)]
        video.append((se, total))
        rows[se.stream], padded[se.stream] = [], plan.is_padded(total)
    n_chunks = max((math.ceil(se.extractor.plan.num_rows(t) / rows_per_chunk(se.extractor.plan, chunk_s))
                    for se, t in video), default=0)
    for k in range(n_chunks):
        ranges, spans = chunk_plan([(se.stream, se.extractor.plan, se.extractor.context_frames, t)
                                    for se, t in video if se.stream not in errors], k, chunk_s)
        if not spans:
            continue
        t0 = time.perf_counter()
        chunk = decode_with_timeout(path, timeout_s=decode_timeout_s, fps=list(ranges),
                                    short_side=request["short_side"], sample_rate=None, frame_ranges=ranges)
        timings["decode_s"] += time.perf_counter() - t0
        for se, total in video:
            if se.stream not in spans:
                continue
            ext = se.extractor
            plan = ext.plan
            r0, r1 = spans[se.stream]
            try:
                frames = frames_for(chunk, ext.decode_spec)  # frames of [first, ...)
                idx = window_index(plan, r0, r1, context_frames=ext.context_frames, total_frames=total,
                                   first_frame=chunk.first_frame[float(plan.fps)])
                rows[se.stream].append(_extract_batches(ext, frames, index=idx, batch_size=batch_size,
                                                        device=device))
            except (ValueError, RuntimeError) as e:
                errors[se.stream] = e
    out = {s: np.concatenate(r, axis=0) for s, r in rows.items() if r and s not in errors}
    return out, {s: padded[s] for s in out}, errors, probe.meta


@dataclass
class RunReport:
    """What a run did; ``as_dict`` is the final JSON report."""

    videos_ok: int = 0
    videos_failed: int = 0
    videos_skipped: int = 0
    windows: int = 0
    decode_s: float = 0.0
    extract_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    startup_s: float = 0.0  # ray runner: Ray start / connect and actor construction (part of wall_s)
    bytes_written: int = 0
    failures: list[dict] = field(default_factory=list)
    started_s: float = field(default_factory=time.perf_counter)  # perf_counter when the run began

    def elapsed_s(self) -> float:
        """Wall-clock seconds since the run began (for live progress; ``wall_s`` is final)."""
        return time.perf_counter() - self.started_s

    def as_dict(self) -> dict[str, Any]:
        busy = {"decode": self.decode_s, "extract": self.extract_s, "write": self.write_s}
        return {
            "videos_ok": self.videos_ok, "videos_failed": self.videos_failed, "videos_skipped": self.videos_skipped,
            "windows": self.windows, "wall_s": round(self.wall_s, 3), "startup_s": round(self.startup_s, 3),
            "busy_s": {k: round(v, 3) for k, v in busy.items()},
            # each stage's throughput while it was busy: windows / that stage's busy seconds
            "windows_per_busy_s": {k: round(self.windows / v, 3) if v > 0 else None for k, v in busy.items()},
            "videos_per_s": round(self.videos_ok / self.wall_s, 3) if self.wall_s else None,
            "windows_per_s": round(self.windows / self.wall_s, 3) if self.wall_s else None,
            "bytes_written": self.bytes_written,
            "failures": self.failures[:50],
        }


# Failures of the machinery rather than of the video (a killed decoder, a dead Ray worker or
# actor, the OOM killer): recorded with ``retryable: true`` and redone by a plain rerun.
RETRYABLE_ERRORS = frozenset({"WorkerKilled", "WorkerCrashedError", "ActorDiedError", "ActorUnavailableError",
                              "NodeDiedError", "OutOfMemoryError"})


def record_failure(store_root: Path, report: RunReport, job: VideoJob, stage: str, exc: BaseException) -> None:
    rec = {"video_id": job.video_id, "path": str(job.path), "stage": stage, "error_type": type(exc).__name__,
           "message": str(exc)[:2000]}
    if type(exc).__name__ in RETRYABLE_ERRORS:
        rec["retryable"] = True  # the worker died, not the video: a rerun tries it again
    append_error(store_root, rec)
    report.failures.append(rec)


def run_sequential(
    jobs: Iterable[VideoJob],
    extractors: Sequence[StreamExtractor],
    writer: StoreWriter,
    *,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    decode_timeout_s: float | None = 600.0,
    chunk_s: float = 30.0,
    progress: Callable[[RunReport], None] | None = None,
) -> RunReport:
    """Decode and extract one video at a time (no overlap between stages), in chunks of
    about ``chunk_s`` seconds so memory does not grow with the video's length.

    A failing video is recorded in ``errors.jsonl`` (stage ``decode`` or ``extract:<stream>``)
    and the run goes on; an audio-less video still gets its visual streams.
    """
    device = torch.device(device)
    report = RunReport()
    committed = {se.stream: writer.committed(se.stream) for se in extractors}
    t_start = time.perf_counter()
    for job in jobs:
        todo = [se for se in extractors if job.video_id not in committed[se.stream]]
        if not todo:
            report.videos_skipped += 1
            continue
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            features, padded, errors, meta = extract_video_chunked(
                job.path, todo, chunk_s=chunk_s, batch_size=batch_size, device=device,
                decode_timeout_s=decode_timeout_s, timings=timings)
        except DecodeError as e:
            record_failure(writer.root, report, job, "decode", e)
            report.videos_failed += 1
            report.decode_s += time.perf_counter() - t0
            if progress:
                progress(report)
            continue
        report.decode_s += timings["decode_s"]
        report.extract_s += time.perf_counter() - t0 - timings["decode_s"]
        for stream, e in errors.items():
            record_failure(writer.root, report, job, f"extract:{stream}", e)
        failed = bool(errors)
        report.windows += sum(r.shape[0] for r in features.values())
        if features:
            t2 = time.perf_counter()
            writer.add(job.video_id, features, meta=meta, padded=padded)
            report.write_s += time.perf_counter() - t2
        if failed:
            report.videos_failed += 1
        else:
            report.videos_ok += 1
        if progress:
            progress(report)
    t3 = time.perf_counter()
    writer.flush()
    report.write_s += time.perf_counter() - t3
    report.wall_s = time.perf_counter() - t_start
    return report


def build_stream_extractors(
    names: Sequence[str],
    *,
    weights: Mapping[str, str | Path] | None = None,
    random_weights: bool = False,
    preset: str = "full",
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    fuse: bool = True,
) -> list[StreamExtractor]:
    """Instantiate extractors by registry name.

    Every extractor needs a weights path in ``weights`` unless ``random_weights`` is set
    explicitly (tests, demo): a real extraction never falls back to random weights. ``fuse``:
    rewrite each for inference (:meth:`Extractor.fuse_for_inference`, e.g. I3D's BatchNorm
    folded into its convolutions; rows move by float rounding only).
    """
    from avel.extractors import get

    weights = dict(weights or {})
    overrides = dict(overrides or {})
    out = []
    for name in names:
        cls = get(name)
        cfg = dict(overrides.get(name, {}))
        if name in weights:
            ext = cls.from_checkpoint(weights[name], device=device, preset=preset, **cfg)
        elif random_weights:
            ext = cls.random_init(device=device, preset=preset, **cfg)
        else:
            files = ", ".join(cls.checkpoint_files.values()) or "its checkpoint"
            raise ValueError(f"extractor {name!r} has no weights: pass --weights {name}=PATH ({files}); "
                             f"random weights only with --random-weights (tests and demos)")
        out.append(StreamExtractor(name, ext.fuse_for_inference() if fuse else ext))
    return out
