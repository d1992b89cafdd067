"""Scheduling state of the Ray runner, without Ray: what is queued, in flight, done and failed.

:class:`ExtractionScheduler` holds every piece of state of one run of
:class:`avel.pipeline.ray_extract.RayExtraction` and the rules that move work along; the driver
only submits what it is told to submit and reports back what finished. Tasks in flight are
identified by opaque tokens (Ray object references in the driver, anything hashable in tests).

Life of a video: claimed -> chunk 0 decoding -> (chunk 0 reports the number of chunks) chunks
1..n-1 decoding, before any new video -> each chunk's rows queued per stream -> extracted in
batches of exactly ``batch_size`` rows (rows of several videos and chunks share a batch) ->
when no row, chunk or decode of the video is left: finished (``on_finish``) -> written by the
driver.

The back-pressure rule: a decode is started only while fewer than ``decode_slots`` decodes run
and every stream's queue holds fewer than ``high_water = batch_size * (max_calls_in_flight *
actors + 1)`` rows (enough for every actor's calls in flight plus one batch); a batch is sent
only when a full one is queued (or no input is left) and the least-loaded actor of the stream
has fewer than ``max_calls_in_flight`` calls.

Failures: a decode that fails or times out fails its video (nothing is written; its queued rows
are dropped); a failed batch fails that stream of the videos in it (the other streams are still
written). Each failure is reported once per video and stream through ``on_failure``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from avel.datasets.checks import NonFiniteRowsError, check_finite_rows
from avel.pipeline.jobs import VideoJob

MAX_CALLS_IN_FLIGHT = 2  # per actor: the next batch's inputs arrive while one runs


class StreamLike(Protocol):
    """What the scheduler needs of a stream."""

    @property
    def name(self) -> str: ...

    @property
    def modality(self) -> str: ...


@dataclass
class VideoState:
    """One claimed video of the run.

    Attributes:
        job: the video.
        streams: the streams it still needs (those not committed yet).
        meta / totals: from chunk 0 (video metadata; frames per stream of the whole video).
        chunks_left: decodes not yet completed (chunk 0 reports the real count).
        pending_rows: rows queued or being extracted.
        rows: stream -> {chunk: rows of the chunk, in order}.
        parts: (stream, chunk) -> (rows expected, [(first row, rows)] received so far).
        padded: stream -> the input was shorter than one window.
        failed_streams: streams whose extraction failed (not written).
        failed: a decode failed: nothing of the video is written.
    """

    job: VideoJob
    streams: list[Any]
    meta: Any = None
    totals: dict[str, int] | None = None
    chunks_left: int = 1
    pending_rows: int = 0
    rows: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    parts: dict[tuple[str, int], tuple[int, list[tuple[int, np.ndarray]]]] = field(default_factory=dict)
    padded: dict[str, bool] = field(default_factory=dict)
    failed_streams: set[str] = field(default_factory=set)
    failed: bool = False

    @property
    def ok(self) -> bool:
        return not (self.failed or self.failed_streams)

    def features(self) -> dict[str, np.ndarray]:
        """stream -> all rows of the video (chunks in order); failed streams left out."""
        if self.failed:
            return {}
        return {
            s.name: np.concatenate([r for _, r in sorted(self.rows.get(s.name, {}).items())], axis=0)
            for s in self.streams
            if s.name not in self.failed_streams
        }


@dataclass
class DecodeTask:
    """A decode in flight: chunk ``chunk`` of ``video_id``, one output token per stream."""

    token: Hashable
    video_id: str
    chunk: int
    outputs: list[tuple[str, Hashable]]  # (stream, token of its payload)
    started_s: float


@dataclass
class BatchTask:
    """An extraction call in flight: ``pieces`` = (video id, chunk, first row, end row)."""

    stream: str
    actor: int
    pieces: list[tuple[str, int, int, int]]


@dataclass
class QueuedRows:
    """Rows ``first..end`` of one decoded chunk's payload, waiting for extraction."""

    video_id: str
    chunk: int
    payload: Hashable
    first: int
    end: int


FinishFn = Callable[[VideoState], None]
FailureFn = Callable[[VideoJob, str, BaseException], None]


