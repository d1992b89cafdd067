"""Shared 1-D building blocks for the dense detectors (tensors B x C x T, masks B x 1 x T bool)."""

from .attention import MaskedMHCA, TemporalGate, TransformerBlock
from .conv import ChannelLayerNorm, MaskedConv1D, downsample_mask
from .misc import AffineDropPath, DropPath, Scale, drop_path, sinusoid_encoding

__all__ = [
    "AffineDropPath",
    "ChannelLayerNorm",
    "DropPath",
    "MaskedConv1D",
    "MaskedMHCA",
    "Scale",
    "TemporalGate",
    "TransformerBlock",
    "downsample_mask",
    "drop_path",
    "sinusoid_encoding",
]
