"""Unimodal temporal encoders: masked conv embedding + sinusoidal position + self-attention (UnAV)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from avel.models.blocks import ChannelLayerNorm, MaskedConv1D, TransformerBlock, sinusoid_encoding


@dataclass
class EncoderConfig:
    """Unimodal encoder options (UnAV defaults: 2 convs k3 + LN + ReLU to 512, abs PE, 2 blocks).

    Attributes:
        embed_dim: output channels D.
        num_convs: masked convs of the embedding stem.
        kernel_size: their kernel size.
        with_ln: LayerNorm after each conv (the conv then has no bias).
        num_self_attn: self-attention transformer blocks after the stem (UnAV arch[1] - 1 = 2).
        num_heads: attention heads.
        use_abs_pe: add the sinusoidal table scaled by 1/sqrt(D) after the stem.
        attn_pdrop: attention dropout.
        proj_pdrop: projection / MLP dropout.
        path_pdrop: drop-path rate of the transformer blocks (UnAV: 0.1).
    """

    embed_dim: int = 512
    num_convs: int = 2
    kernel_size: int = 3
    with_ln: bool = True
    num_self_attn: int = 2
    num_heads: int = 4
    use_abs_pe: bool = True
    attn_pdrop: float = 0.0
    proj_pdrop: float = 0.0
    path_pdrop: float = 0.1


class UnimodalEncoder(nn.Module):
    """Encode one modality ``B x Din x T`` -> ``B x D x T`` (mask ``B x 1 x T`` unchanged).

    Position encoding: the table covers ``max_seq_len`` rows; longer inputs (only allowed in eval
    mode, as in the reference) get the table linearly interpolated to their length.

    Args:
        in_dim: input feature dim (from the store manifest).
        max_seq_len: rows of the position table (the training sequence length).
        cfg: :class:`EncoderConfig`.
    """

    pos_embed: torch.Tensor  # 1 x D x max_seq_len buffer (when cfg.use_abs_pe)

    def __init__(self, *, in_dim: int, max_seq_len: int, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_seq_len = max_seq_len
        D = cfg.embed_dim
        self.convs = nn.ModuleList(
            MaskedConv1D(in_dim if i == 0 else D, D, cfg.kernel_size, bias=not cfg.with_ln)
            for i in range(cfg.num_convs)
        )
        self.norms = nn.ModuleList(
            (ChannelLayerNorm(D) if cfg.with_ln else nn.Identity()) for _ in range(cfg.num_convs)
        )
        if cfg.use_abs_pe:
            self.register_buffer("pos_embed", sinusoid_encoding(max_seq_len, D) / D**0.5, persistent=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                D, cfg.num_heads, attn_pdrop=cfg.attn_pdrop, proj_pdrop=cfg.proj_pdrop, path_pdrop=cfg.path_pdrop
            )
            for _ in range(cfg.num_self_attn)
        )

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Conv stem + position encoding: ``B x Din x T`` -> ``B x D x T``."""
        for conv, norm in zip(self.convs, self.norms):
            x, _ = conv(x, mask)
            x = F.relu(norm(x))
        if self.cfg.use_abs_pe:
            T = x.shape[-1]
            pe = self.pos_embed
            if T > self.max_seq_len:
                if self.training:
                    raise ValueError(f"training sequence length {T} exceeds max_seq_len {self.max_seq_len}")
                pe = F.interpolate(pe, T, mode="linear", align_corners=False)
            x = x + pe[:, :, :T].to(x.dtype) * mask.to(x.dtype)
        return x

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(x, mask)
        for block in self.blocks:
            x, _ = block(x, x, mask)
        return x
