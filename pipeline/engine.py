"""Extraction without Ray: decode once, cut windows per extractor, run batches, write rows.

Data flow for one video::

    file --decode_video(fps = union of plans, short side = largest need)--> DecodedVideo
         --per extractor: CPU resize/crop per its DecodeSpec--> frames T x H x W x 3 (or waveform)
         --ext.windows()--> N windows --batches of `batch_size` on the device--> N x feature_shape
    rows + plan times --> StoreWriter.add(video)

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
from avel.pipeline.decode import DecodedVideo, DecodeError, decode_with_timeout
from avel.pipeline.jobs import VideoJob


@dataclass
class StreamExtractor:
    """An extractor bound to the store stream it fills."""

    stream: str
    extractor: Any  # avel.extractors.base.Extractor

    @property
    def modality(self) -> str:
        return self.extractor.modality

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


def extract_rows(se: StreamExtractor, decoded: DecodedVideo, *, batch_size: int,
                 device: torch.device) -> tuple[np.ndarray, bool]:
    """All rows of one video for one extractor: ``N x feature_shape`` float32 and the padded flag."""
    ext = se.extractor
    if ext.modality == "video":
        windows = ext.windows(frames_for(decoded, ext.decode_spec))
    else:
        if decoded.audio is None:
            raise DecodeError(decoded.audio_error or f"{decoded.path}: no audio")
        windows = ext.windows(torch.from_numpy(decoded.audio))
    out = []
    for a in range(0, windows.num_rows, batch_size):
        batch = windows.data[a:a + batch_size].to(device, non_blocking=True)
        out.append(ext.extract(batch).cpu().numpy())
    return np.concatenate(out, axis=0).astype(np.float32, copy=False), windows.padded


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
    bytes_written: int = 0
    failures: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "videos_ok": self.videos_ok, "videos_failed": self.videos_failed, "videos_skipped": self.videos_skipped,
            "windows": self.windows, "wall_s": round(self.wall_s, 3),
            "busy_s": {"decode": round(self.decode_s, 3), "extract": round(self.extract_s, 3),
                       "write": round(self.write_s, 3)},
            "videos_per_s": round(self.videos_ok / self.wall_s, 3) if self.wall_s else None,
            "windows_per_s": round(self.windows / self.wall_s, 3) if self.wall_s else None,
            "bytes_written": self.bytes_written,
            "failures": self.failures[:50],
        }


def record_failure(store_root: Path, report: RunReport, job: VideoJob, stage: str, exc: BaseException) -> None:
    rec = {"video_id": job.video_id, "path": str(job.path), "stage": stage, "error_type": type(exc).__name__,
           "message": str(exc)[:2000]}
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
    progress: Callable[[RunReport], None] | None = None,
) -> RunReport:
    """Decode and extract one video at a time (no overlap between stages).

    A failing video is recorded in ``errors.jsonl`` (stage ``decode`` or ``extract:<stream>``)
    and the run goes on; an audio-less video still gets its visual streams.
    """
    device = torch.device(device)
    report = RunReport()
    kwargs = decode_request(extractors)
    committed = {se.stream: writer.committed(se.stream) for se in extractors}
    t_start = time.perf_counter()
    for job in jobs:
        todo = [se for se in extractors if job.video_id not in committed[se.stream]]
        if not todo:
            report.videos_skipped += 1
            continue
        t0 = time.perf_counter()
        try:
            decoded = decode_with_timeout(job.path, timeout_s=decode_timeout_s, **kwargs)
        except DecodeError as e:
            record_failure(writer.root, report, job, "decode", e)
            report.videos_failed += 1
            report.decode_s += time.perf_counter() - t0
            if progress:
                progress(report)
            continue
        report.decode_s += time.perf_counter() - t0
        features, padded, failed = {}, {}, False
        t1 = time.perf_counter()
        for se in todo:
            try:
                rows, pad = extract_rows(se, decoded, batch_size=batch_size, device=device)
            except (DecodeError, ValueError, RuntimeError) as e:
                record_failure(writer.root, report, job, f"extract:{se.stream}", e)
                failed = True
                continue
            features[se.stream], padded[se.stream] = rows, pad
            report.windows += rows.shape[0]
        report.extract_s += time.perf_counter() - t1
        if features:
            t2 = time.perf_counter()
            writer.add(job.video_id, features, meta=decoded.meta, padded=padded)
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
) -> list[StreamExtractor]:
    """Instantiate extractors by registry name.

    Every extractor needs a weights path in ``weights`` unless ``random_weights`` is set
    explicitly (tests, demo): a real extraction never falls back to random weights.
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
        out.append(StreamExtractor(name, ext))
    return out


def estimate_windows(duration_s: float, se: StreamExtractor) -> int:
    plan = se.extractor.plan
    return plan.num_rows(int(math.floor(duration_s * plan.units_per_s)))
