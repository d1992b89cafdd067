"""Classification and (class-aware) regression heads shared by all dense detectors.

Both heads run the same convolutions on every pyramid level (shared weights). Inputs are
per-level ``B x D x T_l`` features with ``B x 1 x T_l`` masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from avel.models.blocks import ChannelLayerNorm, MaskedConv1D, Scale


@dataclass
class HeadConfig:
    """Head hyper-parameters (UnAV defaults).

    Attributes:
        head_dim: channels of the hidden convs.
        num_layers: convs including the output conv (UnAV: 3 = 2 hidden + 1 output).
        kernel_size: conv kernel size.
        with_ln: channel LayerNorm after each hidden conv (hidden convs then have no bias).
        prior_prob: initial foreground probability of the classifier bias (RetinaNet prior).
        class_aware: regression outputs 2 x C offsets per row (UnAV) instead of 2.
        empty_classes: class ids without training data; their bias is set so p = 1e-6.
    """

    head_dim: int = 512
    num_layers: int = 3
    kernel_size: int = 3
    with_ln: bool = True
    prior_prob: float = 0.01
    class_aware: bool = True
    empty_classes: tuple[int, ...] = ()


def _trunk(in_dim: int, cfg: HeadConfig) -> tuple[nn.ModuleList, nn.ModuleList]:
    convs, norms = nn.ModuleList(), nn.ModuleList()
    for i in range(cfg.num_layers - 1):
        convs.append(
            MaskedConv1D(in_dim if i == 0 else cfg.head_dim, cfg.head_dim, cfg.kernel_size, bias=not cfg.with_ln)
        )
        norms.append(ChannelLayerNorm(cfg.head_dim) if cfg.with_ln else nn.Identity())
    return convs, norms


def _run_trunk(convs: nn.ModuleList, norms: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    for conv, norm in zip(convs, norms):
        x, _ = conv(x, mask)
        x = F.relu(norm(x))
    return x


class ClassificationHead(nn.Module):
    """Per-level logits ``B x T_l x C`` (apply a sigmoid for probabilities).

    Args:
        in_dim: channels of the pyramid features.
        num_classes: C.
        cfg: :class:`HeadConfig`.
    """

    def __init__(self, *, in_dim: int, num_classes: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.convs, self.norms = _trunk(in_dim, cfg)
        self.cls_conv = MaskedConv1D(cfg.head_dim, num_classes, cfg.kernel_size)
        bias = self.cls_conv.conv.bias
        if bias is None:
            raise ValueError("the classification conv needs a bias (prior-probability init)")
        nn.init.constant_(bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))
        with torch.no_grad():
            for c in cfg.empty_classes:
                bias[c] = -math.log((1 - 1e-6) / 1e-6)

    def forward(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for x, m in zip(feats, masks):
            logits, _ = self.cls_conv(_run_trunk(self.convs, self.norms, x, m), m)  # B x C x T_l
            out.append(logits.transpose(1, 2))  # B x T_l x C
        return out


class RegressionHead(nn.Module):
    """Per-level non-negative offsets (distance to start, to end) in units of the level stride.

    Output per level: ``B x T_l x C x 2`` when class-aware, else ``B x T_l x 2``. A learnable
    :class:`Scale` per level precedes the ReLU. Channel ``2c`` / ``2c+1`` of the output conv are
    the left / right offsets of class ``c`` (the UnAV layout, so reference weights map 1:1).

    Args:
        in_dim: channels of the pyramid features.
        num_classes: C.
        num_levels: pyramid levels (one Scale each).
        cfg: :class:`HeadConfig`.
    """

    def __init__(self, *, in_dim: int, num_classes: int, num_levels: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_aware = cfg.class_aware
        self.convs, self.norms = _trunk(in_dim, cfg)
        self.scales = nn.ModuleList(Scale() for _ in range(num_levels))
        self.offset_conv = MaskedConv1D(cfg.head_dim, 2 * num_classes if cfg.class_aware else 2, cfg.kernel_size)

    def forward(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.scales):
            raise ValueError(f"regression head built for {len(self.scales)} levels, got {len(feats)}")
        out = []
        for level, (x, m) in enumerate(zip(feats, masks)):
            off, _ = self.offset_conv(_run_trunk(self.convs, self.norms, x, m), m)  # B x 2C x T_l
            off = F.relu(self.scales[level](off)).transpose(1, 2)  # B x T_l x 2C
            if self.class_aware:
                off = off.reshape(off.shape[0], off.shape[1], self.num_classes, 2)  # B x T_l x C x 2
            out.append(off)
        return out
