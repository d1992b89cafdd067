"""Masked multi-head (convolutional) attention and pre-LN transformer blocks (B x C x T layout).

Follows the ActionFormer/UnAV design: depthwise convolutions on query, key and value (which
also downsample when strided), a LayerNorm after each, 1x1 projections, softmax attention over
valid keys only, and an output projection zeroed on padded query rows.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .conv import ChannelLayerNorm, MaskedConv1D
from .misc import AffineDropPath


class MaskedMHCA(nn.Module):
    """Masked multi-head conv attention; queries from ``x_q``, keys/values from ``x_kv``.

    Args:
        dim: channels of queries, keys, values and output.
        num_heads: attention heads; must divide ``dim``.
        q_stride: temporal stride of the query branch (1 or even). Kernel ``stride + 1``
            (3 when stride is 1). The reference code strides the query conv with the key/value
            stride; both are equal everywhere it is used.
        kv_stride: temporal stride of the key/value branch (1 or even).
        attn_pdrop: dropout on attention weights.
        proj_pdrop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        q_stride: int = 1,
        kv_stride: int = 1,
        attn_pdrop: float = 0.0,
        proj_pdrop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        for name, s in (("q_stride", q_stride), ("kv_stride", kv_stride)):
            if s != 1 and s % 2 != 0:
                raise ValueError(f"{name} must be 1 or even, got {s}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        q_kernel = q_stride + 1 if q_stride > 1 else 3
        kv_kernel = kv_stride + 1 if kv_stride > 1 else 3
        self.query_conv = MaskedConv1D(dim, dim, q_kernel, stride=q_stride, groups=dim, bias=False)
        self.query_norm = ChannelLayerNorm(dim)
        self.key_conv = MaskedConv1D(dim, dim, kv_kernel, stride=kv_stride, groups=dim, bias=False)
        self.key_norm = ChannelLayerNorm(dim)
        self.value_conv = MaskedConv1D(dim, dim, kv_kernel, stride=kv_stride, groups=dim, bias=False)
        self.value_norm = ChannelLayerNorm(dim)
        self.key = nn.Conv1d(dim, dim, 1)
        self.query = nn.Conv1d(dim, dim, 1)
        self.value = nn.Conv1d(dim, dim, 1)
        self.attn_drop = nn.Dropout(attn_pdrop)
        self.proj_drop = nn.Dropout(proj_pdrop)
        self.proj = nn.Conv1d(dim, dim, 1)

    def project(
        self, x_kv: torch.Tensor, x_q: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values: depthwise conv (strided), LayerNorm, 1x1 projection.

        Args:
            x_kv, x_q: ``B x C x T``; mask: ``B x 1 x T`` (True = valid).
        Returns:
            ``(q, k, v, q_mask, kv_mask)``: ``q`` ``B x C x T/q_stride``, ``k`` and ``v``
            ``B x C x T/kv_stride``, and the masks of those lengths (``B x 1 x T'``).
        """
        q, q_mask = self.query_conv(x_q, mask)
        k, kv_mask = self.key_conv(x_kv, mask)
        v, _ = self.value_conv(x_kv, mask)
        q = self.query(self.query_norm(q))
        k = self.key(self.key_norm(k))
        v = self.value(self.value_norm(v))
        return q, k, v, q_mask, kv_mask

    def forward(self, x_kv: torch.Tensor, x_q: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x_kv, x_q: B x C x T; mask: B x 1 x T -> out B x C x T/q_stride, mask B x 1 x T/q_stride
        B, C, _ = x_kv.shape
        q, k, v, q_mask, kv_mask = self.project(x_kv, x_q, mask)
        # B x C x L -> B x H x L x Dh
        q = q.view(B, self.num_heads, self.head_dim, -1).transpose(2, 3)
        k = k.view(B, self.num_heads, self.head_dim, -1).transpose(2, 3)
        v = v.view(B, self.num_heads, self.head_dim, -1).transpose(2, 3)
        att = (q * self.scale) @ k.transpose(-2, -1)  # B x H x Tq x Tk
        # finite fill (not -inf) so a sample with no valid key gives zeros instead of NaN
        att = att.masked_fill(~kv_mask[:, :, None, :], torch.finfo(att.dtype).min)
        att = self.attn_drop(torch.softmax(att, dim=-1))
        kv_valid = kv_mask[:, :, :, None].to(v.dtype)  # B x 1 x Tk x 1
        out = att @ (v * kv_valid)  # B x H x Tq x Dh
        out = out.transpose(2, 3).reshape(B, C, -1)
        out = self.proj_drop(self.proj(out)) * q_mask.to(out.dtype)
        return out, q_mask


class TransformerBlock(nn.Module):
    """Pre-LN transformer block with optional downsampling (UnAV/ActionFormer ``TransformerBlock``).

    ``out = pool(x_kv) + MHCA(LN(x_kv), LN(x_q)); out = out + MLP(LN(out))``; the residual
    comes from the key/value input (as in the reference cross-attention blocks), max-pooled
    with kernel ``stride + 1`` when strided. Self-attention passes the same tensor twice.

    Args:
        dim: channels.
        num_heads: attention heads.
        stride: downsampling stride for queries and keys/values (1 = none).
        hidden_dim: MLP hidden width (default ``4 * dim``).
        out_dim: MLP output width (default ``dim``).
        attn_pdrop: attention dropout.
        proj_pdrop: projection / MLP dropout.
        path_pdrop: drop-path rate; when > 0 residual branches get a LayerScale (init 1e-4).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        stride: int = 1,
        hidden_dim: int | None = None,
        out_dim: int | None = None,
        attn_pdrop: float = 0.0,
        proj_pdrop: float = 0.0,
        path_pdrop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_dim = 4 * dim if hidden_dim is None else hidden_dim
        out_dim = dim if out_dim is None else out_dim
        self.ln_kv = ChannelLayerNorm(dim)
        self.ln_q = ChannelLayerNorm(dim)
        self.ln_mlp = ChannelLayerNorm(dim)
        self.attn = MaskedMHCA(
            dim, num_heads, q_stride=stride, kv_stride=stride, attn_pdrop=attn_pdrop, proj_pdrop=proj_pdrop
        )
        self.pool_skip: nn.Module = (
            nn.MaxPool1d(stride + 1, stride=stride, padding=(stride + 1) // 2) if stride > 1 else nn.Identity()
        )
        self.mlp = nn.Sequential(
            nn.Conv1d(dim, hidden_dim, 1),
            nn.GELU(),
            nn.Dropout(proj_pdrop),
            nn.Conv1d(hidden_dim, out_dim, 1),
            nn.Dropout(proj_pdrop),
        )
        if path_pdrop > 0.0:
            self.drop_path_attn: nn.Module = AffineDropPath(dim, drop_prob=path_pdrop)
            self.drop_path_mlp: nn.Module = AffineDropPath(out_dim, drop_prob=path_pdrop)
        else:
            self.drop_path_attn = nn.Identity()
            self.drop_path_mlp = nn.Identity()

    def forward(self, x_kv: torch.Tensor, x_q: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x_kv, x_q: B x C x T; mask: B x 1 x T -> B x C x T/stride, B x 1 x T/stride
        out, out_mask = self.attn(self.ln_kv(x_kv), self.ln_q(x_q), mask)
        valid = out_mask.to(out.dtype)
        out = self.pool_skip(x_kv) * valid + self.drop_path_attn(out)
        out = out + self.drop_path_mlp(self.mlp(self.ln_mlp(out)) * valid)
        return out, out_mask


class TemporalGate(nn.Module):
    """Temporal consistency gate (CCNet TCG): ``g = sigmoid(W MHA(F, F, F))``, ``B x 1 x T'``.

    Self-attention on the guiding modality (no residual, no MLP, as in the official code),
    then a 1x1 conv to one channel and a sigmoid. ``stride`` matches the pyramid level so the
    gate has the length of the gated (downsampled) feature.

    Args:
        dim: channels of the guiding feature.
        num_heads: attention heads.
        stride: downsampling stride (1 at the first pyramid level).
        attn_pdrop: attention dropout.
        proj_pdrop: projection dropout.
    """

    def __init__(
        self, dim: int, num_heads: int, *, stride: int = 1, attn_pdrop: float = 0.0, proj_pdrop: float = 0.0
    ) -> None:
        super().__init__()
        self.ln_kv = ChannelLayerNorm(dim)
        self.ln_q = ChannelLayerNorm(dim)
        self.attn = MaskedMHCA(
            dim, num_heads, q_stride=stride, kv_stride=stride, attn_pdrop=attn_pdrop, proj_pdrop=proj_pdrop
        )
        self.gate = MaskedConv1D(dim, 1, 1, bias=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: B x C x T, mask: B x 1 x T -> gate B x 1 x T/stride in (0, 1)
        out, out_mask = self.attn(self.ln_kv(x), self.ln_q(x), mask)
        logits, _ = self.gate(out, out_mask)
        return torch.sigmoid(logits)
