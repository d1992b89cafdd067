"""Sampling plans: how a feature stream tiles time into windows.

A plan is the single source of truth for the time of every feature row. Row ``i`` covers
``[i * step_s, i * step_s + window_s)`` seconds from the start of the video, for both
modalities. Times are never read from container timestamps.

Video plans count in frames of the *resampled* stream (``fps``)::

    frames at fps:  |0|1|2|3|4|5|6|7|8|9|...
    row 0:          [0 ........ window)            start = 0
    row 1:                [stride ...... stride+window)   start = stride / fps

Audio plans count in samples at ``sample_rate``; window and hop are given in seconds and
rounded to whole samples once (``window_samples``, ``hop_samples``).

Short inputs: a video (or audio track) shorter than one window still yields exactly one row.
Its input is padded up to one window (the extractor decides how: frame repetition for
video, zeros for audio) and the row is recorded as padded (``num_rows`` returns 1 and
``is_padded`` is True). Incomplete trailing windows of longer inputs are dropped, as the
reference tools do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import numpy as np

Modality = Literal["video", "audio"]
_T = TypeVar("_T")


def _field(plan: SamplingPlan, name: str, value: _T | None) -> _T:
    """A field the plan's modality requires (``__post_init__`` guarantees it is set)."""
    if value is None:
        raise ValueError(f"{plan.modality} plan has no {name}: {plan}")
    return value


@dataclass(frozen=True)
class SamplingPlan:
    """Window layout of one feature stream.

    Args:
        modality: ``"video"`` or ``"audio"``.
        fps: video only; frames per second the decoder resamples to.
        window_frames: video only; frames per window (e.g. 24 for I3D on UnAV-100).
        stride_frames: video only; frames between window starts (e.g. 8).
        sample_rate: audio only; samples per second (16000 for VGGish and ONE-PEACE).
        window_s: audio only; window length in seconds (0.96 for VGGish examples).
        hop_s: audio only; seconds between window starts (0.32 for UnAV-100 VGGish).
    """

    modality: Modality
    fps: float | None = None
    window_frames: int | None = None
    stride_frames: int | None = None
    sample_rate: int | None = None
    window_s: float | None = None
    hop_s: float | None = None

    def __post_init__(self) -> None:
        if self.modality == "video":
            if not (
                self.fps
                and self.fps > 0
                and self.window_frames
                and self.window_frames > 0
                and self.stride_frames
                and self.stride_frames > 0
            ):
                raise ValueError(f"video plan needs fps > 0, window_frames > 0 and stride_frames > 0, got {self}")
        elif self.modality == "audio":
            if not (
                self.sample_rate
                and self.sample_rate > 0
                and self.window_s
                and self.window_s > 0
                and self.hop_s
                and self.hop_s > 0
            ):
                raise ValueError(f"audio plan needs sample_rate > 0, window_s > 0 and hop_s > 0, got {self}")
        else:
            raise ValueError(f"modality must be 'video' or 'audio', got {self.modality!r}")

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def video(cls, *, fps: float, window_frames: int, stride_frames: int) -> SamplingPlan:
        return cls("video", fps=float(fps), window_frames=int(window_frames), stride_frames=int(stride_frames))

    @classmethod
    def audio(cls, *, sample_rate: int, window_s: float, hop_s: float) -> SamplingPlan:
        return cls("audio", sample_rate=int(sample_rate), window_s=float(window_s), hop_s=float(hop_s))

    # -- units ----------------------------------------------------------------------------
    @property
    def units_per_s(self) -> float:
        """Frames (video) or samples (audio) per second."""
        if self.modality == "video":
            return float(_field(self, "fps", self.fps))
        return float(_field(self, "sample_rate", self.sample_rate))

    @property
    def window_units(self) -> int:
        """Window length in frames (video) or samples (audio)."""
        if self.modality == "video":
            return int(_field(self, "window_frames", self.window_frames))
        return int(round(_field(self, "window_s", self.window_s) * self.units_per_s))

    @property
    def step_units(self) -> int:
        """Distance between window starts in frames (video) or samples (audio)."""
        if self.modality == "video":
            return int(_field(self, "stride_frames", self.stride_frames))
        return int(round(_field(self, "hop_s", self.hop_s) * self.units_per_s))

    @property
    def window_seconds(self) -> float:
        return self.window_units / self.units_per_s

    @property
    def step_seconds(self) -> float:
        return self.step_units / self.units_per_s

    # -- windows ---------------------------------------------------------------------------
    def units_in(self, duration_s: float) -> int:
        """Frames (video, resampled to ``fps``) or samples (audio) in ``duration_s`` seconds."""
        return int(math.floor(duration_s * self.units_per_s + 1e-6))

    def num_rows(self, n_units: int) -> int:
        """Rows produced from ``n_units`` frames or samples (at least 1, see module doc)."""
        if n_units < 0:
            raise ValueError(f"n_units must be >= 0, got {n_units}")
        if n_units < self.window_units:
            return 1
        return (n_units - self.window_units) // self.step_units + 1

    def is_padded(self, n_units: int) -> bool:
        """True when the input is shorter than one window and the single row is padded."""
        return n_units < self.window_units

    def window_bounds(self, num_rows: int) -> np.ndarray:
        """``num_rows x 2`` integer array of [start, end) in frames or samples."""
        starts = np.arange(num_rows, dtype=np.int64) * self.step_units
        return np.stack([starts, starts + self.window_units], axis=1)

    def row_times(self, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact (start_s, end_s) of every row, float64, from the plan alone."""
        bounds = self.window_bounds(num_rows).astype(np.float64) / self.units_per_s
        return bounds[:, 0], bounds[:, 1]

    def seconds_to_grid(self, t_s: np.ndarray | float) -> np.ndarray | float:
        """Seconds -> fractional row index whose window is centred on ``t_s`` (UnAV convention)."""
        return (np.asarray(t_s, dtype=np.float64) - 0.5 * self.window_seconds) / self.step_seconds

    def grid_to_seconds(self, g: np.ndarray | float) -> np.ndarray | float:
        """Inverse of :meth:`seconds_to_grid`: the centre time of (fractional) row ``g``."""
        return np.asarray(g, dtype=np.float64) * self.step_seconds + 0.5 * self.window_seconds

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingPlan:
        known = {"modality", "fps", "window_frames", "stride_frames", "sample_rate", "window_s", "hop_s"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown sampling plan keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**d)

    def describe(self) -> str:
        if self.modality == "video":
            return (
                f"video {self.fps:g} fps, window {self.window_frames} frames, stride {self.stride_frames} "
                f"({self.window_seconds:g} s every {self.step_seconds:g} s)"
            )
        return f"audio {self.sample_rate} Hz, window {self.window_s:g} s, hop {self.hop_s:g} s"


# Plans used by the published datasets (see docs/feature-store.md).
UNAV100_I3D = SamplingPlan.video(fps=25, window_frames=24, stride_frames=8)
UNAV100_VGGISH = SamplingPlan.audio(sample_rate=16000, window_s=0.96, hop_s=0.32)
UNAV100_ONEPEACE_VIDEO = SamplingPlan.video(fps=16, window_frames=16, stride_frames=4)
UNAV100_ONEPEACE_AUDIO = SamplingPlan.audio(sample_rate=16000, window_s=1.0, hop_s=0.25)
# AVE: one row per 1-s segment; visual = 16 frames averaged per segment, audio = one 0.96-s example.
AVE_VGG19 = SamplingPlan.video(fps=16, window_frames=16, stride_frames=16)
AVE_VGGISH = SamplingPlan.audio(sample_rate=16000, window_s=0.96, hop_s=1.0)
