"""Masked 1-D convolution and LayerNorm over the channel axis (tensors laid out B x C x T).

Masks are ``BoolTensor B x 1 x T`` (True = valid row). Every masked op zeroes padded rows of
its output so padding never leaks into valid rows through later convolutions.
"""

from __future__ import annotations

import torch
from torch import nn


def downsample_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """Nearest-neighbour mask downsampling: keep every ``stride``-th row (``B x 1 x T/stride``).

    Equals the reference's ``F.interpolate(mode="nearest")`` for lengths divisible by ``stride``.
    """
    if stride == 1:
        return mask
    if mask.shape[-1] % stride != 0:
        raise ValueError(f"sequence length {mask.shape[-1]} is not divisible by stride {stride}")
    return mask[..., ::stride]


class MaskedConv1D(nn.Module):
    """``nn.Conv1d`` with odd kernel, "same" padding and an output mask.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size; padding is ``kernel_size // 2`` so rows stay aligned.
        stride: temporal stride; the input length must be divisible by it.
        groups: convolution groups (``in_channels`` for a depthwise conv).
        bias: add a bias (initialised to zero, as in ActionFormer/UnAV).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.stride = stride
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=bias
        )
        if self.conv.bias is not None:  # bias=True
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: B x C x T, mask: B x 1 x T (bool)
        out_mask = downsample_mask(mask, self.stride)
        out = self.conv(x) * out_mask.to(x.dtype)  # B x C' x T/stride
        return out, out_mask


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``B x C x T`` tensor (biased variance, eps inside sqrt).

    Args:
        num_channels: C.
        eps: added to the variance.
        affine: learn a per-channel weight and bias.
    """

    def __init__(self, num_channels: int, *, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(1, num_channels, 1))
            self.bias = nn.Parameter(torch.zeros(1, num_channels, 1))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got tensor of shape {tuple(x.shape)}")
        centred = x - x.mean(dim=1, keepdim=True)
        out = centred * torch.rsqrt(centred.pow(2).mean(dim=1, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight + self.bias
        return out
