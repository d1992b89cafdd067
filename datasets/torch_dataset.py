"""Torch datasets over a feature store plus annotations.

Data flow of :class:`DenseFeatureDataset` (UnAV-100-like dense localization)::

    store[video][stream] (T_s x D_s) for each selected stream
        -> align on one time grid (rule below)              T x D_s each
        -> concatenate visual streams, audio streams         T x Dv, T x Da
        -> crop (training) / keep (evaluation)               T' <= max_seq_len (training)
        -> segments seconds -> grid units                    N x 2
    collate -> pad to the longest item (at least max_seq_len) with a validity mask

Alignment rule (explicit; the reference code trimmed silently): every selected stream must
share the same step (``frame_shift_s``) and their window centres must differ by less than
half a step. Row counts may differ by at most ``max_length_diff`` rows (default 1, the
rounding of different window sizes); the longer streams are then trimmed to the shortest
and the event is counted in :attr:`DenseFeatureDataset.alignment_stats`. A larger difference
is an :class:`~avel.datasets.store.AlignmentError` naming the video and the lengths.

Grid convention (UnAV / ActionFormer): row ``g`` is centred at
``g * step_s + 0.5 * window_s`` seconds, so ``grid = (t_s - 0.5 * window_s) / step_s``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from avel.datasets.annotations import AnnotationSet, Sample
from avel.datasets.ave import segment_labels
from avel.datasets.checks import check_finite_rows
from avel.datasets.store import AlignmentError, FeatureStore, StoreError


@dataclass
class AlignmentStats:
    """How often streams were trimmed to a common length, and by how many rows in total."""

    trimmed_videos: int = 0
    trimmed_rows: int = 0
    examples: list[str] = field(default_factory=list)


def check_time_grid(store: FeatureStore, streams: Sequence[str]) -> tuple[float, float]:
    """Check that ``streams`` share one time grid; return its (step_s, window_s)."""
    if not streams:
        raise ValueError("select at least one stream")
    missing = [s for s in streams if s not in store.streams]
    if missing:
        raise KeyError(f"streams {missing} are not in store {store.root}; it has {sorted(store.streams)}")
    first = store.streams[streams[0]].plan
    step, window = first.step_seconds, first.window_seconds
    for s in streams[1:]:
        plan = store.streams[s].plan
        if abs(plan.step_seconds - step) > 1e-6:
            raise AlignmentError(
                f"streams {streams[0]!r} (step {step:g} s) and {s!r} (step {plan.step_seconds:g} s) are on "
                f"different time grids; choose streams extracted with the same step"
            )
        if abs(plan.window_seconds - window) / 2 >= step / 2:
            raise AlignmentError(
                f"streams {streams[0]!r} and {s!r}: window centres differ by "
                f"{abs(plan.window_seconds - window) / 2:g} s, at least half a step ({step / 2:g} s)"
            )
    return step, window


def align_rows(
    video_id: str, arrays: dict[str, np.ndarray], *, max_length_diff: int = 1, stats: AlignmentStats | None = None
) -> dict[str, np.ndarray]:
    """Trim streams of one video to a common length by the alignment rule (module doc)."""
    lengths = {s: a.shape[0] for s, a in arrays.items()}
    shortest, longest = min(lengths.values()), max(lengths.values())
    if longest - shortest > max_length_diff:
        raise AlignmentError(
            f"video {video_id!r}: stream lengths {lengths} differ by more than {max_length_diff} row(s)"
        )
    if longest != shortest and stats is not None:
        stats.trimmed_videos += 1
        stats.trimmed_rows += sum(n - shortest for n in lengths.values())
        if len(stats.examples) < 10:
            stats.examples.append(f"{video_id}: {lengths}")
    return {s: a[:shortest] for s, a in arrays.items()}


def read_rows(store: FeatureStore, video_id: str, stream: str) -> np.ndarray:
    """``store.read`` refusing NaN / Inf rows (:class:`~avel.datasets.checks.NonFiniteRowsError`
    naming the store, video and stream)."""
    return check_finite_rows(store.read(video_id, stream), video_id=video_id, stream=stream, source=str(store.root))


def stream_statistics(
    store: FeatureStore, video_ids: Sequence[str], streams: Sequence[str], *, max_videos: int = 2000
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-stream, per-dimension mean and std over (up to ``max_videos``) videos' rows.

    Used to standardize features (``standardize=True`` in the datasets): compute it on the
    TRAINING videos and pass it to every split. Dimensions with zero spread get std 1.
    """
    out = {}
    for s in streams:
        rows = [
            read_rows(store, v, s).reshape(store.num_rows(v, s), -1).astype(np.float64)
            for v in list(video_ids)[:max_videos]
            if store.has(v, s)
        ]
        if not rows:
            raise StoreError(f"no rows of stream {s!r} to compute statistics from in {store.root}")
        cat = np.concatenate(rows, axis=0)
        std = cat.std(axis=0)
        out[s] = (cat.mean(axis=0).astype(np.float32), np.where(std > 1e-12, std, 1.0).astype(np.float32))
    return out


