"""Decode a video once for every requested sampling plan.

Data flow::

    file --decord VideoReader(width, height)--> frames at the native rate (native size or scaled)
         --index selection per fps (rule)----> PIL resize per fps (block by block)
         --> {fps: uint8 T_fps x H x W x 3}
    file --decord AudioReader(16 kHz, mono)--> float32 N  (or an audio error, visual still ok)

Frame selection for a target ``fps`` (:func:`frame_indices_for_fps`, rule per rate):

* ``"ffmpeg_fps"`` (the published presets: I3D / UnAV-100, VGG-19 / AVE): what ffmpeg's
  ``fps`` filter does with its defaults (``round=near``, no ``start_time``, ``eof_action=round``),
  i.e. what video_features' ``ffmpeg -filter:v fps=fps=25`` re-encode keeps. Native frame ``i``
  is assigned to output slot ``round(t_i * fps)`` (halves up); output slot ``k`` shows the last
  frame assigned to a slot ``<= k`` (a frame whose slot is taken by a later one is dropped, a
  slot no frame reaches repeats the previous one), for ``k = 0 .. round(duration_s * fps) - 1``.
  In effect each slot shows the frame nearest its time. Checked against ffmpeg's own filter
  (PyAV's filter graph) on constant and variable rates (``tests/pipeline/test_frame_selection.py``).
  Times count from the file's start (the earliest stream's start time), as ffmpeg's CLI
  does: a video stream starting ``origin_s`` after its audio (edit lists, B-frame delays,
  AAC priming) has its frames at ``origin_s + t``, which moves the rounding of every slot
  (a 21-ms offset changes 36-100 % of the slots at 25 fps); output frame 0 is still the
  first slot a frame reaches. Checked against ffmpeg's CLI re-encode on such files.
* ``"previous"`` (ONE-PEACE, and any extractor asking for it): output frame ``k`` (time
  ``k / fps``) takes the last native frame whose presentation time is ``<= k / fps``
  (nearest-previous, no interpolation), for ``k = 0 .. floor(duration_s * fps) - 1``.

Both rules give at least one output frame. Frames are picked by time, never by index:

* constant frame rate (every container timestamp within ``min(1 ms, 1/4 frame)`` of
  ``index / native_fps``): times are exactly ``index / native_fps`` and the duration is
  ``frames / native_fps``. decord reports timestamps as float32, whose rounding (up to 30 us
  at 20 minutes) would otherwise move a frame across a slot boundary whenever a rounded
  timestamp lands just after it.
* variable frame rate: the container's presentation times (relative to the first frame),
  compared with a tolerance of float32 rounding; the duration ends where the last frame
  ends (its presentation time plus its packet duration).

These times only pick frames; row times always come from the sampling plan. The frames of
all plans are read in ascending order, each native frame once, in blocks copied straight into
the outputs (memory: the outputs plus one block).

Rotation: a display matrix (``rotate`` 90 / 180 / 270, as phones record) is applied, as
players do: frames come out upright and ``H x W`` is the displayed size (a portrait video
is taller than wide). decord 0.6.0 does this itself when it opens the file; the decode size
below is computed from the displayed (rotated) size of the first frame.

Resizing at decode, per rate: ``pil_resize`` rates (``DecodeSpec.resize == "pil"``, the
published presets) are decoded at the native size and each selected frame gets one PIL
bilinear resize to its extractor's size (short side 256 for I3D; 224 x 224 for VGG-19), as
video_features (``ResizeImproved``) does; native-size blocks are capped at
:data:`BLOCK_BYTES_NATIVE`. Otherwise the decoder scales the short side to ``short_side``
(aspect kept, even sizes) and the extractors' CPU preprocessing crops / resizes further with
torch. ``short_side=None`` keeps the native size. Frames narrower than 64 pixels (down to
1 x 1) are scaled up to 64 (a decord limitation); 4K frames are decoded straight to the small
size unless PIL resizing asks for native frames.

Only regular files are opened: a directory, FIFO or device named ``*.mp4``, a dangling
symlink, an empty or unreadable file is a :class:`DecodeError` naming the path (a FIFO would
otherwise block the decoder forever). Before decord opens a file for frames, PyAV reads its
header: a sample table claiming more than ``max_frames`` frames (decord 0.6.0 aborts the whole
process on 2^31) or no video stream is a :class:`DecodeError`, and a codec decord cannot decode
(AV1) is named in the error. These are the video's fault: recorded, never ``retryable``.
"""

