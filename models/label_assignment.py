"""Point generation and target assignment for anchor-free dense detectors (UnAV/ActionFormer).

Every pyramid level ``l`` (stride ``s_l``) has one point per row at grid position
``t = i * s_l`` (no half-stride offset, as in the reference). A point is positive for a ground
truth segment ``[a, b]`` (grid units) when it lies strictly inside it (or inside the centre
region with centre sampling) and ``max(t - a, b - t)`` falls in the level's regression range.
Regression targets are ``(t - a, b - t) / s_l``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

UNAV_REGRESSION_RANGES: tuple[tuple[float, float], ...] = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))


@dataclass
class AssignerConfig:
    """Label assignment options.

    Attributes:
        regression_ranges: per-level ``(low, high)`` bounds on ``max(left, right)`` in grid units;
            its length is the number of pyramid levels.
        scale_factor: stride ratio between consecutive levels (strides ``scale_factor ** l``).
        class_aware: one regression target per (point, class) (UnAV) instead of one per point
            (ActionFormer, where the shortest covering segment wins).
        center_sample: restrict positives to ``centre +- center_sample_radius * stride``
            (ActionFormer uses it with radius 1.5; UnAV does not: default off).
        center_sample_radius: radius in units of the level stride.
        class_aware_tie: which segment sets the class-aware regression target when several
            segments of the same class cover a point: "last" (default: the last listed segment,
            what the official UnAV code ends up with) or "shortest" (ActionFormer's rule for its
            class-agnostic targets; independent of annotation order).
    """

    regression_ranges: list[tuple[float, float]] = field(default_factory=lambda: list(UNAV_REGRESSION_RANGES))
    scale_factor: int = 2
    class_aware: bool = True
    center_sample: bool = False
    center_sample_radius: float = 1.5
    class_aware_tie: str = "last"

    def __post_init__(self) -> None:
        if self.class_aware_tie not in ("shortest", "last"):
            raise ValueError(f"assigner.class_aware_tie must be 'shortest' or 'last', got {self.class_aware_tie!r}")

    @property
    def strides(self) -> list[int]:
        return [self.scale_factor**i for i in range(len(self.regression_ranges))]


def make_points(level_lengths: list[int], cfg: AssignerConfig, *, device: torch.device | None = None) -> torch.Tensor:
    """Points of all levels concatenated: ``sum(T_l) x 4`` columns (t, range_low, range_high, stride)."""
    if len(level_lengths) != len(cfg.regression_ranges):
        raise ValueError(f"{len(level_lengths)} pyramid levels but {len(cfg.regression_ranges)} regression ranges")
    rows = []
    for length, stride, (lo, hi) in zip(level_lengths, cfg.strides, cfg.regression_ranges):
        t = torch.arange(length, dtype=torch.float32, device=device) * stride
        rows.append(torch.stack([t, torch.full_like(t, lo), torch.full_like(t, hi), torch.full_like(t, stride)], 1))
    return torch.cat(rows, 0)


def assign_targets(
    points: torch.Tensor, segments: torch.Tensor, labels: torch.Tensor, *, num_classes: int, cfg: AssignerConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for one video.

    Args:
        points: ``P x 4`` from :func:`make_points`.
        segments: ``N x 2`` ground truth ``[start, end]`` in grid units.
        labels: ``N`` class ids in ``[0, num_classes)``.
        num_classes: C.
        cfg: :class:`AssignerConfig`.

    Returns:
        ``cls_targets`` ``P x C`` in {0, 1}, and regression targets normalised by stride:
        ``P x C x 2`` when class-aware (zeros for classes without a target), else ``P x 2``.
        Class-aware ties (two segments of one class at a point) follow ``cfg.class_aware_tie``.
    """
    P, N = points.shape[0], segments.shape[0]
    dtype = points.dtype
    if N and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.tolist()}")
    reg_shape = (P, num_classes, 2) if cfg.class_aware else (P, 2)
    if N == 0:
        return points.new_zeros(P, num_classes), points.new_zeros(reg_shape)
    segments = segments.to(dtype)
    t, lo, hi, stride = points[:, 0:1], points[:, 1:2], points[:, 2:3], points[:, 3:4]  # P x 1
    left = t - segments[None, :, 0]  # P x N
    right = segments[None, :, 1] - t
    reg = torch.stack([left, right], -1)  # P x N x 2
    if cfg.center_sample:
        centre = 0.5 * (segments[:, 0] + segments[:, 1])[None]  # 1 x N
        radius = stride * cfg.center_sample_radius  # P x 1
        c_left = t - torch.maximum(centre - radius, segments[None, :, 0])
        c_right = torch.minimum(centre + radius, segments[None, :, 1]) - t
        inside = torch.minimum(c_left, c_right) > 0
    else:
        inside = reg.min(-1).values > 0
    max_dist = reg.max(-1).values
    valid = inside & (max_dist >= lo) & (max_dist <= hi)  # P x N
    lens = (segments[:, 1] - segments[:, 0])[None].expand(P, N)
    lens = lens.masked_fill(~valid, float("inf"))
    one_hot = F.one_hot(labels.long(), num_classes).to(dtype)  # N x C
    if cfg.class_aware:
        cls_targets = (valid.to(dtype) @ one_hot).clamp_(max=1.0)
        # per (point, class): the valid segment of that class chosen by the tie rule
        cand = valid[:, :, None] & one_hot.bool()[None]  # P x N x C
        if cfg.class_aware_tie == "shortest":
            key = torch.where(cand, lens[:, :, None], torch.full_like(lens[:, :, None], float("inf")))
            best = key.min(dim=1).indices  # P x C
        else:
            order = torch.arange(N, device=points.device, dtype=dtype)[None, :, None]
            best = torch.where(cand, order, torch.full_like(order, -1.0)).max(dim=1).indices
        reg_t = torch.gather(reg, 1, best[..., None].expand(P, num_classes, 2))  # P x C x 2
        reg_t = torch.where(cand.any(1)[..., None], reg_t, torch.zeros_like(reg_t))
        return cls_targets, reg_t / stride[:, :, None]
    min_len, best = lens.min(dim=1)  # P
    chosen = (lens <= min_len[:, None] + 1e-3) & torch.isfinite(lens)
    cls_targets = (chosen.to(dtype) @ one_hot).clamp_(max=1.0)
    reg_t = reg[torch.arange(P, device=points.device), best] / stride
    return cls_targets, reg_t
