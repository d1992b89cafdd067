"""Inference-time fusion: BatchNorm folded into the convolution before it, and convolutions
with prepacked oneDNN weights and a fused ReLU on the CPU.

In eval mode ``BN(conv(x)) = gamma * (W * x + b - mean) / sqrt(var + eps) + beta`` is itself a
convolution with weight ``W * s`` and bias ``(b - mean) * s + beta`` where ``s = gamma /
sqrt(var + eps)`` per output channel. Folding removes the BatchNorm pass over every activation
(a memory-bound pass of the size of the conv output) and lets the convolution add the bias in
its own kernel. The fold is exact in real arithmetic; in float32 the rows move by float
rounding only (I3D full: within 1e-4, tested).

Only for inference: the folded module has no BatchNorm running statistics to update, so it
must not be trained or have an unfolded state dict loaded into it.

On the CPU, eager ``conv3d`` reorders the weight into oneDNN's blocked layout on every call
(and runs 1 x 1 x 1 kernels at batch 1 through its slower im2col + GEMM path); the ReLU after
it is another pass over the output. :class:`PackedConv` reorders the weight once per input
shape and runs oneDNN's convolution with the ReLU as a post-op (torch's
``mkldnn._convolution_pointwise``, what inductor's CPU freezing emits);
:func:`pack_conv_relu_` does the same for the Conv2d + ReLU pairs of VGG-19 and VGGish.
Full presets, batch 1, on this project's 2-core machine (``benchmarks/packed_conv_speed.py``):
I3D 6-20 % less forward time, VGGish 19-23 %, VGG-19 none (its convolutions outweigh the
weight reorder); rows within float rounding of ``F.conv3d`` / ``F.conv2d`` (tested). Used only
for float32 CPU tensors without autograd or autocast, and only where torch's build has the
oneDNN ops; everywhere else the plain convolution runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


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
        ``(weight, bias)`` in ``weight``'s dtype: the scale and the bias computed in float64,
        the weight multiplied by the scale in its own dtype.
    """
    mean = bn["running_mean"].double()
    var = bn["running_var"].double()
    gamma = bn["weight"].double() if bn.get("weight") is not None else torch.ones_like(mean)
    beta = bn["bias"].double() if bn.get("bias") is not None else torch.zeros_like(mean)
    if weight.shape[0] != mean.shape[0]:
        raise ValueError(f"fold_batchnorm: conv has {weight.shape[0]} output channels, BatchNorm {mean.shape[0]}")
    scale = gamma / torch.sqrt(var + eps)  # C_out
    # the weight is scaled in its own dtype: one more rounding than in float64, without float64
    # copies of every weight (I3D: 96 MB and ~0.1 s of a one-video command's model load)
    w = weight * scale.to(weight.dtype).view(-1, *([1] * (weight.ndim - 1)))
    b = ((bias.double() if bias is not None else torch.zeros_like(mean)) - mean) * scale + beta
    return w, b.to(weight.dtype)