from __future__ import annotations

import math
import os
import signal
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avel.datasets.store import VideoMeta


class DecodeError(RuntimeError):
    """A video (or its audio track) cannot be decoded."""


@dataclass
class DecodedVideo:
    """Everything one video contributes to extraction.

    Attributes:
        frames: ``{fps: uint8 T x H x W x 3}`` for each requested rate.
        audio: float32 mono waveform at ``sample_rate`` (None when there is no usable track).
        audio_error: why ``audio`` is None.
        meta: duration, native fps, frame count, audio rate, source path and size.
        first_frame / total_frames: with ``frame_ranges``, ``frames[fps]`` holds output frames
            ``first_frame[fps] ..`` of ``total_frames[fps]``.
        native_index: ``{fps: int64 T}`` the native frame behind each output frame of
            ``frames[fps]`` (equal neighbours: a duplicated frame, the source rate is lower).
    """

    path: Path
    frames: dict[float, np.ndarray] = field(default_factory=dict)
    first_frame: dict[float, int] = field(default_factory=dict)  # output-frame index of frames[fps][0]
    total_frames: dict[float, int] = field(default_factory=dict)  # output frames of the whole video at fps
    native_index: dict[float, np.ndarray] = field(default_factory=dict)
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    audio_error: str | None = None
    meta: VideoMeta = field(default_factory=VideoMeta)


# decord 0.6.0 copies resized frames with a row alignment that breaks below 64 pixels of
# width ("DECORDArrayCopyFromTo: The size must exactly match"): decode at least this wide.
_MIN_DECODE_WIDTH = 64


# Native-size blocks (PIL resize path): at most this many bytes of decoded frames at once
# (1080p: 42 frames).
BLOCK_BYTES_NATIVE = 256 * 2**20


# decord 0.6.0 fails the same way for frames exactly 72 pixels wide (every even width from 64 to
# 1398 was tried on three sources; only 72 failed): decode 74 wide instead, the extractors'
# CPU resize then gives the size they ask for.
_BROKEN_DECODE_WIDTHS = {72: 74}


