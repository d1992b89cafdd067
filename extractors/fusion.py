"""Inference-time fusion: BatchNorm folded into the convolution before it.

In eval mode ``BN(conv(x)) = gamma * (W * x + b - mean) / sqrt(var + eps) + beta`` is itself a
convolution with weight ``W * s`` and bias ``(b - mean) * s + beta`` where ``s = gamma /
sqrt(var + eps)`` per output channel. Folding removes the BatchNorm pass over every activation
(a memory-bound pass of the size of the conv output) and lets the convolution add the bias in
its own kernel. The fold is exact in real arithmetic; in float32 the rows move by float
rounding only (I3D full: within 1e-4, tested).

Only for inference: the folded module has no BatchNorm running statistics to update, so it
must not be trained or have an unfolded state dict loaded into it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: Mapping[str, torch.Tensor], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv`` followed by eval-mode BatchNorm, as one convolution.

    A pure function: the inputs are not changed.

    Args:
        weight: conv weight ``C_out x C_in x *kernel``.
        bias: conv bias ``C_out`` or None.
        bn: the BatchNorm's ``weight`` (gamma), ``bias`` (beta), ``running_mean``,
            ``running_var`` (each ``C_out``), e.g. ``bn_module.state_dict()``; a BatchNorm
            without affine parameters may leave out ``weight`` / ``bias``.
        eps: the BatchNorm's epsilon.

    Returns:
        ``(weight, bias)`` in ``weight``'s dtype, computed in float64.
    """
    mean = bn["running_mean"].double()
    var = bn["running_var"].double()
    gamma = bn["weight"].double() if bn.get("weight") is not None else torch.ones_like(mean)
    beta = bn["bias"].double() if bn.get("bias") is not None else torch.zeros_like(mean)
    if weight.shape[0] != mean.shape[0]:
        raise ValueError(f"fold_batchnorm: conv has {weight.shape[0]} output channels, BatchNorm {mean.shape[0]}")
    scale = gamma / torch.sqrt(var + eps)  # C_out
    w = weight.double() * scale.view(-1, *([1] * (weight.ndim - 1)))
    b = ((bias.double() if bias is not None else torch.zeros_like(mean)) - mean) * scale + beta
    return w.to(weight.dtype), b.to(weight.dtype)