@functools.cache
def onednn_packed_available() -> bool:
    """Whether this torch build has oneDNN and the ops :class:`PackedConv` needs."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise.default  # noqa: B018  (resolves the op or raises)
    except (AttributeError, RuntimeError):
        return False
    return hasattr(torch._C._nn, "mkldnn_reorder_conv3d_weight") and hasattr(
        torch._C._nn, "mkldnn_reorder_conv2d_weight"
    )


class PackedConv:
    """A convolution's weight prepacked for oneDNN, per input shape (CPU float32 inference).

    Holds no copy of the module's parameters: the packed weights are derived from ``weight``
    and rebuilt when it is replaced, moved to other memory (``.data`` swapped) or changed in
    place (its ``_version``). At most
    ``max_shapes`` (input shape, stride, padding) keys are kept (a run uses one or two).

    Args:
        max_shapes: packed weights kept at once; the oldest is dropped beyond it.
    """

    def __init__(self, *, max_shapes: int = 4) -> None:
        self.max_shapes = max_shapes
        self._packed: dict[tuple[Any, ...], torch.Tensor] = {}

    @staticmethod
    def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether the packed path may run: float32 CPU tensors, no autograd, no autocast."""
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and weight.dtype == torch.float32
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
            and onednn_packed_available()
        )

    def __call__(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        stride: Sequence[int],
        padding: Sequence[int],
        relu: bool,
    ) -> torch.Tensor:
        """``relu(conv(x, weight, bias))`` (``relu=False``: the convolution alone) with
        symmetric zero ``padding``; ``x`` is ``B x C x *spatial``. The caller checks
        :meth:`applies` first."""
        stride, padding = [int(v) for v in stride], [int(v) for v in padding]
        dilation = [1] * len(stride)
        key = (tuple(x.shape), tuple(stride), tuple(padding), id(weight), weight.data_ptr(), weight._version)
        packed = self._packed.get(key)
        if packed is None:
            reorder: Callable[..., torch.Tensor] = (  # torch's stubs lack input_size; the ops take it
                torch._C._nn.mkldnn_reorder_conv3d_weight
                if weight.ndim == 5
                else torch._C._nn.mkldnn_reorder_conv2d_weight
            )
            packed = reorder(weight.detach().to_mkldnn(), padding, stride, dilation, 1, list(x.shape))
            if len(self._packed) >= self.max_shapes:
                self._packed.pop(next(iter(self._packed)))
            self._packed[key] = packed
        bias = None if bias is None else bias.detach()
        act = "relu" if relu else "none"
        return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, padding, stride, dilation, 1, act, [], "")

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles carry no packed weights (oneDNN tensors are neither): rebuilt on use."""
        return {**self.__dict__, "_packed": {}}


def conv_relu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    relu: bool,
    packed: PackedConv | None = None,
) -> torch.Tensor:
    """``relu(conv(x))`` of a 2-D or 3-D convolution with symmetric zero ``padding``: through
    ``packed`` when given and :meth:`PackedConv.applies`, else ``F.conv2d`` / ``F.conv3d`` and
    an in-place ReLU."""
    if packed is not None and PackedConv.applies(x, weight):
        return packed(x, weight, bias, stride=stride, padding=padding, relu=relu)
    conv = F.conv3d if weight.ndim == 5 else F.conv2d
    y = conv(x, weight, bias, tuple(stride), tuple(padding))
    return F.relu(y, inplace=True) if relu else y


def _packable(conv: nn.Conv2d) -> bool:
    """Whether :class:`PackedConvReLU2d` can run ``conv``: zero numeric padding, groups 1,
    dilation 1."""
    return (
        not isinstance(conv.padding, str)
        and conv.padding_mode == "zeros"
        and conv.groups == 1
        and tuple(conv.dilation) == (1, 1)
    )


class PackedConvReLU2d(nn.Conv2d):
    """An ``nn.Conv2d`` (the same parameters, the same state-dict keys) that runs through
    :func:`conv_relu`: on a prepacked oneDNN weight for float32 CPU inference, with the ReLU
    that followed it in its ``nn.Sequential`` fused when ``relu``. Build it with
    :meth:`from_conv`; :func:`pack_conv_relu_` swaps it in."""

    relu: bool
    packed: PackedConv

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, relu: bool) -> PackedConvReLU2d:
        """The module for ``conv`` (sharing its parameter tensors, not copying them)."""
        padding = conv.padding
        if isinstance(padding, str) or not _packable(conv):
            raise ValueError(f"PackedConvReLU2d: only zero numeric padding, groups 1, dilation 1; got {conv}")
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        ph, pw = padding
        new = cls(
            conv.in_channels,
            conv.out_channels,
            (kh, kw),
            stride=(sh, sw),
            padding=(ph, pw),
            bias=conv.bias is not None,
            device="meta",  # no allocation: the parameters are conv's own
        )
        new.weight = conv.weight
        new.bias = conv.bias
        new.relu = relu
        new.packed = PackedConv()
        return new.train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        assert not isinstance(padding, str)  # from_conv refuses string padding
        return conv_relu(
            x, self.weight, self.bias, stride=self.stride, padding=padding, relu=self.relu, packed=self.packed
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, relu={self.relu}"


def pack_conv_relu_(seq: nn.Sequential) -> int:
    """In place: every plain ``nn.Conv2d`` of ``seq`` (zero padding, groups 1, dilation 1)
    becomes a :class:`PackedConvReLU2d`; a ``ReLU`` right after it is fused into it and its
    slot becomes ``nn.Identity`` (no parameters: the state-dict keys stay). Returns how many
    convolutions were swapped. For inference only (the fused ReLU is not in place of a
    separate module any more)."""
    swapped = 0
    for i, layer in enumerate(list(seq)):
        if type(layer) is not nn.Conv2d or not _packable(layer):
            continue
        relu = i + 1 < len(seq) and type(seq[i + 1]) is nn.ReLU
        seq[i] = PackedConvReLU2d.from_conv(layer, relu=relu)
        if relu:
            seq[i + 1] = nn.Identity()
        swapped += 1
    return swapped