def _resized_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Decode size: short side to ``short_side`` (aspect kept, even), width >= 64 and not 72."""
    scale = 1.0 if short_side is None else short_side / min(width, height)
    scale = max(scale, _MIN_DECODE_WIDTH / width)
    w = max(2, int(round(width * scale / 2)) * 2)
    if w in _BROKEN_DECODE_WIDTHS:
        scale *= _BROKEN_DECODE_WIDTHS[w] / w
        w = _BROKEN_DECODE_WIDTHS[w]
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def frame_indices_for_fps(
    times_s: np.ndarray, duration_s: float, fps: float, *, rule: str = "previous", tolerance_s: float = 1e-6
) -> np.ndarray:
    """Native frame index for each output frame at ``fps`` (see the module doc).

    Args:
        times_s: presentation time of each native frame, ascending (``"previous"``: first
            frame at 0; ``"ffmpeg_fps"``: from the file's start, the first frame may be later).
        duration_s: where the last frame ends, on the same clock.
        fps: output rate.
        rule: ``"ffmpeg_fps"``: native frame ``i`` goes to slot ``round(times_s[i] * fps)``
            (halves rounded up) and slot ``k`` shows the last frame whose slot is ``<= k``, for
            ``k = 0 .. round(duration_s * fps) - 1``: ffmpeg's ``fps`` filter with ``round=near``.
            ``"previous"``: slot ``k`` shows the last frame at or before ``k / fps``, for
            ``k = 0 .. floor(duration_s * fps) - 1``. Either way at least one output frame.
        tolerance_s: timestamp rounding to absorb: a native frame this close after a slot time
            (``"previous"``) or after a half-slot boundary (``"ffmpeg_fps"``) counts as at it.
    """
    if rule == "ffmpeg_fps":
        slack = max(1e-9, tolerance_s * fps)  # slots; ffmpeg rounds exact rational timestamps
        slots = np.floor(np.asarray(times_s, np.float64) * fps + 0.5 + slack)
        n_out = max(1, int(math.floor(duration_s * fps + 0.5 + slack)) - int(slots[0]))
        idx = np.searchsorted(slots, slots[0] + np.arange(n_out), side="right") - 1
        return np.clip(idx, 0, len(times_s) - 1)
    if rule != "previous":
        raise ValueError(f"frame selection rule must be 'ffmpeg_fps' or 'previous', got {rule!r}")
    slack = 1e-6 if tolerance_s <= 1e-6 else tolerance_s * fps  # output frames
    n_out = max(1, int(math.floor(duration_s * fps + slack)))
    targets = np.arange(n_out) / fps
    idx = np.searchsorted(times_s, targets + tolerance_s, side="right") - 1
    return np.clip(idx, 0, len(times_s) - 1)


def _frame_times(reader, n_native: int, native_fps: float) -> tuple[np.ndarray, float, float]:
    """``(presentation time per native frame, duration_s, tolerance_s)``; see the module doc."""
    grid = np.arange(n_native) / native_fps
    try:
        ts = np.asarray(reader.get_frame_timestamp(np.arange(n_native)), np.float64)  # n x (start, end)
        start, end = ts[:, 0] - ts[0, 0], ts[:, 1] - ts[0, 0]
        if not (np.all(np.isfinite(ts)) and np.all(np.diff(start) >= 0)):
            raise ValueError("non-finite or decreasing timestamps")
    except Exception:  # no usable container timestamps: assume a constant rate
        return grid, n_native / native_fps, 1e-6
    if np.max(np.abs(start - grid)) <= min(1e-3, 0.25 / native_fps):
        return grid, n_native / native_fps, 1e-6
    # variable rate: float32 timestamps are rounded by up to 2^-24 of their magnitude
    tolerance_s = max(1e-6, float(end[-1]) * 2.0**-22)
    last = end[-1] if end[-1] > start[-1] else start[-1] + start[-1] / max(n_native - 1, 1)
    return start, float(last), tolerance_s


@dataclass
class _Timeline:
    """What the probe learnt about a video stream (see :func:`_probe_video`)."""

    n_native: int
    native_fps: float
    height: int  # displayed size (rotation applied)
    width: int
    times_s: np.ndarray  # presentation time per native frame, first frame at 0
    duration_s: float  # where the last frame ends
    tolerance_s: float  # timestamp rounding to absorb
    origin_s: float  # first frame's time from the file's start (ffmpeg's CLI origin)


def decode_video(
    path: str | os.PathLike,
    *,
    fps: Sequence[float] = (),
    short_side: int | None = 256,
    sample_rate: int | None = 16000,
    max_frames: int = 200_000,
    frame_ranges: dict[float, tuple[int, int]] | None = None,
    block_frames: int = 128,
    frame_selection: str | Mapping[float, str] = "previous",
    pil_resize: Mapping[float, tuple[int | None, tuple[int, int] | None]] | None = None,
) -> DecodedVideo:
    """Decode ``path`` once for all requested frame rates and the audio track.

    Args:
        path: video file.
        fps: frame rates the extractors' plans need (may be empty for audio-only jobs).
        short_side: resize at decode so the short side has this many pixels (None: native).
        sample_rate: audio rate (None: skip audio).
        max_frames: refuse containers reporting more frames than this (a 20-minute video at
            60 fps is 72,000; corrupt headers report billions).
        frame_ranges: decode only output frames ``[a, b)`` per fps (chunked extraction of long
            videos); ``(0, 0)`` decodes none (probe only). Default: every frame.
        block_frames: native frames per decord ``get_batch`` call. Frames are copied block by
            block into the preallocated outputs, so decoding holds the outputs plus one block
            (reading all frames in one call held them three times: decord's array, its numpy
            copy and the per-fps selection). With ``pil_resize`` blocks hold native-size
            frames: they are capped at :data:`BLOCK_BYTES_NATIVE`.
        frame_selection: the rule of :func:`frame_indices_for_fps` (``"ffmpeg_fps"`` or
            ``"previous"``), one for all rates or ``{fps: rule}`` (rates left out: previous).
        pil_resize: ``{fps: (short_side, size_hw)}``: frames of these rates are decoded at the
            native size and resized with one PIL bilinear resize each
            (:func:`avel.extractors.preprocess.pil_resize_frames`; ``short_side`` keeps the
            aspect, ``size_hw`` does not). Other rates are then scaled to ``short_side`` with
            torch's antialiased bilinear filter instead of decoder-side scaling.

    Raises:
        DecodeError: the path is missing, not a regular file (directory, FIFO, device),
            empty, unreadable, not a video, or has no video track while frames were requested.
            A missing or broken audio track is not an error here: it is reported in
            ``audio_error`` so visual extractors still run.
    """
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # errors are raised and recorded, not printed
    path = Path(path)
    size = _check_file(path)
    out = DecodedVideo(path=path, meta=VideoMeta(source_path=str(path), source_size_bytes=size))
    duration_s: float | None = None
    if fps:
        timeline, probe = _probe_video(path, max_frames, max(float(f) for f in fps))
        duration_s = timeline.duration_s
        out.meta.native_fps = timeline.native_fps
        out.meta.num_frames = timeline.n_native
        per_fps = _select_frames(out, timeline, fps, frame_selection, frame_ranges)
        pil_resize = {float(f): v for f, v in (pil_resize or {}).items() if float(f) in per_fps}
        w, h, sizes, block_frames = _decode_plan(timeline, per_fps, short_side, pil_resize, block_frames)
        if (h, w) == (timeline.height, timeline.width):  # native size: the probe decodes it (no reopen)
            reader = probe
        else:
            del probe
            try:
                reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, num_threads=1)
            except Exception as e:
                raise DecodeError(f"{path}: cannot reopen for decoding ({type(e).__name__}: {_first_line(e)})") from e
        out.frames = _read_frames(reader, per_fps, path, h, w, block_frames, sizes=sizes)
        del reader
    if sample_rate:
        audio_duration_s = _decode_audio(out, path, int(sample_rate), required=not fps)
        if duration_s is None:
            duration_s = audio_duration_s
    out.meta.duration_s = duration_s
    return out


def _check_file(path: Path) -> int:
    """Size in bytes of ``path``, a readable, non-empty regular file (else :class:`DecodeError`)."""
    try:
        st = path.stat()  # follows symlinks: a dangling one fails here
    except OSError as e:
        raise DecodeError(f"{path}: cannot stat ({e.strerror})") from e
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError(f"{path}: not a regular file ({_file_kind(st.st_mode)}); expected a video file")
    if st.st_size == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb") as fh:  # a regular file: opening cannot block
            fh.read(1)
    except OSError as e:
        raise DecodeError(f"{path}: cannot read ({e.strerror})") from e
    return st.st_size


def _probe_video(path: Path, max_frames: int, max_fps: float) -> tuple[_Timeline, Any]:
    """Header checks, frame count, rate, displayed size and frame times of ``path``'s video
    stream, and the decord reader (native size) that read them; :class:`DecodeError` on
    anything that would make decoding fail or run away."""
    import decord

    origin_s = _check_container(path, max_frames)  # before decord, which aborts the process on some headers
    try:
        probe = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises DECORDError / RuntimeError subclasses
        codec = _unsupported_codec(path)
        if codec is not None:
            raise DecodeError(
                f"{path}: video codec {codec} is not supported by the decoder (decord 0.6.0); {_DECORD_SUPPORTED_NOTE}"
            ) from e
        raise DecodeError(f"{path}: no decodable video stream ({type(e).__name__}: {_first_line(e)})") from e
    n_native = len(probe)
    native_fps = float(probe.get_avg_fps())
    if n_native <= 0 or not math.isfinite(native_fps) or native_fps <= 0:
        raise DecodeError(f"{path}: video stream reports {n_native} frames at {native_fps} fps")
    if n_native > max_frames:
        raise DecodeError(f"{path}: container reports {n_native} frames, more than max_frames={max_frames}")
    height, width = probe[0].shape[:2]  # displayed size (rotation applied); channels may be padded below 64 px
    times_s, duration_s, tolerance_s = _frame_times(probe, n_native, native_fps)
    if not (math.isfinite(duration_s) and duration_s > 0):  # e.g. every timestamp 0 in a truncated file
        raise DecodeError(
            f"{path}: container timestamps give {n_native} frames a duration of {duration_s} s; "
            f"the file is truncated or its timing is corrupt"
        )
    if duration_s * max_fps > max_frames:  # a huge stts delta: absurd duration
        raise DecodeError(
            f"{path}: container reports {n_native} frames lasting {duration_s:.6g} s "
            f"({native_fps:.6g} fps): more than max_frames={max_frames} output frames; "
            f"the header's timing (stts) is corrupt"
        )
    return _Timeline(n_native, native_fps, int(height), int(width), times_s, duration_s, tolerance_s, origin_s), probe


def _select_frames(
    out: DecodedVideo,
    timeline: _Timeline,
    fps: Sequence[float],
    frame_selection: str | Mapping[float, str],
    frame_ranges: Mapping[float, tuple[int, int]] | None,
) -> dict[float, np.ndarray]:
    """``{fps: native index of each output frame to decode}`` (the ``frame_ranges`` part);
    fills ``out.total_frames``, ``out.first_frame`` and ``out.native_index``. ``ffmpeg_fps``
    counts time from the file's start (:attr:`_Timeline.origin_s`), as ffmpeg's CLI does."""
    per_fps = {}
    for f in map(float, fps):
        rule = frame_selection if isinstance(frame_selection, str) else frame_selection.get(f, "previous")
        shift_s = timeline.origin_s if rule == "ffmpeg_fps" else 0.0
        idx = frame_indices_for_fps(
            timeline.times_s + shift_s,
            timeline.duration_s + shift_s,
            f,
            rule=rule,
            tolerance_s=timeline.tolerance_s,
        )
        out.total_frames[f] = len(idx)
        a, b = (frame_ranges or {}).get(f, (0, len(idx)))
        a, b = max(0, min(a, len(idx))), max(0, min(b, len(idx)))
        out.first_frame[f] = a
        per_fps[f] = out.native_index[f] = idx[a:b]
    return per_fps


def _decode_plan(
    timeline: _Timeline,
    per_fps: Mapping[float, np.ndarray],
    short_side: int | None,
    pil_resize: Mapping[float, tuple[int | None, tuple[int, int] | None]],
    block_frames: int,
) -> tuple[int, int, dict[float, tuple[tuple[int, int], bool]], int]:
    """``(decode width, decode height, {fps: ((H, W), pil)} for rates resized after decoding,
    block_frames)``: native size when some rate asks for a PIL resize (every other rate is
    then resized with torch), else the decoder scales to ``short_side``."""
    height, width = timeline.height, timeline.width
    if not pil_resize:
        w, h = _resized_size(width, height, short_side)
        return w, h, {}, block_frames
    from avel.extractors.preprocess import resize_target_hw

    w, h = _resized_size(width, height, None)  # native size (widened below 64 px)
    sizes = {}
    for f in per_fps:
        side, size_hw = pil_resize.get(f, (short_side, None))
        size = resize_target_hw(height, width, short_side=side, size_hw=size_hw) if side or size_hw else (h, w)
        sizes[f] = (size, f in pil_resize)
    return w, h, sizes, max(1, min(block_frames, BLOCK_BYTES_NATIVE // (3 * w * h)))


def _decode_audio(out: DecodedVideo, path: Path, sample_rate: int, *, required: bool) -> float | None:
    """Decode the audio track into ``out`` (mono float32 at ``sample_rate``); returns its
    duration in seconds. A missing or broken track is recorded in ``out.audio_error`` (None
    returned), or raised as :class:`DecodeError` when ``required`` (an audio-only job)."""
    import decord

    try:
        ar = decord.AudioReader(str(path), ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
        # AudioReader has decoded the whole track into ``_array`` (C x N); ``ar[:]`` copies it
        # through a Python list of every sample index (14 s for 20 minutes of audio here).
        audio = np.asarray(ar._array, np.float32).reshape(-1)
        if audio.size == 0:
            raise DecodeError("audio track is empty")
    except Exception as e:
        out.audio_error = f"{path}: no usable audio track ({type(e).__name__}: {_first_line(e)})"
        if required:
            raise DecodeError(out.audio_error) from e
        return None
    out.audio = audio
    out.sample_rate = out.meta.audio_sample_rate = sample_rate
    return audio.size / sample_rate


# how to fix a video whose codec decord 0.6.0 cannot decode (AV1: "cannot find video stream")
_DECORD_SUPPORTED_NOTE = "re-encode it, e.g. ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4"


def _check_container(path: Path, max_frames: int) -> float:
    """Header checks with PyAV before decord opens ``path``: decord 0.6.0 aborts the whole
    process (``std::bad_alloc``) on a sample table claiming billions of frames, and reports an
    unsupported codec (AV1) as "cannot find video stream". Files PyAV cannot open are left to
    decord's own error. Raises :class:`DecodeError` naming the frame count or the codec.

    Returns the video stream's start relative to the file's start (the earliest stream), in
    seconds: where ffmpeg's CLI puts the first frame (0.0 when unknown)."""
    try:
        import av
    except ImportError:
        return 0.0
    try:
        with av.open(str(path)) as container:
            streams = [
                (s.type, s.codec_context.codec.canonical_name if s.codec_context else "?", int(s.frames or 0))
                for s in container.streams
            ]
            origin_s = _video_origin_s(container)
    except Exception:  # not a container PyAV reads: decord's error names the file
        return 0.0
    video = [s for s in streams if s[0] == "video"]
    for _, _, frames in video:
        if frames > max_frames:
            raise DecodeError(
                f"{path}: container reports {frames} frames (its sample table), more than "
                f"max_frames={max_frames}; the header is corrupt"
            )
    if not video:
        kinds = ", ".join(f"{t} {n}" for t, n, _ in streams) or "none"
        raise DecodeError(f"{path}: no video stream (streams: {kinds})")
    return origin_s


def _video_origin_s(container) -> float:
    """Start of the first video stream minus the file's start time (ffmpeg's ``start_time``,
    the earliest stream's), in seconds; 0.0 when either is unknown."""
    if not container.streams.video or container.start_time is None:
        return 0.0
    stream = container.streams.video[0]
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    origin_s = float(stream.start_time * stream.time_base) - container.start_time / 1e6  # AV_TIME_BASE: us
    return origin_s if math.isfinite(origin_s) and origin_s > 0 else 0.0


def _unsupported_codec(path: Path) -> str | None:
    """The video codec of ``path`` as PyAV names it, for decord's "cannot find video stream"."""
    try:
        import av

        with av.open(str(path)) as container:
            for s in container.streams.video:
                cc = s.codec_context
                return f"{cc.codec.canonical_name!r} (tag {cc.codec_tag!r})"
    except Exception:
        return None
    return None


def _read_frames(
    reader,
    per_fps: dict[float, np.ndarray],
    path: Path,
    h: int,
    w: int,
    block_frames: int,
    sizes: dict[float, tuple[tuple[int, int], bool]] | None = None,
) -> dict[float, np.ndarray]:
    """``{fps: frames}`` with ``frames[j] = native frame idx[j]`` (``per_fps[fps] = idx``,
    non-decreasing); every needed native frame is decoded once, in ascending order, in
    blocks of ``block_frames``. ``sizes[fps] = ((H, W), pil)``: that rate's frames are resized
    block by block to ``H x W`` (PIL bilinear when ``pil``, else torch antialiased bilinear)."""
    from avel.extractors.preprocess import pil_resize_frames, resize_frames

    sizes = sizes or {}
    needed = np.unique(np.concatenate(list(per_fps.values())))
    out = {f: np.empty((len(idx), *sizes.get(f, ((h, w), False))[0], 3), np.uint8) for f, idx in per_fps.items()}
    for a in range(0, len(needed), max(1, block_frames)):
        block = needed[a : a + block_frames]
        try:
            frames = _as_numpy(reader.get_batch(block.tolist()))  # K x H x W x 3 uint8
        except Exception as e:
            raise DecodeError(f"{path}: frame decoding failed ({type(e).__name__}: {_first_line(e)})") from e
        if frames.shape != (len(block), h, w, 3):
            raise DecodeError(f"{path}: decoded frames of shape {frames.shape}, expected {(len(block), h, w, 3)}")
        for f, idx in per_fps.items():
            j0 = int(np.searchsorted(idx, block[0], side="left"))
            j1 = int(np.searchsorted(idx, block[-1], side="right"))
            if j1 > j0:
                size_hw, pil = sizes.get(f, ((h, w), False))
                uniq, inverse = np.unique(idx[j0:j1], return_inverse=True)  # a frame shown twice is resized once
                at = np.searchsorted(block, uniq)
                if pil:
                    picked = pil_resize_frames(frames, size_hw, index=at)
                elif size_hw != (h, w):
                    picked = resize_frames(torch.from_numpy(frames[at]), size_hw).numpy()
                else:
                    picked = frames[at]
                out[f][j0:j1] = picked[inverse]
        del frames
    return out


def _as_numpy(batch) -> np.ndarray:
    """A decord NDArray as numpy without copying it (DLPack; ``asnumpy()`` copies: 0.35-1.4 s
    per 42 frames of 1080p here). The array keeps decord's buffer alive."""
    try:
        return torch.utils.dlpack.from_dlpack(batch.to_dlpack()).numpy()
    except (AttributeError, RuntimeError, TypeError):  # a decord build without DLPack
        return batch.asnumpy()


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return f"mode {oct(mode)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


class DecodeTimeout(DecodeError):
    """Decoding did not finish within the per-video time limit (the worker was killed)."""


class WorkerKilled(DecodeError):
    """The decoder process was killed from outside (SIGKILL: ``kill -9``, the OOM killer).

    Not the video's fault: the failure is recorded as ``retryable`` and a rerun tries the
    video again without ``--retry-failed``."""


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when its parent dies (a ``kill -9`` of the driver would
    otherwise leave the child blocked forever on a pipe nobody reads)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _decode_child(conn, path, fn, kwargs, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    try:
        conn.send(("ok", fn(path, **kwargs)))
    except BaseException as e:  # report every failure to the parent, never hang it
        conn.send(("error", (type(e).__name__, str(e))))
    finally:
        conn.close()


class PendingDecode:
    """A decode running in a forked child process (:func:`start_decode`); :meth:`result` waits.

    The child runs ``fn(path, **kwargs)`` (default :func:`decode_video`) and is killed when the
    result is not there ``timeout_s`` after the start, so the caller can do other work (load a
    model, extract the previous chunk) while the child decodes. ``timeout_s=None`` runs ``fn``
    in-process at the start (no guard, no overlap).
    """

    def __init__(
        self, path: str | os.PathLike, timeout_s: float | None, fn: Callable[..., Any], kwargs: dict[str, Any]
    ) -> None:
        self.path, self.timeout_s = path, timeout_s
        self.started_s = time.monotonic()
        self._value: Any = None
        self._error: BaseException | None = None
        self._proc = None
        if timeout_s is None:
            try:
                self._value = fn(path, **kwargs)
            except BaseException as e:  # raised from result(), as the child's would be
                self._error = e
            return
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_decode_child, args=(child, path, fn, kwargs, os.getpid()), daemon=True)
        self._proc.start()
        child.close()

    def result(self) -> Any:
        """The child's return value; raises :class:`DecodeTimeout`, :class:`WorkerKilled` or
        :class:`DecodeError` (the child's exception, its message prefixed with the path)."""
        if self._proc is None:
            if self._error is not None:
                raise self._error
            return self._value
        path, proc, parent, timeout_s = self.path, self._proc, self._conn, self.timeout_s
        assert timeout_s is not None  # a child is started only with a timeout
        try:
            if not parent.poll(max(0.0, timeout_s - (time.monotonic() - self.started_s))):
                proc.kill()
                raise DecodeTimeout(f"{path}: decoding took longer than {timeout_s:g} s; worker killed")
            try:
                status, payload = parent.recv()
            except EOFError:
                proc.join(timeout=5)
                if proc.exitcode == -signal.SIGKILL:
                    raise WorkerKilled(f"{path}: decoder process was killed (SIGKILL); retried on rerun") from None
                raise DecodeError(f"{path}: decoder process died (exit code {proc.exitcode})") from None
        finally:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
            parent.close()
            self._proc = None
            self._error = DecodeError(f"{path}: result() called twice")
        if status == "error":
            name, message = payload
            raise DecodeError(message if message.startswith(str(path)) else f"{path}: {name}: {message}")
        return payload


def start_decode(
    path: str | os.PathLike, *, timeout_s: float | None = 600.0, fn: Callable[..., Any] | None = None, **kwargs
) -> PendingDecode:
    """Start ``fn(path, **kwargs)`` (default :func:`decode_video`) in a forked child that is
    killed after ``timeout_s``; returns at once (see :class:`PendingDecode`)."""
    return PendingDecode(path, timeout_s, fn or decode_video, kwargs)


def decode_with_timeout(path: str | os.PathLike, *, timeout_s: float | None = 600.0, **kwargs) -> DecodedVideo:
    """:func:`decode_video` in a forked child process that is killed after ``timeout_s``.

    decord can loop forever holding the GIL when a container over-reports its frame count,
    so a thread cannot interrupt it; a process can be killed. ``timeout_s=None`` decodes
    in-process (no guard).
    """
    return start_decode(path, timeout_s=timeout_s, **kwargs).result()
