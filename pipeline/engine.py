"""Extraction without Ray (the local runner) and the stages both runners share.

Data flow (:func:`decode_chunk`, the same in both runners)::

    file --chunk k: decode_video(output frames of chunk k for every fps, short side = largest
                    need; chunk 0 also learns the frame counts and decodes the audio track)
         --per extractor: CPU resize/crop per its DecodeSpec--> frames T_k x H x W x 3 + window index
    windows of one stream, across chunks and videos --> full batches of `batch_size` --> rows
    rows of all chunks + plan times --> StoreWriter.add(video)

:func:`run_local` runs it in one process: a forked child decodes chunk k + 1 while the
parent extracts chunk k (:class:`WindowBatcher` carries windows across videos; only the run's
last batch is padded). The Ray pipeline in :mod:`avel.pipeline.ray_extract` runs the same
functions in its decode tasks and actors.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch

from avel.datasets.checks import NonFiniteRowsError, check_finite_rows
from avel.datasets.config_schema import ConfigError
from avel.datasets.store import StoreWriter, StreamSpec, append_error
from avel.pipeline.decode import DecodedVideo, DecodeError, start_decode
from avel.pipeline.jobs import VideoJob
from avel.pipeline.tuning import PRECISIONS

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass
class StreamExtractor:
    """An extractor bound to the store stream it fills."""

    stream: str
    extractor: Any  # avel.extractors.base.Extractor
    checked: Any = None  # a spec-only build's CheckpointReport, kept for this process's real build

    def spec(self) -> StreamSpec:
        ext = self.extractor
        return StreamSpec(
            extractor=ext.name,
            plan=ext.plan,
            feature_shape=tuple(ext.feature_shape),
            dtype="float32",
            config=ext.config.to_dict(),
            weights_sha256=ext.weights_sha256,
            provenance={"decode": _jsonable(ext.decode_spec), **ext.provenance()},
        )


def _jsonable(obj: Any) -> Any:
    import dataclasses

    d = dataclasses.asdict(obj)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def decode_request(extractors: Sequence[StreamExtractor]) -> dict[str, Any]:
    """Arguments of :func:`decode_video` that serve every extractor with one decode.

    Keys: ``fps`` (rates), ``short_side`` (largest short side asked for), ``sample_rate``,
    ``frame_selection`` (``{fps: rule}``) and ``pil_resize`` (``{fps: (short_side, size_hw)}``
    for rates whose extractor resizes with PIL). Extractors that share a rate must agree on its
    frame-selection rule and on a PIL target (``ValueError`` otherwise: run them separately).
    """
    fps: list[float] = []
    sides: list[int] = []
    sample_rate = None
    rules: dict[float, tuple[str, str]] = {}  # fps -> (rule, extractor that set it)
    pil: dict[float, tuple[Any, str]] = {}  # fps -> ((short_side, size_hw) or None, extractor)
    for se in extractors:
        spec = se.extractor.decode_spec
        if spec.modality == "video":
            f = float(spec.fps)
            if f not in fps:
                fps.append(f)
            if spec.short_side:
                sides.append(int(spec.short_side))
            if spec.size_hw:
                sides.append(int(max(spec.size_hw)))
            rule, first = rules.setdefault(f, (spec.frame_selection, se.stream))
            if rule != spec.frame_selection:
                raise ValueError(
                    f"streams {first!r} and {se.stream!r} select frames at {f:g} fps by different rules "
                    f"({rule!r} vs {spec.frame_selection!r}); run them separately"
                )
            target = (spec.short_side, tuple(spec.size_hw) if spec.size_hw else None) if spec.resize == "pil" else None
            known, first = pil.setdefault(f, (target, se.stream))
            if known != target:
                raise ValueError(
                    f"streams {first!r} and {se.stream!r} resize {f:g}-fps frames differently "
                    f"({known or 'torch'} vs {target or 'torch'}); run them separately"
                )
        else:
            if sample_rate not in (None, spec.sample_rate):
                raise ValueError(
                    f"audio extractors need different sample rates ({sample_rate} vs "
                    f"{spec.sample_rate}); run them separately"
                )
            sample_rate = int(spec.sample_rate)
    return {
        "fps": fps,
        "short_side": max(sides) if sides else None,
        "sample_rate": sample_rate,
        "frame_selection": {f: r for f, (r, _) in rules.items()},
        "pil_resize": {f: t for f, (t, _) in pil.items() if t is not None},
    }


def frame_args(request: Mapping[str, Any]) -> dict[str, Any]:
    """The frame arguments of :func:`decode_video` in a :func:`decode_request`."""
    return {
        "short_side": request["short_side"],
        "frame_selection": request.get("frame_selection", "previous"),
        "pil_resize": request.get("pil_resize"),
    }


def frames_for(decoded: DecodedVideo, spec: Any) -> torch.Tensor:
    """The frames one video extractor expects: resampled to its fps, then resized and cropped
    by the extractors' own rule (:func:`avel.extractors.preprocess.apply_decode_spec`)."""
    from avel.extractors.preprocess import apply_decode_spec

    return apply_decode_spec(torch.from_numpy(decoded.frames[float(spec.fps)]), spec).contiguous()


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for ``fp32``); ``ValueError`` names the choices."""
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return dtypes[precision]


def extract_batch(
    ext: Any, windows: torch.Tensor, *, batch_size: int, device: torch.device, precision: str = "fp32"
) -> np.ndarray:
    """Rows of ``windows`` (``n <= batch_size`` of them) from one device call: ``n x *feature_shape``.

    On the CPU every call has exactly ``batch_size`` windows: a short batch is padded with
    copies of its last window, whose rows are dropped. The kernels torch picks depend on the
    batch shape (batches of 1-3 windows gave rows up to 3e-8 away from batches of 8 for vggish
    and i3d); with one fixed shape a window's row is bitwise independent of its neighbours and
    of its position in the batch (measured for vgg19, vggish, i3d_rgb), so rows do not depend
    on how a runner groups windows. On a GPU batches are not padded (no bitwise promise there);
    the windows go through pinned memory with a non-blocking copy.

    Args:
        ext: the extractor.
        windows: ``n x ...`` windows as :meth:`Extractor.windows` cuts them (CPU tensor).
        batch_size: the fixed CPU batch shape.
        device: where ``ext`` lives.
        precision: ``fp32``, or ``bf16`` / ``fp16``: the model runs under ``torch.autocast``
            of that dtype on ``device`` (CUDA; on a CPU it works too, slower than fp32 on most);
            rows come back as float32.
    """
    dtype = autocast_dtype(precision)
    n = int(windows.shape[0])
    if n > batch_size:
        raise ValueError(f"{n} windows do not fit a batch of {batch_size}")
    if device.type == "cpu" and n < batch_size:
        windows = torch.cat([windows, windows[-1:].expand(batch_size - n, *windows.shape[1:])])
    if device.type == "cuda":
        windows = windows.pin_memory().to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        rows = ext.extract(windows.to(device))
    return rows[:n].float().cpu().numpy()


def rows_per_chunk(plan: Any, chunk_s: float) -> int:
    """Rows of one stream per chunk of about ``chunk_s`` seconds (at least one)."""
    return max(1, int(round(chunk_s / plan.step_seconds)))


def chunk_rows(plan: Any, k: int, chunk_s: float, first_chunk_s: float | None = None) -> tuple[int, int]:
    """Rows ``[r0, r1)`` of chunk ``k`` of one stream, not clipped to the video's end.

    Chunk 0 holds ``R0 = rows_per_chunk(plan, first_chunk_s)`` rows (``R`` when
    ``first_chunk_s`` is None or not shorter than ``chunk_s``), chunk ``k >= 1`` the ``R =
    rows_per_chunk(plan, chunk_s)`` rows after ``R0 + (k - 1) R``: the chunks tile the rows."""
    per_chunk = rows_per_chunk(plan, chunk_s)
    first = per_chunk if first_chunk_s is None else min(per_chunk, rows_per_chunk(plan, first_chunk_s))
    if k == 0:
        return 0, first
    return first + (k - 1) * per_chunk, first + k * per_chunk


def chunk_count(plan: Any, rows: int, chunk_s: float, first_chunk_s: float | None = None) -> int:
    """Chunks of one stream of ``rows`` rows (:func:`chunk_rows`; at least one)."""
    first = chunk_rows(plan, 0, chunk_s, first_chunk_s)[1]
    return 1 + max(0, math.ceil((rows - first) / rows_per_chunk(plan, chunk_s)))


def chunk_plan(
    streams: Sequence[tuple[str, Any, int, int | None]], k: int, chunk_s: float, first_chunk_s: float | None = None
) -> tuple[dict[float, tuple[int, int]], dict[str, tuple[int, int]]]:
    """What chunk ``k`` of a video decodes and extracts (both runners use this).

    Chunk ``k`` of a stream holds rows ``[r0, r1)`` (:func:`chunk_rows`: ``[k*R, (k+1)*R)``
    with ``R = rows_per_chunk(plan, chunk_s)``, or a shorter chunk 0 of ``first_chunk_s``
    seconds and the others after it); it needs output frames ``[r0*stride, last start +
    window + context)``.

    Args:
        streams: ``(stream, plan, context_frames, total_frames)`` per video stream;
            ``total_frames`` (output frames of the whole video at ``plan.fps``) is None while
            unknown (a first chunk decoded without a probe): rows and frames are then not
            clipped to the video's end, :func:`decode_video` clips the frame ranges.
        k: chunk index.
        chunk_s: chunk length in seconds.
        first_chunk_s: length of chunk 0 in seconds (None: ``chunk_s``).

    Returns:
        ``({fps: (first, end) output frames to decode}, {stream: (r0, r1) rows of chunk k})``;
        streams with no rows in chunk ``k`` are left out.
    """
    ranges: dict[float, tuple[int, int]] = {}
    rows: dict[str, tuple[int, int]] = {}
    for stream, plan, context_frames, total in streams:
        r0, r1 = chunk_rows(plan, k, chunk_s, first_chunk_s)
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


def window_index(
    plan: Any, r0: int, r1: int, *, context_frames: int, total_frames: int, first_frame: int
) -> torch.Tensor:
    """Frame indices of rows ``[r0, r1)``: ``(r1 - r0) x (window + context)`` into frames that
    start at output frame ``first_frame``. Windows are cut exactly as
    :func:`avel.extractors.base.cut_video_windows` cuts them (indices clamped to the last frame)."""
    starts = torch.arange(r0, r1) * plan.step_units
    idx = (starts[:, None] + torch.arange(plan.window_units + context_frames)).clamp_(max=total_frames - 1)
    return idx - first_frame


@dataclass(frozen=True)
class StreamInfo:
    """What a decode task needs to know about one requested stream (picklable, no model)."""

    name: str
    modality: str
    decode_spec: Any
    plan: Any
    context_frames: int
    context_samples: int

    @classmethod
    def of(cls, se: StreamExtractor) -> StreamInfo:
        ext = se.extractor
        return cls(
            se.stream, ext.modality, ext.decode_spec, ext.plan, int(ext.context_frames), int(ext.context_samples)
        )

    @property
    def window_length(self) -> int:
        """Frames or samples of one window, context included."""
        return self.plan.window_units + (self.context_frames if self.modality == "video" else self.context_samples)


def _one_torch_thread(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` run with one torch thread (a decode worker or forked child), the caller's count
    restored after (in-process calls)."""

    @functools.wraps(fn)
    def one_thread(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return one_thread


@_one_torch_thread
def decode_chunk(
    path: str,
    request: dict,
    streams: Sequence[StreamInfo],
    k: int,
    chunk_s: float,
    totals: dict[str, int] | None,
    first_chunk_s: float | None = None,
) -> list:
    """Decode chunk ``k`` of a video for every stream; returns ``[info, *payloads]`` (both
    runners: the body of the Ray decode task, and of the local runner's decode child).

    Args:
        path: the video file.
        request: :func:`decode_request` of the run's extractors.
        streams: the streams to extract; audio streams only in chunk 0 (the track is decoded
            once, whole).
        k: chunk index.
        chunk_s: chunk length in seconds.
        totals: ``{stream: output frames of the whole video}`` from chunk 0; None for chunk 0
            (the frame counts are learnt by decoding it, no separate probe).
        first_chunk_s: length of the video's chunk 0 in seconds (None: ``chunk_s``); the
            same value for every chunk of a video (:func:`chunk_plan`).

    Payload per stream (None when the stream failed or has no rows in this chunk): video
    ``(frames T x H x W x 3 uint8, index N x (window + context) int64 into frames)``; audio
    ``(waveform S' float32 zero-padded to the last window, starts N int64)``. ``info`` holds
    the metadata, frame counts, rows, padded flags and errors per stream, the busy seconds and
    ``frames``: per fps, output frames decoded, decoded again (the overlap with chunk
    ``k - 1``), duplicates (the same native frame as the previous output frame) and unused
    (in no window of this chunk).
    """
    from avel.pipeline.decode import decode_video

    t0 = time.perf_counter()
    video = [s for s in streams if s.modality == "video"]
    audio = [s for s in streams if s.modality == "audio"]
    ranges, _ = chunk_plan(
        [(s.name, s.plan, s.context_frames, (totals or {}).get(s.name)) for s in video], k, chunk_s, first_chunk_s
    )
    decoded = decode_video(
        path,
        fps=list(ranges),
        **frame_args(request),
        sample_rate=request["sample_rate"] if audio else None,
        frame_ranges=ranges,
    )
    known = totals or {}  # chunk k > 0 may not decode every fps (a stream without rows in it)
    counts: dict[str, int] = {}  # stream -> output frames of the whole video
    for s in video:
        total = decoded.total_frames.get(float(s.plan.fps), known.get(s.name))
        if total is None:  # chunk 0 decodes every fps and reports the counts later chunks get
            raise DecodeError(f"{path}: no frame count for stream {s.name} in chunk {k}")
        counts[s.name] = total
    described = [(s.name, s.plan, s.context_frames, counts[s.name]) for s in video]
    _, spans = chunk_plan(described, k, chunk_s, first_chunk_s)
    n_chunks = max(
        (chunk_count(s.plan, s.plan.num_rows(counts[s.name]), chunk_s, first_chunk_s) for s in video), default=1
    )
    info: dict[str, Any] = {
        "meta": decoded.meta,
        "totals": counts,
        "n_chunks": n_chunks,
        "rows": {},
        "padded": {},
        "errors": {},
    }
    payloads: list[Any] = []
    used: dict[float, set] = {}  # output frames (relative to first_frame) some window of this chunk reads
    for s in streams:
        try:
            if s.modality == "video":
                if s.name not in spans:
                    info["rows"][s.name] = 0
                    payloads.append(None)
                    continue
                r0, r1 = spans[s.name]
                frames = frames_for(decoded, s.decode_spec).numpy()  # frames from first_frame on
                idx = window_index(
                    s.plan,
                    r0,
                    r1,
                    context_frames=s.context_frames,
                    total_frames=counts[s.name],
                    first_frame=decoded.first_frame[float(s.plan.fps)],
                ).numpy()
                lo, hi = int(idx.min()), int(idx.max()) + 1  # ship only the frames the windows use
                used.setdefault(float(s.plan.fps), set()).update(np.unique(idx).tolist())
                payloads.append((np.ascontiguousarray(frames[lo:hi]), idx - lo))
                info["rows"][s.name] = r1 - r0
                info["padded"][s.name] = s.plan.is_padded(counts[s.name])
            else:
                if decoded.audio is None:
                    raise DecodeError(decoded.audio_error or f"{path}: no audio")
                n_samples = int(decoded.audio.shape[0])
                n = s.plan.num_rows(n_samples)
                starts = s.plan.window_bounds(n)[:, 0]
                need = int(starts[-1]) + s.plan.window_units + s.context_samples
                wave = np.zeros(max(need, n_samples), np.float32)  # zeros past the end, as cut_audio_windows
                wave[:n_samples] = decoded.audio
                payloads.append((wave, starts))
                info["rows"][s.name] = n
                info["padded"][s.name] = s.plan.is_padded(n_samples)
        except Exception as e:  # recorded per stream; the video's other streams still run
            info["errors"][s.name] = (type(e).__name__, str(e))
            info["rows"][s.name] = 0
            payloads.append(None)
    prev = chunk_plan(described, k - 1, chunk_s, first_chunk_s)[0] if k else {}
    info["frames"] = {}
    for fps, native in decoded.native_index.items():
        first = decoded.first_frame[fps]
        info["frames"][fps] = {
            "decoded": int(len(native)),
            "redecoded": max(0, min(prev.get(fps, (0, 0))[1], first + len(native)) - first) if k else 0,
            "duplicate": int(np.count_nonzero(native[1:] == native[:-1])),
            "unused": int(len(native)) - len(used.get(fps, ())),
        }
    info["busy_s"] = time.perf_counter() - t0
    return [info, *payloads]


def payload_windows(payload: tuple[np.ndarray, np.ndarray], a: int, b: int, stream: StreamInfo) -> np.ndarray:
    """Windows ``a..b`` of a :func:`decode_chunk` payload: video ``n x (window + context) x H x
    W x 3`` uint8 (gathered by the window index), audio ``n x samples`` float32."""
    data, index = payload
    if stream.modality == "video":
        return data[index[a:b]]
    return data[index[a:b, None] + np.arange(stream.window_length)]


class WorkCounts:
    """Work done vs work written, summed over a run (the report's ``work``).

    ``windows_computed`` counts every window a model ran on, the padding of short batches
    included; ``windows_written`` the rows stored. Frames are output frames at a plan's fps:
    ``decoded`` (chunk overlaps decoded again are in ``redecoded``), ``duplicate`` (the same
    native frame as the one before: the source rate is below the plan's), ``unused`` (read by no
    window of their chunk: the tail after the last window, gaps of stride > window).
    """

    def __init__(self) -> None:
        self.windows_computed: dict[str, int] = {}
        self.windows_written: dict[str, int] = {}
        self.frames: dict[float, dict[str, int]] = {}

    def computed(self, stream: str, n: int) -> None:
        self.windows_computed[stream] = self.windows_computed.get(stream, 0) + int(n)

    def written(self, stream: str, n: int) -> None:
        self.windows_written[stream] = self.windows_written.get(stream, 0) + int(n)

    def add_frames(self, frames: Mapping[float, Mapping[str, int]]) -> None:
        for fps, counts in frames.items():
            acc = self.frames.setdefault(float(fps), {})
            for key, n in counts.items():
                acc[key] = acc.get(key, 0) + int(n)

    def as_dict(self) -> dict[str, Any]:
        computed, written = sum(self.windows_computed.values()), sum(self.windows_written.values())
        return {
            "windows_computed": computed,
            "windows_written": written,
            "windows_wasted": computed - written,  # padding of short batches, rows of failed videos
            "per_stream": {
                s: {"computed": n, "written": self.windows_written.get(s, 0)}
                for s, n in sorted(self.windows_computed.items())
            },
            "frames": {f"{fps:g}": dict(c) for fps, c in sorted(self.frames.items())},
        }


class WindowBatcher:
    """Windows of one stream from consecutive chunks and videos, extracted in full batches.

    Pieces are queued in order; a batch is run as soon as ``batch_size`` windows are queued, so
    a video's last windows share a batch with the next video's first ones and only the run's
    last batch (:meth:`flush`) is padded. Results come back in order as ``(owner, rows)`` or
    ``(owner, exception)`` for every piece of a failed batch.
    """

    def __init__(
        self,
        stream: str,
        ext: Any,
        batch_size: int,
        device: torch.device,
        work: WorkCounts,
        timings: dict[str, float],
        *,
        precision: str = "fp32",
    ) -> None:
        self.stream, self.ext, self.batch_size, self.device = stream, ext, int(batch_size), device
        self.precision = precision
        self.work, self.timings = work, timings
        self.pending: list[tuple[Any, torch.Tensor]] = []
        self.queued = 0
        self.pieces_added = 0  # pieces queued so far (each comes back once as a result)

    def add(
        self, owner: Any, windows: Callable[[int, int], np.ndarray | torch.Tensor], n: int
    ) -> list[tuple[Any, np.ndarray | BaseException]]:
        """Queue ``n`` windows of ``owner`` (``windows(a, b)`` cuts rows ``a..b``); returns the
        results of the batches this completed."""
        out: list[tuple[Any, np.ndarray | BaseException]] = []
        a = 0
        while a < n:
            take = min(n - a, self.batch_size - self.queued)
            self.pending.append((owner, torch.as_tensor(windows(a, a + take))))
            self.pieces_added += 1
            self.queued += take
            a += take
            if self.queued == self.batch_size:
                out.extend(self._run())
        return out

    def flush(self) -> list[tuple[Any, np.ndarray | BaseException]]:
        """Run what is queued (the run's last, padded batch)."""
        return self._run() if self.pending else []

    def _run(self) -> list[tuple[Any, np.ndarray | BaseException]]:
        pieces, self.pending, n, self.queued = self.pending, [], self.queued, 0
        batch = pieces[0][1] if len(pieces) == 1 else torch.cat([w for _, w in pieces])
        t0 = time.perf_counter()
        try:
            rows = extract_batch(
                self.ext, batch, batch_size=self.batch_size, device=self.device, precision=self.precision
            )
        except (ValueError, RuntimeError) as e:
            return [(owner, e) for owner, _ in pieces]
        finally:
            self.timings["extract_s"] = self.timings.get("extract_s", 0.0) + time.perf_counter() - t0
            self.work.computed(self.stream, self.batch_size if self.device.type == "cpu" else n)
        out: list[tuple[Any, np.ndarray | BaseException]] = []
        offset = 0
        for owner, w in pieces:
            out.append((owner, rows[offset : offset + len(w)]))
            offset += len(w)
        return out


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
    startup_s: float = 0.0  # ray runner: Ray start / connect and actor submission (part of wall_s)
    load_s: float = 0.0  # building the models (ray: the actors), overlapped with the first decode
    bytes_written: int = 0
    failures: list[dict] = field(default_factory=list)
    work: WorkCounts = field(default_factory=WorkCounts)
    settings: dict[str, Any] = field(default_factory=dict)  # runner, batch sizes, ... and why
    started_s: float = field(default_factory=time.perf_counter)  # perf_counter when the run began

    def elapsed_s(self) -> float:
        """Wall-clock seconds since the run began (for live progress; ``wall_s`` is final)."""
        return time.perf_counter() - self.started_s

    def as_dict(self) -> dict[str, Any]:
        busy = {"decode": self.decode_s, "extract": self.extract_s, "write": self.write_s}
        return {
            "videos_ok": self.videos_ok,
            "videos_failed": self.videos_failed,
            "videos_skipped": self.videos_skipped,
            "windows": self.windows,
            "wall_s": round(self.wall_s, 3),
            "startup_s": round(self.startup_s, 3),
            "busy_s": {k: round(v, 3) for k, v in busy.items()},
            # each stage's throughput while it was busy: windows / that stage's busy seconds
            "windows_per_busy_s": {k: round(self.windows / v, 3) if v > 0 else None for k, v in busy.items()},
            "videos_per_s": round(self.videos_ok / self.wall_s, 3) if self.wall_s else None,
            "windows_per_s": round(self.windows / self.wall_s, 3) if self.wall_s else None,
            "bytes_written": self.bytes_written,
            "load_s": round(self.load_s, 3),
            "settings": self.settings,
            "work": self.work.as_dict(),
            "failures": self.failures[:50],
        }


# Failures of the machinery rather than of the video (a killed decoder, a dead Ray worker or
# actor, the OOM killer): recorded with ``retryable: true`` and redone by a plain rerun.
RETRYABLE_ERRORS = frozenset(
    {
        "WorkerKilled",
        "WorkerCrashedError",
        "ActorDiedError",
        "ActorUnavailableError",
        "NodeDiedError",
        "OutOfMemoryError",
    }
)


def record_failure(store_root: Path, report: RunReport, job: VideoJob, stage: str, exc: BaseException) -> None:
    rec: dict[str, Any] = {
        "video_id": job.video_id,
        "path": str(job.path),
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": str(exc)[:2000],
    }
    if type(exc).__name__ in RETRYABLE_ERRORS:
        rec["retryable"] = True  # the worker died, not the video: a rerun tries it again
    append_error(store_root, rec)
    report.failures.append(rec)


@dataclass
class _LocalVideo:
    """A video in flight in the local runner."""

    job: VideoJob
    streams: list[StreamInfo]
    first_chunk_s: float | None = None  # length of its chunk 0 (None: chunk_s)
    meta: Any = None
    totals: dict[str, int] | None = None
    chunks_left: int = 1  # chunk 0 reports the real count
    pending: int = 0  # windows queued in a batcher, not yet returned
    rows: dict[str, list[np.ndarray]] = field(default_factory=dict)
    padded: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    failed: bool = False  # a decode failed: nothing is written
    done: bool = False  # written (or counted as failed)


def run_local(
    jobs: Iterable[VideoJob],
    extractors: Sequence[StreamExtractor],
    writer: StoreWriter,
    *,
    batch_size: int | Mapping[str, int] = 1,
    device: torch.device | str = "cpu",
    decode_timeout_s: float | None = 600.0,
    chunk_s: float = 30.0,
    first_chunk_s: float | None = 4.0,
    progress: Callable[[RunReport], None] | None = None,
    load: Callable[[], Sequence[StreamExtractor]] | None = None,
    claim_poll_s: float = 0.5,
    precision: str = "fp32",
) -> RunReport:
    """Extract in one process: chunks of about ``chunk_s`` seconds decoded one ahead in a
    forked child (:func:`avel.pipeline.decode.start_decode`, killed after ``decode_timeout_s``)
    while the previous chunk is extracted, windows carried across chunks and videos so that
    every batch is full except the run's last one per stream (:class:`WindowBatcher`), a video
    written as soon as all its rows are back. Memory stays bounded by about two chunks of frames
    whatever the videos' length. ``decode_timeout_s=None`` decodes in-process (no overlap).

    Args:
        batch_size: windows per device call, one value or ``{stream: value}``.
        chunk_s: chunk length in seconds (:func:`chunk_plan`).
        first_chunk_s: chunk 0 of the run's first video lasts this many seconds (None:
            ``chunk_s``). Nothing decodes ahead of that chunk, so the model waits for it: a
            whole 30-s chunk of a 360p clip kept it idle ~1 s on the 2-core machine, a 4-s one
            ~0.2 s; the video's next chunk then decodes while the short one is extracted.
            Later videos decode while the one before is extracted, and keep ``chunk_s``.
        precision: ``fp32`` | ``bf16`` | ``fp16`` (autocast, :func:`extract_batch`).
        load: when given, ``extractors`` only describe the streams (e.g. built on the meta
            device) and ``load()`` builds the real ones (same order); it is called once the
            first decode has started, so the model loads while the video decodes
            (``report.load_s``).

    Videos are claimed in the store before they are decoded (:meth:`StoreWriter.claim`), so
    several writers of one store extract each video once; a video another live writer holds is
    retried every ``claim_poll_s`` after the others, until it is committed or taken over.

    A failing video is recorded in ``errors.jsonl`` (stage ``decode`` or ``extract:<stream>``)
    and the run goes on; an audio-less video still gets its visual streams.
    """
    device = torch.device(device)
    autocast_dtype(precision)  # a bad value fails before any decode
    report = RunReport()
    t_start = report.started_s
    infos = [StreamInfo.of(se) for se in extractors]
    by_name = {i.name: i for i in infos}
    request = decode_request(extractors)
    sizes = {
        se.stream: int(batch_size[se.stream] if isinstance(batch_size, Mapping) else batch_size) for se in extractors
    }
    committed = {i.name: writer.committed(i.name) for i in infos}
    todo = deque(jobs)
    tasks: deque[tuple[_LocalVideo, int]] = deque()  # chunks k >= 1 of the current video, before new ones
    timings: dict[str, float] = {}
    batchers: dict[str, WindowBatcher] = {}

    deferred: list[VideoJob] = []  # claimed by another live writer: retried at the end
    lead_s = first_chunk_s  # chunk 0 of the run's first video; None once it is claimed

    def next_task() -> tuple[_LocalVideo, int] | None:
        nonlocal lead_s
        if tasks:
            return tasks.popleft()
        while todo:
            job = todo.popleft()
            streams = [i for i in infos if job.video_id not in committed[i.name]]
            if not streams:
                report.videos_skipped += 1
                continue
            # claims share the videos with other writers of the store: each is extracted once
            status = writer.claim(job.video_id)
            if status == "mine":
                video, lead_s = _LocalVideo(job, streams, lead_s), None
                return video, 0
            if status == "busy":
                deferred.append(job)
            else:  # committed meanwhile, or failed under a live writer
                report.videos_skipped += 1
        return None

    def submit(task: tuple[_LocalVideo, int] | None):
        if task is None:
            return None
        v, k = task
        streams = [s for s in v.streams if (k == 0 or s.modality == "video") and s.name not in v.errors]
        return (
            task,
            streams,
            start_decode(
                v.job.path,
                timeout_s=decode_timeout_s,
                fn=decode_chunk,
                request=request,
                streams=streams,
                k=k,
                chunk_s=chunk_s,
                totals=v.totals,
                first_chunk_s=v.first_chunk_s,
            ),
        )

    def finish(v: _LocalVideo) -> None:
        if v.pending or v.chunks_left or v.done:
            return
        v.done = True
        if not v.failed:
            features = {}
            for s in v.streams:
                if s.name in v.errors or not v.rows.get(s.name):
                    continue
                try:  # a non-finite row is a recorded failure of this video and stream, never written
                    features[s.name] = check_finite_rows(
                        np.concatenate(v.rows[s.name], axis=0).astype(np.float32, copy=False),
                        video_id=v.job.video_id,
                        stream=s.name,
                        source=str(v.job.path),
                    )
                except NonFiniteRowsError as e:
                    v.errors[s.name] = e
            for stream, error in v.errors.items():
                record_failure(writer.root, report, v.job, f"extract:{stream}", error)
            if features:
                t0 = time.perf_counter()
                writer.add(v.job.video_id, features, meta=v.meta, padded={s: v.padded[s] for s in features})
                report.write_s += time.perf_counter() - t0
                for stream, r in features.items():
                    report.work.written(stream, r.shape[0])
                    report.windows += r.shape[0]
        if v.failed or v.errors:
            report.videos_failed += 1
        else:
            report.videos_ok += 1
        # its claim: kept until the shard is committed when written, released at once when not
        # (another writer of the store may retry it)
        writer.settle(v.job.video_id)
        if progress:
            progress(report)

    def deliver(results: list[tuple[Any, np.ndarray | BaseException]]) -> None:
        done = []
        for (v, stream), rows in results:
            v.pending -= 1
            if isinstance(rows, BaseException):
                v.errors.setdefault(stream, rows)
            elif stream not in v.errors:
                v.rows.setdefault(stream, []).append(rows)
            if not v.pending:
                done.append(v)
        for v in done:
            finish(v)

    current = submit(next_task())
    if load is not None:
        t0 = time.perf_counter()
        extractors = list(load())
        report.load_s = time.perf_counter() - t0
    for se in extractors:
        batchers[se.stream] = WindowBatcher(
            se.stream, se.extractor, sizes[se.stream], device, report.work, timings, precision=precision
        )
    while current is not None:
        (v, k), streams, pending = current
        try:
            info, *payloads = pending.result()
        except DecodeError as e:
            info = None
            if not v.failed:
                v.failed = True
                record_failure(writer.root, report, v.job, "decode", e)
            v.chunks_left = 0
            tasks.clear()  # its other chunks
        else:
            report.decode_s += info["busy_s"]
            report.work.add_frames(info["frames"])
            if k == 0:
                v.meta, v.totals = info["meta"], info["totals"]
                v.chunks_left = info["n_chunks"]
                tasks.extend((v, j) for j in range(1, info["n_chunks"]))
        current = submit(next_task())  # decodes while this chunk is extracted
        if info is not None:
            for s, payload in zip(streams, payloads):
                if s.name in info["errors"]:
                    name, msg = info["errors"][s.name]
                    v.errors.setdefault(
                        s.name, DecodeError(msg) if name == "DecodeError" else RuntimeError(f"{name}: {msg}")
                    )
                    continue
                if s.name in info["padded"]:
                    v.padded[s.name] = info["padded"][s.name]
                n = info["rows"][s.name]
                if not n or s.name in v.errors:
                    continue
                b = batchers[s.name]
                before = b.pieces_added
                results = b.add((v, s.name), functools.partial(payload_windows, payload, stream=by_name[s.name]), n)
                v.pending += b.pieces_added - before
                deliver(results)
            v.chunks_left -= 1  # after its windows are queued: the video cannot finish before
        finish(v)
        if current is None:
            for b in batchers.values():
                deliver(b.flush())
            while current is None and deferred:  # ours are written: commit them (the other writers
                writer.flush()  # may wait for those claims), then retry the videos others held
                time.sleep(claim_poll_s)
                todo.extend(deferred)
                deferred.clear()
                current = submit(next_task())
    t3 = time.perf_counter()
    writer.flush()
    report.write_s += time.perf_counter() - t3
    report.extract_s = timings.get("extract_s", 0.0)
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
    spec_only: bool = False,
    keep_checked: bool = False,
    checked: Mapping[str, Any] | None = None,
) -> list[StreamExtractor]:
    """Instantiate extractors by registry name.

    Every extractor needs a weights path in ``weights`` unless ``random_weights`` is set
    explicitly (tests, demo): a real extraction never falls back to random weights. ``fuse``:
    rewrite each for inference (:meth:`Extractor.fuse_for_inference`, e.g. I3D's BatchNorm
    folded into its convolutions; rows move by float rounding only). ``spec_only``: modules on
    the meta device (no model built): plans, decode specs and store specs, for a driver that
    never runs the models; a checkpoint is still read and checked (keys, shapes, what
    :meth:`Extractor.inspect_checkpoint` learns from it, its sha256), so a bad file stops the
    run before any start-up. ``keep_checked`` (with ``spec_only``): each checkpoint's report,
    with the tensors read, stays on its :class:`StreamExtractor` (``checked``), so that a real
    build later in this process takes them as ``checked={stream: report}`` instead of reading
    and hashing the files again (the local runner: 0.1-0.3 s for I3D on the 2-core machine).
    """
    from avel.extractors import get
    from avel.extractors.base import RANDOM_WEIGHTS

    weights = dict(weights or {})
    overrides = dict(overrides or {})
    out = []
    for name in names:
        try:
            cls = get(name)
        except KeyError as e:
            raise ConfigError(e.args[0]) from None
        cfg = dict(overrides.get(name, {}))
        default = getattr(cls, "default_weights", None)  # a backbone file may name its weights
        path = weights.get(name) or (None if random_weights else default)
        if path is None and not random_weights:
            files = ", ".join(cls.checkpoint_files.values()) or "its checkpoint"
            raise ConfigError(
                f"extractor {name!r} has no weights: pass --weights {name}=PATH ({files}); "
                f"random weights only with --random-weights (tests and demos)"
            )
        report = None
        if spec_only:
            ext = cls.build(device="meta", preset=preset, **cfg)
            if path is not None:
                report = cls.check_checkpoint(path, preset=preset, **cfg)
                if not report.ok:
                    raise report.error()
                ext.adopt_checkpoint(report.info)
                ext.weights_sha256 = report.weights_sha256
            else:
                ext.weights_sha256 = RANDOM_WEIGHTS
        else:
            earlier = (checked or {}).get(cls.name)
            ext = (
                cls.from_checkpoint(
                    path, device=device, preset=preset, **cfg, **({"checked": earlier} if earlier else {})
                )
                if path is not None
                else cls.random_init(device=device, preset=preset, **cfg)
            )
            ext = ext.fuse_for_inference() if fuse else ext
        # a backbone given as a .yaml path streams under its name
        out.append(StreamExtractor(cls.name, ext, checked=report if keep_checked else None))
    return out
