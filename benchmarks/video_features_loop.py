"""Baseline (a) of ``extract_throughput.py``: v-iashin/video_features' per-video loop, re-created.

What video_features does (read at its main branch: ``models/i3d/extract_i3d.py``,
``models/vggish/extract_vggish.py``, ``utils/io.py``, ``utils/utils.py``): one feature type per
invocation, then one video at a time, no overlap between stages, one window per forward::

    video stream (i3d, ...):
      ffmpeg -y -i VIDEO -filter:v fps=fps=F TMP.mp4     a full re-encode (libx264 + aac defaults)
      cv2.VideoCapture(TMP).read() frame by frame        BGR -> cvtColor -> RGB
      per frame: ToPILImage -> resize short side 256 (PIL bilinear) -> tensor
      stack of window + 1 frames -> centre crop -> model on ONE window -> keep the last
      (stack - stride) frames; an incomplete last stack is dropped
    audio stream (vggish):
      ffmpeg -i VIDEO -acodec copy TMP.aac; ffmpeg -i TMP.aac TMP.wav   (pcm_s16le)
      read the wav -> mono -> resample to 16 kHz -> every example in one forward
    np.save per video

Neither the ffmpeg CLI nor OpenCV is installed here, so the same steps run through PyAV, which
wraps the same libav* libraries: the re-encode uses the ``fps`` filter and the codecs' default
settings (libx264 at its defaults, threads auto, as the CLI picks them; AAC audio), the read
loop decodes frame by frame (threads auto, as OpenCV's FFmpeg backend) and converts to BGR
then RGB. The forward pass is our extractor with the same weights as the other stages, fed
the windows our sampling plan defines (``window + context`` frames, so the window count
matches the other stages; video_features' ``window + 1`` stacks are one frame longer for RGB).
Per-frame resizing uses PIL (bilinear) as video_features does, so rows differ from the
pipeline's: this stage is for timing only.
"""

from __future__ import annotations

import fractions
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def reencode_fps(src: Path, dst: Path, fps: float) -> Path:
    """``ffmpeg -y -i src -filter:v fps=fps=F dst`` through PyAV: every video frame through the
    ``fps`` filter into libx264 (defaults), the audio track re-encoded to AAC (defaults)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vout = out.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.thread_count = 0  # auto, the CLI's default
        aout = None
        if ain is not None:
            aout = out.add_stream("aac", rate=ain.codec_context.sample_rate)
            aout.layout = ain.codec_context.layout
        graph = av.filter.Graph()
        head = graph.add_buffer(template=vin)
        rate = graph.add("fps", f"fps={fps}")
        sink = graph.add("buffersink")
        head.link_to(rate)
        rate.link_to(sink)
        graph.configure()

        def drain() -> None:
            while True:
                try:
                    frame = graph.vpull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return
                for p in vout.encode(frame):
                    out.mux(p)

        streams = [vin] + ([ain] if ain is not None else [])
        for packet in inp.demux(*streams):
            for frame in packet.decode():
                if packet.stream is vin:
                    graph.vpush(frame)
                    drain()
                else:
                    frame.pts = None
                    for p in aout.encode(frame):
                        out.mux(p)
        graph.vpush(None)
        drain()
        for p in vout.encode():
            out.mux(p)
        if aout is not None:
            for p in aout.encode():
                out.mux(p)
    return dst


def _resize_pil(rgb: np.ndarray, spec: Any) -> np.ndarray:
    """One frame resized as ``spec`` asks, with PIL's bilinear filter: a short-side resize is
    video_features' ``ResizeImproved`` (long side rounded down, :func:`short_side_size`)."""
    from PIL import Image

    from avel.extractors.preprocess import short_side_size

    if spec.short_side is not None:
        h, w = short_side_size(rgb.shape[0], rgb.shape[1], spec.short_side)
    elif spec.size_hw is not None:
        h, w = spec.size_hw
    else:
        return rgb
    return np.array(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))  # a writable copy, as PILToTensor


def _video_rows(se: Any, path: Path, tmp: Path) -> np.ndarray:
    import av
    import torch

    from avel.extractors.preprocess import center_crop
    from avel.pipeline.engine import extract_batch

    ext = se.extractor
    spec, plan = ext.decode_spec, ext.plan
    stack_len = plan.window_units + ext.context_frames
    cpu = torch.device("cpu")
    src = reencode_fps(path, tmp / f"{path.stem}_new_fps.mp4", float(spec.fps))
    rows, stack = [], []
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        for frame in c.decode(vs):
            rgb = np.ascontiguousarray(frame.to_ndarray(format="bgr24")[:, :, ::-1])  # cvtColor(BGR2RGB)
            stack.append(torch.from_numpy(_resize_pil(rgb, spec)))
            if len(stack) == stack_len:
                window = torch.stack(stack)  # T x H x W x 3
                if spec.center_crop is not None:
                    window = center_crop(window, spec.center_crop, channels_last=True)
                rows.append(extract_batch(ext, window[None], batch_size=1, device=cpu))
                stack = stack[plan.step_units :]
    src.unlink()
    return np.concatenate(rows) if rows else np.zeros((0, *ext.feature_shape), np.float32)


def _audio_rows(se: Any, path: Path, tmp: Path) -> np.ndarray:
    import av
    import torch
    import torchaudio

    from avel.pipeline.engine import extract_batch

    ext = se.extractor
    aac, wav = tmp / f"{path.stem}.aac", tmp / f"{path.stem}.wav"
    with av.open(str(path)) as inp, av.open(str(aac), "w", format="adts") as out:  # -acodec copy
        ain = inp.streams.audio[0]
        aout = out.add_stream_from_template(ain)
        for packet in inp.demux(ain):
            if packet.dts is None:
                continue
            packet.stream = aout
            out.mux(packet)
    with av.open(str(aac)) as inp, av.open(str(wav), "w", format="wav") as out:  # aac -> pcm_s16le wav
        ain = inp.streams.audio[0]
        aout = out.add_stream("pcm_s16le", rate=ain.codec_context.sample_rate)
        aout.layout = ain.codec_context.layout
        for frame in inp.decode(ain):
            frame.pts = None
            for p in aout.encode(frame):
                out.mux(p)
        for p in aout.encode():
            out.mux(p)
    with wave.open(str(wav)) as w:
        sr, channels = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, channels) / 32768.0
    aac.unlink()
    wav.unlink()
    x = torch.from_numpy(x.mean(axis=1).astype(np.float32))
    if sr != ext.decode_spec.sample_rate:
        x = torchaudio.functional.resample(x, sr, ext.decode_spec.sample_rate)
    windows = ext.windows(x).data
    return extract_batch(ext, windows, batch_size=windows.shape[0], device=torch.device("cpu"))


def run_video_features_loop(jobs: Sequence[Any], extractors: Sequence[Any], tmp: Path) -> int:
    """One pass over ``jobs`` per extractor (video_features runs one feature type per call);
    returns the windows computed. Rows are saved per video and stream as ``.npy``."""
    tmp.mkdir(parents=True, exist_ok=True)
    windows = 0
    for se in extractors:
        for job in jobs:
            if se.extractor.modality == "video":
                rows = _video_rows(se, Path(job.path), tmp)
            else:
                rows = _audio_rows(se, Path(job.path), tmp)
            np.save(tmp / f"{job.video_id}_{se.stream}.npy", rows)
            windows += rows.shape[0]
    return windows
