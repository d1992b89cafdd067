"""The Ray runner's scheduling rules, driven without Ray: tokens stand for tasks in flight."""

from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np
import pytest

from avel.pipeline.jobs import VideoJob
from avel.pipeline.scheduler import ExtractionScheduler


@dataclass(frozen=True)
class S:
    name: str
    modality: str


VIDEO, AUDIO = S("rgb", "video"), S("vggish", "audio")


class Run:
    """A scheduler plus the driver's bookkeeping: what was submitted, finished and failed."""

    def __init__(
        self,
        n_videos=2,
        *,
        streams=(VIDEO, AUDIO),
        committed=None,
        batch=4,
        actors=1,
        slots=1,
        claimed=None,
        timeout_s=10.0,
    ):
        self.jobs = [VideoJob(f"v{i}", Path(f"v{i}.mp4")) for i in range(n_videos)]
        self.finished, self.failures = [], []
        self.tokens = count()
        self.sched = ExtractionScheduler(
            self.jobs,
            streams,
            committed or {s.name: set() for s in streams},
            pool_sizes={s.name: actors for s in streams},
            batch_sizes={s.name: batch for s in streams},
            decode_slots=slots,
            decode_timeout_s=timeout_s,
            on_finish=self.finished.append,
            on_failure=lambda job, stage, e: self.failures.append((job.video_id, stage, str(e))),
        )
        self.claimed = claimed

    def start_decodes(self, now_s=0.0):
        started = []
        while (nxt := self.sched.next_decode(lambda vid: self.claimed is None or vid in self.claimed)) is not None:
            v, k, streams = nxt
            token = ("decode", next(self.tokens))
            self.sched.decode_started(
                token, v.job.video_id, k, [(s.name, ("payload", v.job.video_id, k, s.name)) for s in streams], now_s
            )
            started.append((token, v.job.video_id, k, [s.name for s in streams]))
        return started

    def start_batches(self, stream):
        calls = []
        while (call := self.sched.next_batch(stream, final=not self.sched.input_left)) is not None:
            token = ("batch", next(self.tokens))
            actor, pieces, payloads = call
            self.sched.batch_started(token, stream, actor, pieces)
            calls.append((token, pieces))
        return calls


def _info(rows, *, n_chunks=1, errors=None):
    return {
        "meta": {"fps": 25},
        "totals": {"rgb": 100},
        "n_chunks": n_chunks,
        "rows": rows,
        "padded": {s: False for s in rows},
        "errors": errors or {},
    }