def _standardize(rows: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    if stats is None:
        return rows
    shape = rows.shape
    flat = rows.reshape(shape[0], -1)
    return ((flat - stats[0]) / stats[1]).reshape(shape).astype(np.float32)


class DenseFeatureDataset(Dataset):
    """Dense localization samples (UnAV-100 style) from a store.

    Args:
        store: a :class:`FeatureStore` or its path.
        annotations: the dataset's :class:`AnnotationSet`.
        subset: ``"train"``, ``"validation"``, ``"test"`` or None (all samples).
        visual_streams: store streams concatenated along D into ``visual`` (e.g.
            ``["i3d_rgb", "i3d_flow"]`` -> 2048).
        audio_streams: store streams concatenated into ``audio``.
        max_seq_len: training crops to at most this many rows; collate pads to at least it.
        training: random cropping on (evaluation keeps whole sequences).
        crop_ratio: (lo, hi) ActionFormer-style random truncation of sequences that already
            fit: a window of ``randint(ceil(lo*T), floor(hi*T))`` rows; None disables it.
        trunc_thresh: after a crop, a segment is kept when at least this fraction of it
            remains inside the window (ActionFormer's 0.5).
        max_length_diff: see the alignment rule in the module doc.
        require_events: drop training samples whose crop leaves no event (re-drawn up to
            ``max_crop_tries`` times before falling back to the uncropped window).
        max_crop_tries: attempts for ``require_events``.
        stats: optional per-stream (mean, std) from :func:`stream_statistics` (computed on the
            training videos): rows are standardized per dimension before use. None: raw rows
            (the published models use raw features).

    Samples whose video is missing from the store raise a ``StoreError`` at construction
    naming the missing ids (pass ``skip_missing=True`` to drop them and count them in
    ``missing_videos``).
    """

    def __init__(
        self,
        store: FeatureStore | str,
        annotations: AnnotationSet,
        *,
        subset: str | None,
        visual_streams: Sequence[str],
        audio_streams: Sequence[str],
        max_seq_len: int = 256,
        training: bool = False,
        crop_ratio: tuple[float, float] | None = (0.9, 1.0),
        trunc_thresh: float = 0.5,
        max_length_diff: int = 1,
        require_events: bool = True,
        max_crop_tries: int = 10,
        skip_missing: bool = False,
        seed: int | None = None,
        stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        self.annotations = annotations
        self.stats = stats or {}
        self.visual_streams = list(visual_streams)
        self.audio_streams = list(audio_streams)
        self.streams = self.visual_streams + self.audio_streams
        self.step_s, self.window_s = check_time_grid(self.store, self.streams)
        self.max_seq_len = int(max_seq_len)
        self.training = training
        self.crop_ratio = crop_ratio
        self.trunc_thresh = trunc_thresh
        self.max_length_diff = max_length_diff
        self.require_events = require_events
        self.max_crop_tries = max_crop_tries
        self.alignment_stats = AlignmentStats()
        self.seed = 0 if seed is None else int(seed)
        self.epoch = 0
        samples = annotations.subset(subset)
        missing = [s.video_id for s in samples if not all(self.store.has(s.video_id, st) for st in self.streams)]
        if missing and not skip_missing:
            raise StoreError(
                f"{len(missing)} {subset or 'all'} videos lack streams {self.streams} in {self.store.root}, "
                f"e.g. {missing[:5]}"
            )
        missing_set = set(missing)
        self.missing_videos = sorted(missing_set)
        self.samples: list[Sample] = [s for s in samples if s.video_id not in missing_set]
        self.num_classes = annotations.num_classes

    @property
    def visual_dim(self) -> int:
        return sum(self.store.streams[s].feature_dim for s in self.visual_streams)

    @property
    def audio_dim(self) -> int:
        return sum(self.store.streams[s].feature_dim for s in self.audio_streams)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Random crops derive from (seed, epoch, index): reproducible in any worker and on resume."""
        self.epoch = int(epoch)

    def _load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        arrays = {s: _standardize(read_rows(self.store, sample.video_id, s), self.stats.get(s)) for s in self.streams}
        arrays = {s: a.reshape(a.shape[0], -1) for s, a in arrays.items()}
        arrays = align_rows(sample.video_id, arrays, max_length_diff=self.max_length_diff, stats=self.alignment_stats)
        visual = np.concatenate([arrays[s] for s in self.visual_streams], axis=1)
        audio = np.concatenate([arrays[s] for s in self.audio_streams], axis=1)
        return visual.astype(np.float32, copy=False), audio.astype(np.float32, copy=False)

    def _segments(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        if not sample.segments:
            return np.zeros((0, 2), np.float32), np.zeros((0,), np.int64)
        seg_s = np.array([[g.start_s, g.end_s] for g in sample.segments], np.float64)
        grid = (seg_s - 0.5 * self.window_s) / self.step_s
        labels = np.array([g.label_id for g in sample.segments], np.int64)
        return grid.astype(np.float32), labels

    def _crop(self, length: int, segments: np.ndarray, rng: random.Random) -> tuple[int, int, np.ndarray]:
        """Pick a window [a, b) of rows; returns it and the indices of kept segments."""
        target = length
        if length > self.max_seq_len:
            target = self.max_seq_len
        elif self.crop_ratio is not None:
            lo = max(1, math.ceil(self.crop_ratio[0] * length))
            hi = max(lo, math.floor(self.crop_ratio[1] * length))
            target = rng.randint(lo, hi)
        if target >= length:
            return 0, length, np.arange(len(segments))
        for _ in range(self.max_crop_tries):
            a = rng.randint(0, length - target)
            b = a + target
            inter = np.clip(np.minimum(segments[:, 1], b) - np.maximum(segments[:, 0], a), 0, None)
            seg_len = np.maximum(segments[:, 1] - segments[:, 0], 1e-6)
            keep = np.nonzero(inter / seg_len >= self.trunc_thresh)[0]
            if keep.size or not self.require_events or len(segments) == 0:
                return a, b, keep
        if length <= self.max_seq_len:
            return 0, length, np.arange(len(segments))
        return a, b, keep

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        visual, audio = self._load(sample)
        segments, labels = self._segments(sample)
        offset = 0
        if self.training:
            rng = random.Random(hash((self.seed, self.epoch, index)))
            a, b, keep = self._crop(visual.shape[0], segments, rng)
            visual, audio = visual[a:b], audio[a:b]
            segments = np.clip(segments[keep] - a, 0, b - a)
            labels = labels[keep]
            offset = a
        duration = sample.duration_s
        if duration is None:
            duration = float(
                self.store.meta(sample.video_id).duration_s or (visual.shape[0] - 1) * self.step_s + self.window_s
            )
        return {
            "sample_id": sample.sample_id,
            "video_id": sample.video_id,
            "visual": torch.from_numpy(np.ascontiguousarray(visual)),  # T x Dv
            "audio": torch.from_numpy(np.ascontiguousarray(audio)),  # T x Da
            "segments": torch.from_numpy(segments),  # N x 2, grid units
            "labels": torch.from_numpy(labels),  # N
            "duration_s": float(duration),
            "offset_rows": int(offset),
            "step_s": self.step_s,
            "window_s": self.window_s,
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_dense(items, min_len=self.max_seq_len)


def collate_dense(items: list[dict[str, Any]], *, min_len: int = 0, pad_multiple: int = 32) -> dict[str, Any]:
    """Pad a list of dense items to one length (max of ``min_len`` and the longest item,
    rounded up to ``pad_multiple`` so every pyramid level divides evenly)."""
    longest = max(it["visual"].shape[0] for it in items)
    length = max(min_len, longest)
    length = int(math.ceil(length / pad_multiple) * pad_multiple)
    b = len(items)
    dv, da = items[0]["visual"].shape[1], items[0]["audio"].shape[1]
    visual = torch.zeros(b, length, dv)
    audio = torch.zeros(b, length, da)
    mask = torch.zeros(b, length, dtype=torch.bool)
    for i, it in enumerate(items):
        t = it["visual"].shape[0]
        visual[i, :t] = it["visual"]
        audio[i, :t] = it["audio"]
        mask[i, :t] = True
    return {
        "sample_ids": [it["sample_id"] for it in items],
        "video_ids": [it["video_id"] for it in items],
        "visual": visual,  # B x T x Dv
        "audio": audio,  # B x T x Da
        "mask": mask,  # B x T
        "segments": [it["segments"] for it in items],
        "labels": [it["labels"] for it in items],
        "durations_s": torch.tensor([it["duration_s"] for it in items], dtype=torch.float64),
        "offset_rows": torch.tensor([it["offset_rows"] for it in items]),
        "step_s": torch.tensor([it["step_s"] for it in items], dtype=torch.float64),
        "window_s": torch.tensor([it["window_s"] for it in items], dtype=torch.float64),
    }


class AveFeatureDataset(Dataset):
    """AVE samples (one per annotation ROW) with per-segment labels.

    Args:
        store: store holding a visual stream (``10 x 7 x 7 x 512`` VGG-19 pool5 per video)
            and an audio stream (``10 x 128`` VGGish).
        annotations: AVE :class:`AnnotationSet` (``background_id`` set).
        subset: split to use.
        visual_stream, audio_stream: stream names in the store.
        num_segments: segments per AVE clip (10).
        extra_background: optional ``(audio, visual)`` arrays of extra background videos
            (AVE's 178 noisy videos: audio ``N x 10 x 128``, visual ``N x 10 x 7 x 7 x 512`` or
            None when the user has no visual features for them) appended as background samples
            for weak supervision.
        stats: optional per-stream (mean, std) from :func:`stream_statistics` (training videos).

    Rows are aligned by the same rule as the dense dataset; a clip with fewer than
    ``num_segments`` rows after alignment is an error naming the video.
    """

    def __init__(
        self,
        store: FeatureStore | str,
        annotations: AnnotationSet,
        *,
        subset: str | None,
        visual_stream: str = "vgg19",
        audio_stream: str = "vggish",
        num_segments: int = 10,
        extra_background: tuple[np.ndarray, np.ndarray | None] | None = None,
        stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if annotations.background_id is None:
            raise ValueError("AveFeatureDataset needs an annotation set with background_id (AVE)")
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        self.stats = stats or {}
        check_time_grid(self.store, [visual_stream, audio_stream])
        self.annotations = annotations
        self.visual_stream, self.audio_stream = visual_stream, audio_stream
        self.num_segments = num_segments
        self.background_id = int(annotations.background_id)
        self.num_classes = annotations.num_classes + 1
        self.samples = annotations.subset(subset)
        missing = [
            s.video_id
            for s in self.samples
            if not (self.store.has(s.video_id, visual_stream) and self.store.has(s.video_id, audio_stream))
        ]
        if missing:
            raise StoreError(
                f"{len(missing)} AVE videos lack {visual_stream}/{audio_stream} in "
                f"{self.store.root}, e.g. {missing[:5]}"
            )
        self.extra_audio, self.extra_visual = (None, None)
        if extra_background is not None:
            self.extra_audio, self.extra_visual = extra_background
            if self.extra_visual is None:
                raise ValueError(
                    "extra background videos need visual features too for this dataset; "
                    "pass them or leave extra_background out"
                )
        self.alignment_stats = AlignmentStats()

    def __len__(self) -> int:
        n = len(self.samples)
        return n + (0 if self.extra_audio is None else len(self.extra_audio))

    def segment_labels(self, sample: Sample) -> np.ndarray:
        return segment_labels(sample, num_segments=self.num_segments, background_id=self.background_id)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.samples)
        if index >= n:
            j = index - n
            if self.extra_audio is None or self.extra_visual is None:
                raise IndexError(f"index {index} out of range for {n} samples (no extra background videos)")
            seg = np.full(self.num_segments, self.background_id, np.int64)
            visual = _standardize(np.asarray(self.extra_visual[j], np.float32), self.stats.get(self.visual_stream))
            audio = _standardize(np.asarray(self.extra_audio[j], np.float32), self.stats.get(self.audio_stream))
            sample_id, video_id, is_bg = f"background-{j:04d}", f"background-{j:04d}", True
        else:
            sample = self.samples[index]
            arrays = align_rows(
                sample.video_id,
                {
                    "v": _standardize(
                        read_rows(self.store, sample.video_id, self.visual_stream), self.stats.get(self.visual_stream)
                    ),
                    "a": _standardize(
                        read_rows(self.store, sample.video_id, self.audio_stream), self.stats.get(self.audio_stream)
                    ),
                },
                stats=self.alignment_stats,
            )
            visual, audio = arrays["v"].astype(np.float32), arrays["a"].astype(np.float32)
            if visual.shape[0] < self.num_segments:
                raise AlignmentError(
                    f"video {sample.video_id!r}: {visual.shape[0]} rows, expected {self.num_segments} segments"
                )
            visual, audio = visual[: self.num_segments], audio[: self.num_segments]
            seg = self.segment_labels(sample)
            sample_id, video_id, is_bg = sample.sample_id, sample.video_id, False
        video_labels = np.zeros(self.num_classes, np.float32)
        video_labels[np.unique(seg)] = 1.0
        if not is_bg:  # an empty event ([0, 0), AVE line 27) still names the video's class (mil_labels.h5)
            video_labels[[g.label_id for g in sample.segments]] = 1.0
        return {
            "sample_id": sample_id,
            "video_id": video_id,
            "visual": torch.from_numpy(visual),  # 10 x 7 x 7 x 512
            "audio": torch.from_numpy(audio),  # 10 x 128
            "segment_labels": torch.from_numpy(seg),  # 10
            "video_labels": torch.from_numpy(video_labels),  # 29
            "is_background_video": is_bg,
        }

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "sample_ids": [it["sample_id"] for it in items],
            "video_ids": [it["video_id"] for it in items],
            "visual": torch.stack([it["visual"] for it in items]),
            "audio": torch.stack([it["audio"] for it in items]),
            "segment_labels": torch.stack([it["segment_labels"] for it in items]),
            "video_labels": torch.stack([it["video_labels"] for it in items]),
            "is_background_video": torch.tensor([it["is_background_video"] for it in items]),
        }
