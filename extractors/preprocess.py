"""Shared preprocessing of decoded frames and waveforms (pure tensor functions).

CPU side (run by the decoder, see :class:`avel.extractors.base.DecodeSpec`): :func:`apply_decode_spec`.
Device side (batched, inside ``Extractor.preprocess``): crops, scaling, padding, flow mapping.

Layouts: ``uint8`` frames are channel-last ``... x H x W x 3`` (RGB); float image tensors are
channel-first ``... x 3 x H x W``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from avel.extractors.base import DecodeSpec


def _check_frames(frames: torch.Tensor, what: str) -> None:
    if frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"{what}: expected ... x H x W x 3 RGB frames, got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"{what}: expected uint8 frames, got {frames.dtype}")


def short_side_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """(H, W) after resizing the shorter side to ``short_side`` (long side rounded down, like
    video_features' ``ResizeImproved`` / torchvision ``Resize(int)``)."""
    if h <= w:
        return short_side, int(short_side * w / h)
    return int(short_side * h / w), short_side


def resize_target_hw(
    h: int, w: int, *, short_side: int | None = None, size_hw: tuple[int, int] | None = None
) -> tuple[int, int]:
    """(H, W) of a ``h x w`` frame after a :class:`DecodeSpec` resize (``short_side`` keeps the
    aspect, ``size_hw`` ignores it; neither: unchanged)."""
    if short_side is not None:
        return short_side_size(h, w, short_side)
    if size_hw is not None:
        return int(size_hw[0]), int(size_hw[1])
    return h, w


def pil_resize_frames(frames: np.ndarray, size_hw: tuple[int, int], index: np.ndarray | None = None) -> np.ndarray:
    """One PIL bilinear resize per frame: uint8 ``N x H x W x 3`` -> ``N x size_hw x 3``
    (``index``: resize only ``frames[index]``, without copying the full-size frames).

    What video_features (``ResizeImproved``: ``Image.resize(size, BILINEAR)`` on the full
    decoded frame) and Keras' image loading do; PIL's bilinear filter widens its support when
    downscaling (antialiased), unlike OpenCV's."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"pil_resize_frames: expected uint8 N x H x W x 3 frames, got {frames.shape} {frames.dtype}")
    index = np.arange(len(frames)) if index is None else np.asarray(index)
    h, w = int(size_hw[0]), int(size_hw[1])
    if tuple(frames.shape[1:3]) == (h, w):
        return frames[index]
    out = np.empty((len(index), h, w, 3), np.uint8)
    for i, j in enumerate(index):
        out[i] = np.asarray(Image.fromarray(frames[j]).resize((w, h), Image.Resampling.BILINEAR))
    return out


def resize_frames(frames: torch.Tensor, size_hw: tuple[int, int], *, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of uint8 ``T x H x W x 3`` frames to ``size_hw``; returns uint8.

    ``antialias=True`` approximates PIL's bilinear filter (used by video_features and Keras)
    when downscaling; values are rounded back to uint8 as PIL does.
    """
    _check_frames(frames, "resize_frames")
    if tuple(frames.shape[-3:-1]) == tuple(size_hw):
        return frames
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float()  # N x 3 x H x W
    x = F.interpolate(x, size=tuple(size_hw), mode="bilinear", align_corners=False, antialias=antialias)
    x = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.reshape(*lead, *x.shape[-3:])


def center_crop(x: torch.Tensor, size: int, *, channels_last: bool = False) -> torch.Tensor:
    """Square centre crop; offsets ``(H - size) // 2`` and ``(W - size) // 2`` (video_features)."""
    h_dim, w_dim = (-3, -2) if channels_last else (-2, -1)
    h, w = x.shape[h_dim], x.shape[w_dim]
    if h < size or w < size:
        raise ValueError(f"center_crop: input {h}x{w} is smaller than the crop {size}")
    top, left = (h - size) // 2, (w - size) // 2
    x = x.narrow(h_dim, top, size)
    return x.narrow(w_dim, left, size)


def apply_decode_spec(frames: torch.Tensor, spec: DecodeSpec) -> torch.Tensor:
    """CPU-side resize / crop of one video's uint8 ``T x H x W x 3`` frames as ``spec`` says.

    With ``spec.resize == "pil"`` the decoder has already resized every frame with PIL to the
    target size (:func:`pil_resize_frames`), so only the crop is left here; frames of another
    size are resized with torch (:func:`resize_frames`)."""
    _check_frames(frames, "apply_decode_spec")
    h, w = int(frames.shape[-3]), int(frames.shape[-2])
    frames = resize_frames(frames, resize_target_hw(h, w, short_side=spec.short_side, size_hw=spec.size_hw))
    if spec.center_crop is not None:
        frames = center_crop(frames, spec.center_crop, channels_last=True)
    return frames


def to_float_channels_first(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``... x H x W x 3`` -> float32 ``... x 3 x H x W`` in [0, 255]."""
    _check_frames(frames, "to_float_channels_first")
    return frames.movedim(-1, -3).float()


def scale_to_pm1(x: torch.Tensor) -> torch.Tensor:
    """[0, 255] -> [-1, 1] as ``2 x / 255 - 1`` (I3D, RAFT input)."""
    return x * (2.0 / 255.0) - 1.0


def pad_to_multiple(x: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Replicate-pad ``N x C x H x W`` so H and W are multiples of ``multiple``.

    Padding is split like RAFT's ``InputPadder`` ("sintel" mode): ``pad // 2`` before, the rest
    after. Returns the padded tensor and ``(left, right, top, bottom)``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph or pw:
        x = F.pad(x, pads, mode="replicate")
    return x, pads


def flow_to_i3d(flow: torch.Tensor, *, clamp: float = 20.0) -> torch.Tensor:
    """Optical flow (pixels) -> I3D flow input, as video_features does.

    ``clamp(flow, -20, 20)`` -> ``round(128 + 255/40 * flow)`` (torch rounds half to even; the
    result is not clipped to 255, so +20 maps to 256 exactly as in the reference) ->
    ``2 x / 255 - 1``.
    """
    q = (128.0 + 255.0 / (2 * clamp) * flow.clamp(-clamp, clamp)).round()
    return scale_to_pm1(q)