def _rows(pieces, dim=2):
    """Rows whose value names (video number, chunk, row): a batch's output in piece order."""
    return np.concatenate(
        [np.array([[int(v[1:]), k * 100 + r] * (dim // 2) for r in range(a, b)], np.float32) for v, k, a, b in pieces]
    )


def test_a_video_flows_decode_queue_batches_finish():
    run = Run(1, streams=(VIDEO,), batch=4)
    [(tok, vid, k, streams)] = run.start_decodes()
    assert (vid, k, streams) == ("v0", 0, ["rgb"]) and run.sched.in_flight() == [tok]
    assert run.sched.decode_done(tok, _info({"rgb": 6}))
    assert run.sched.queued == {"rgb": 6}
    calls = run.start_batches("rgb")  # no input left: the 2-row remainder goes as well
    assert run.sched.calls_in_flight() == {"rgb": 2}
    assert [p for _, p in calls] == [[("v0", 0, 0, 4)], [("v0", 0, 4, 6)]]
    run.sched.batch_done(calls[1][0], _rows(calls[1][1]))  # out of order
    assert not run.finished
    run.sched.batch_done(calls[0][0], _rows(calls[0][1]))
    [v] = run.finished
    assert v.ok and not run.sched.busy
    np.testing.assert_array_equal(v.features()["rgb"][:, 1], np.arange(6))  # rows back in order


def test_a_batch_takes_rows_of_several_videos_and_chunks_and_waits_for_a_full_one():
    run = Run(2, streams=(VIDEO,), batch=4, slots=2)
    (t0, *_), (t1, *_) = run.start_decodes()
    run.sched.decode_done(t0, _info({"rgb": 3}, n_chunks=2))  # chunk 1 of v0 is scheduled first
    assert run.start_batches("rgb") == []  # 3 rows < 4 and input is left
    run.sched.decode_done(t1, _info({"rgb": 2}))
    [(tok, v0c1, k, _)] = run.start_decodes()
    assert (v0c1, k) == ("v0", 1)
    [(b0, pieces)] = run.start_batches("rgb")
    assert pieces == [("v0", 0, 0, 3), ("v1", 0, 0, 1)]
    run.sched.decode_done(tok, _info({"rgb": 2}))
    [(b1, pieces1)] = run.start_batches("rgb")  # no input left: the last 3 rows go as they are
    assert pieces1 == [("v1", 0, 1, 2), ("v0", 1, 0, 2)]
    run.sched.batch_done(b0, _rows(pieces))
    run.sched.batch_done(b1, _rows(pieces1))
    by_id = {v.job.video_id: v.features()["rgb"] for v in run.finished}
    np.testing.assert_array_equal(by_id["v0"][:, 1], [0, 1, 2, 100, 101])  # chunk 0 then chunk 1
    np.testing.assert_array_equal(by_id["v1"][:, 1], [0, 1])


def test_back_pressure_holds_decodes_while_a_queue_is_full():
    run = Run(4, streams=(VIDEO,), batch=2, actors=1, slots=3)
    high_water = 2 * (2 * 1 + 1)  # batch x (calls in flight x actors + 1)
    assert run.sched.high_water == {"rgb": high_water}
    (t0, *_), _, _ = run.start_decodes()
    run.sched.decode_done(t0, _info({"rgb": high_water}))
    assert run.start_decodes() == []  # queue full: no new decode although a slot is free
    calls = run.start_batches("rgb")
    assert len(calls) == 2 and run.sched.queued == {"rgb": high_water - 4}  # 2 calls in flight, not more
    [(_, vid, _, _)] = run.start_decodes()  # below the high-water mark again
    assert vid == "v3" and not run.sched.todo


def test_decode_slots_bound_the_decodes_in_flight_and_claims_skip_videos():
    run = Run(4, streams=(VIDEO,), slots=2, claimed={"v0", "v2", "v3"})
    started = run.start_decodes()
    assert [s[1] for s in started] == ["v0", "v2"] and run.sched.skipped == 1  # v1 held by another writer


def test_committed_streams_are_skipped_per_video():
    run = Run(2, committed={"rgb": {"v0", "v1"}, "vggish": {"v0"}})
    [(tok, vid, k, streams)] = run.start_decodes()
    assert run.sched.skipped == 1 and (vid, streams) == ("v1", ["vggish"])


def test_later_chunks_decode_video_streams_only():
    run = Run(1)
    [(t0, *_)] = run.start_decodes()
    run.sched.decode_done(t0, _info({"rgb": 4, "vggish": 4}, n_chunks=2))
    [(t1, vid, k, streams)] = run.start_decodes()
    assert (vid, k, streams) == ("v0", 1, ["rgb"])  # the audio track is decoded once, in chunk 0


def test_a_failed_decode_fails_the_video_and_drops_its_queued_rows():
    run = Run(1, slots=1)
    [(t0, *_)] = run.start_decodes()
    run.sched.decode_done(t0, _info({"rgb": 3, "vggish": 2}, n_chunks=2))
    [(t1, *_)] = run.start_decodes()
    run.sched.decode_failed(t1, RuntimeError("corrupt chunk"))
    assert run.failures == [("v0", "decode", "corrupt chunk")]
    assert run.sched.queued == {"rgb": 0, "vggish": 0}
    [v] = run.finished
    assert v.failed and v.features() == {} and not run.sched.busy


def test_a_decode_past_the_time_limit_is_expired_once():
    run = Run(1, timeout_s=5.0)
    [(t0, *_)] = run.start_decodes(now_s=0.0)
    assert run.sched.expire_decodes(4.0) == []
    assert run.sched.expire_decodes(9.0, done=[t0]) == []  # it finished meanwhile: not expired
    [task] = run.sched.expire_decodes(9.0)
    assert task.token == t0 and [o[0] for o in task.outputs] == ["rgb", "vggish"]
    assert run.failures == [("v0", "decode", "v0.mp4: decoding took longer than 5 s; worker killed")]
    assert run.finished[0].failed and not run.sched.busy


def test_a_failed_batch_fails_that_stream_only():
    run = Run(2, streams=(VIDEO, AUDIO), batch=4, slots=2)
    (t0, *_), (t1, *_) = run.start_decodes()
    run.sched.decode_done(t0, _info({"rgb": 2, "vggish": 2}))
    run.sched.decode_done(t1, _info({"rgb": 2, "vggish": 2}))
    [(rgb, rgb_pieces)] = run.start_batches("rgb")
    [(aud, aud_pieces)] = run.start_batches("vggish")
    run.sched.batch_done(rgb, None, RuntimeError("CUDA out of memory"))
    run.sched.batch_done(aud, _rows(aud_pieces))
    assert sorted(run.failures) == [
        ("v0", "extract:rgb", "CUDA out of memory"),
        ("v1", "extract:rgb", "CUDA out of memory"),
    ]
    assert sorted(v.job.video_id for v in run.finished) == ["v0", "v1"]
    assert all(not v.ok and list(v.features()) == ["vggish"] for v in run.finished)


def test_a_stream_error_in_a_decode_fails_that_stream():
    run = Run(1)
    [(t0, *_)] = run.start_decodes()
    run.sched.decode_done(t0, _info({"rgb": 2, "vggish": 0}, errors={"vggish": ("DecodeError", "no audio")}))
    assert run.failures == [("v0", "extract:vggish", "DecodeError: no audio")]
    [(b, pieces)] = run.start_batches("rgb")
    run.sched.batch_done(b, _rows(pieces))
    [v] = run.finished
    assert list(v.features()) == ["rgb"] and not v.ok


@pytest.mark.parametrize("actors", [1, 3])
def test_calls_go_to_the_least_loaded_actor(actors):
    run = Run(1, streams=(VIDEO,), batch=1, actors=actors)
    [(t0, *_)] = run.start_decodes()
    run.sched.decode_done(t0, _info({"rgb": 10}))
    run.start_batches("rgb")
    assert run.sched.load == {"rgb": [2] * actors}  # max_calls_in_flight each, no more


def test_non_finite_rows_fail_that_stream_and_are_never_written():
    """The Ray runner's side of issue 14: an extractor call returning NaN / Inf fails the stream
    of that video (a recorded NonFiniteRowsError naming video and stream); other streams stay."""
    run = Run(2, streams=(VIDEO, AUDIO), batch=4, slots=2)
    (t0, *_), (t1, *_) = run.start_decodes()
    run.sched.decode_done(t0, _info({"rgb": 2, "vggish": 2}))
    run.sched.decode_done(t1, _info({"rgb": 2, "vggish": 2}))
    [(rgb, rgb_pieces)] = run.start_batches("rgb")
    [(aud, aud_pieces)] = run.start_batches("vggish")
    rows = _rows(rgb_pieces)
    rows[3, 0] = np.inf  # the second row of v1
    run.sched.batch_done(rgb, rows)
    run.sched.batch_done(aud, _rows(aud_pieces))
    [(vid, stage, message)] = run.failures
    assert (vid, stage) == ("v1", "extract:rgb")
    assert "v1.mp4: video 'v1', stream 'rgb': 1 of 2 rows hold NaN or Inf (first: row 1)" in message
    by_id = {v.job.video_id: v for v in run.finished}
    assert by_id["v0"].ok and sorted(by_id["v0"].features()) == ["rgb", "vggish"]
    assert not by_id["v1"].ok and list(by_id["v1"].features()) == ["vggish"]