class ExtractionScheduler:
    """The state of one extraction run and its rules (module doc).

    Args:
        jobs: the videos of the run, in order.
        streams: the run's streams (``name``, ``modality``).
        committed: stream -> video ids already in the store (skipped; a video missing only some
            streams gets those).
        pool_sizes: stream -> actors in its pool.
        batch_sizes: stream -> rows per extraction call.
        decode_slots: decodes in flight at most.
        decode_timeout_s: a decode running longer fails its video (:meth:`expire_decodes`).
        on_finish: called with each video when it is done (also failed ones: ``video.ok``).
        on_failure: called once per (video, stream) that failed with ``(job, stage, error)``.
        max_calls_in_flight: per actor.
    """

    def __init__(
        self,
        jobs: Sequence[VideoJob],
        streams: Sequence[StreamLike],
        committed: Mapping[str, set[str]],
        *,
        pool_sizes: Mapping[str, int],
        batch_sizes: Mapping[str, int],
        decode_slots: int,
        decode_timeout_s: float,
        on_finish: FinishFn,
        on_failure: FailureFn,
        max_calls_in_flight: int = MAX_CALLS_IN_FLIGHT,
    ) -> None:
        self.streams = list(streams)
        self.committed = committed
        self.todo: deque[VideoJob] = deque(
            j for j in jobs if not all(j.video_id in committed[s.name] for s in self.streams)
        )
        self.skipped = len(jobs) - len(self.todo)  # committed already, or claimed by another writer
        self.chunk_tasks: deque[tuple[str, int]] = deque()  # (video id, k >= 1): before new videos
        self.videos: dict[str, VideoState] = {}
        self.decoding: dict[Hashable, DecodeTask] = {}
        self.queues: dict[str, deque[QueuedRows]] = {s.name: deque() for s in self.streams}
        self.queued = {s.name: 0 for s in self.streams}  # rows in each queue
        self.running: dict[Hashable, BatchTask] = {}
        self.load = {s.name: [0] * pool_sizes[s.name] for s in self.streams}  # calls in flight per actor
        self.batch_sizes = dict(batch_sizes)
        self.max_calls_in_flight = max_calls_in_flight
        self.high_water = {
            s.name: batch_sizes[s.name] * (max_calls_in_flight * pool_sizes[s.name] + 1) for s in self.streams
        }
        self.decode_slots = max(1, decode_slots)
        self.decode_timeout_s = decode_timeout_s
        self.on_finish = on_finish
        self.on_failure = on_failure

    # -- state ---------------------------------------------------------------------------------
    @property
    def input_left(self) -> bool:
        """Videos or chunks not decoded yet (or decoding)."""
        return bool(self.todo or self.chunk_tasks or self.decoding)

    @property
    def busy(self) -> bool:
        """Anything left to do."""
        return self.input_left or bool(self.running) or any(self.queues.values())

    def in_flight(self) -> list[Hashable]:
        """Tokens of the decodes and extraction calls running."""
        return [*self.decoding, *self.running]

    def calls_in_flight(self) -> dict[str, int]:
        return {s: sum(n) for s, n in self.load.items()}

    # -- decoding ------------------------------------------------------------------------------
    def next_decode(self, claim: Callable[[str], bool]) -> tuple[VideoState, int, list[Any]] | None:
        """The next chunk to decode as ``(video, chunk, streams to decode)``, or None (back-pressure
        or nothing left). Remaining chunks of started videos come first; a new video must be
        won by ``claim(video_id)`` (others are skipped)."""
        while (
            len(self.decoding) < self.decode_slots
            and (self.chunk_tasks or self.todo)
            and all(self.queued[s] < self.high_water[s] for s in self.queued)
        ):
            if self.chunk_tasks:
                vid, k = self.chunk_tasks.popleft()
                v = self.videos[vid]
                if v.failed:
                    continue
            else:
                job = self.todo.popleft()
                if not claim(job.video_id):  # committed or held by another writer
                    self.skipped += 1
                    continue
                v = VideoState(job, [s for s in self.streams if job.video_id not in self.committed[s.name]])
                self.videos[job.video_id] = v
                k = 0
            return v, k, [s for s in v.streams if k == 0 or s.modality == "video"]
        return None

    def decode_started(
        self, token: Hashable, video_id: str, chunk: int, outputs: Iterable[tuple[str, Hashable]], now_s: float
    ) -> None:
        self.decoding[token] = DecodeTask(token, video_id, chunk, list(outputs), now_s)

    def expire_decodes(self, now_s: float, done: Iterable[Hashable] = ()) -> list[DecodeTask]:
        """Decodes running longer than ``decode_timeout_s`` (not in ``done``): removed, their
        videos failed; the driver cancels them."""
        finished = set(done)
        expired = []
        for token, task in list(self.decoding.items()):
            if token not in finished and now_s - task.started_s > self.decode_timeout_s:
                del self.decoding[token]
                expired.append(task)
                v = self.videos[task.video_id]
                v.chunks_left -= 1
                self._fail_video(
                    task.video_id,
                    TimeoutError(f"{v.job.path}: decoding took longer than {self.decode_timeout_s:g} s; worker killed"),
                )
        return expired

    def decode_failed(self, token: Hashable, error: BaseException) -> DecodeTask:
        """The decode raised (or its worker died): its video fails."""
        task = self.decoding.pop(token)
        self.videos[task.video_id].chunks_left -= 1
        self._fail_video(task.video_id, error)
        return task

    def decode_done(self, token: Hashable, info: Mapping[str, Any]) -> bool:
        """A decode's info (``meta``, ``totals``, ``n_chunks`` from chunk 0; per stream ``rows``,
        ``padded``, ``errors``): queues its rows, schedules the video's other chunks. False when
        the video had already failed (the chunk is dropped)."""
        task = self.decoding.pop(token)
        vid, k = task.video_id, task.chunk
        v = self.videos[vid]
        v.chunks_left -= 1
        if v.failed:
            self._maybe_finish(vid)
            return False
        if k == 0:
            v.meta, v.totals = info["meta"], info["totals"]
            v.chunks_left += info["n_chunks"] - 1
            self.chunk_tasks.extendleft((vid, j) for j in range(info["n_chunks"] - 1, 0, -1))
        for stream, payload in task.outputs:
            if stream in info["errors"]:
                name, msg = info["errors"][stream]
                self._fail_stream(v, stream, RuntimeError(f"{name}: {msg}"))
                continue
            n = info["rows"][stream]
            if stream in info["padded"]:
                v.padded[stream] = info["padded"][stream]
            if n:
                self.queues[stream].append(QueuedRows(vid, k, payload, 0, n))
                self.queued[stream] += n
                v.pending_rows += n
                v.parts[(stream, k)] = (n, [])
        self._maybe_finish(vid)
        return True

    # -- extraction ----------------------------------------------------------------------------
    def next_batch(
        self, stream: str, *, final: bool
    ) -> tuple[int, list[tuple[str, int, int, int]], list[Hashable]] | None:
        """``(actor, pieces, payload tokens)`` of the next call of ``stream``, or None: fewer than
        ``batch_size`` rows queued (unless ``final``: no input left) or every actor busy. The
        pieces (video id, chunk, first row, end row) hold ``batch_size`` rows at most."""
        q, batch = self.queues[stream], self.batch_sizes[stream]
        if not q or not (self.queued[stream] >= batch or final):
            return None
        load = self.load[stream]
        actor = int(np.argmin(load))
        if load[actor] >= self.max_calls_in_flight:
            return None
        pieces: list[tuple[str, int, int, int]] = []
        payloads: list[Hashable] = []
        n = 0
        while q and n < batch:
            item = q[0]
            take = min(item.end - item.first, batch - n)
            pieces.append((item.video_id, item.chunk, item.first, item.first + take))
            payloads.append(item.payload)
            n += take
            item.first += take
            if item.first == item.end:
                q.popleft()
        self.queued[stream] -= n
        load[actor] += 1
        return actor, pieces, payloads

    def batch_started(self, token: Hashable, stream: str, actor: int, pieces: list[tuple[str, int, int, int]]) -> None:
        self.running[token] = BatchTask(stream, actor, pieces)

    def batch_done(self, token: Hashable, rows: np.ndarray | None, error: BaseException | None = None) -> BatchTask:
        """A call returned ``rows`` (``n x *feature_shape``, the pieces' rows in order), or
        failed with ``error`` (that stream of its videos fails)."""
        task = self.running.pop(token)
        self.load[task.stream][task.actor] -= 1
        offset = 0
        for vid, k, a, b in task.pieces:
            v = self.videos[vid]
            v.pending_rows -= b - a
            if rows is None:
                self._fail_stream(v, task.stream, error or RuntimeError("extraction failed"))
            elif not v.failed and task.stream not in v.failed_streams:
                expected, got = v.parts[(task.stream, k)]
                got.append((a, rows[offset : offset + b - a]))
                if sum(len(r) for _, r in got) == expected:  # the chunk's rows, in order
                    chunk_rows = np.concatenate([r for _, r in sorted(got, key=lambda p: p[0])], axis=0)
                    del v.parts[(task.stream, k)]
                    try:  # a non-finite row is a recorded failure of this video and stream, never written
                        v.rows.setdefault(task.stream, {})[k] = check_finite_rows(
                            chunk_rows, video_id=vid, stream=task.stream, source=str(v.job.path)
                        )
                    except NonFiniteRowsError as e:
                        self._fail_stream(v, task.stream, e)
            offset += b - a
            self._maybe_finish(vid)
        return task

    # -- failures and completion ---------------------------------------------------------------
    def _fail_stream(self, v: VideoState, stream: str, error: BaseException) -> None:
        if stream not in v.failed_streams:
            v.failed_streams.add(stream)
            self.on_failure(v.job, f"extract:{stream}", error)

    def _fail_video(self, vid: str, error: BaseException) -> None:
        v = self.videos[vid]
        if not v.failed:
            self.on_failure(v.job, "decode", error)
            v.failed = True
            for name, q in self.queues.items():  # drop its queued rows
                dropped = sum(p.end - p.first for p in q if p.video_id == vid)
                self.queues[name] = deque(p for p in q if p.video_id != vid)
                self.queued[name] -= dropped
                v.pending_rows -= dropped
        self._maybe_finish(vid)

    def _maybe_finish(self, vid: str) -> None:
        v = self.videos[vid]
        if v.pending_rows or (v.chunks_left and not v.failed) or any(t.video_id == vid for t in self.decoding.values()):
            return
        del self.videos[vid]
        self.on_finish(v)
