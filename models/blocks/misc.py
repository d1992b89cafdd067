"""Small building blocks: stochastic depth, learnable scale, sinusoidal position encoding."""

from __future__ import annotations

import math

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``drop_prob``, rescale survivors."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`.

    Args:
        drop_prob: probability of dropping a sample's residual branch during training.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)


class AffineDropPath(nn.Module):
    """Per-channel learnable scale (LayerScale, init 1e-4) followed by stochastic depth.

    Used on transformer residual branches by ActionFormer/UnAV when drop-path > 0.

    Args:
        num_channels: C of the ``B x C x T`` input.
        drop_prob: stochastic-depth probability.
        init_scale: initial value of the per-channel scale.
    """

    def __init__(self, num_channels: int, *, drop_prob: float = 0.0, init_scale: float = 1e-4) -> None:
        super().__init__()
        self.scale = nn.Parameter(init_scale * torch.ones(1, num_channels, 1))
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(self.scale * x, self.drop_prob, self.training)


class Scale(nn.Module):
    """Multiply by one learnable scalar (per-pyramid-level regression scale).

    Args:
        init_value: initial scalar.
    """

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def sinusoid_encoding(num_positions: int, dim: int) -> torch.Tensor:
    """Transformer sinusoidal position table as ``1 x dim x num_positions`` (float32).

    Channel 2i is ``sin(pos / 10000^(2i/dim))``, channel 2i+1 the matching cosine.
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]  # P x 1
    idx = torch.arange(dim, dtype=torch.float64)
    inv_freq = torch.exp(-(2 * torch.div(idx, 2, rounding_mode="floor") / dim) * math.log(10000.0))
    angles = pos * inv_freq[None]  # P x dim
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.to(torch.float32).T.unsqueeze(0)
