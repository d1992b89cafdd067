"""Temporal dependency modelling (UnAV TDM): per-class temporal attention + class co-occurrence attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from avel.models.blocks import MaskedConv1D, TransformerBlock


@dataclass
class TdmConfig:
    """TDM options (UnAV: 128 channels per class, 1 head, kernel 3, drop-path 0.1).

    Attributes:
        class_dim: H, channels per class after expansion (memory scales with H x C x T).
        num_heads: heads of both attention branches.
        kernel_size: kernel of the expand / squeeze convs.
        path_pdrop: drop-path rate.
    """

    class_dim: int = 128
    num_heads: int = 1
    kernel_size: int = 3
    path_pdrop: float = 0.1


class TemporalDependencyModule(nn.Module):
    """Shared across pyramid levels: ``B x D x T_l`` -> ``B x D x T_l``.

    Expand to ``C x H`` channels (conv + ReLU), then sum of (a) self-attention over time within
    each class and (b) self-attention over classes at each time step, then squeeze back to D.
    The temporal branch masks padded rows per sample (the reference repeats the batch mask in
    class-major order, which mismatches samples when B > 1; we use the intended order).

    Args:
        in_dim: D (2 x modality width).
        num_classes: C.
        cfg: :class:`TdmConfig`.
    """

    def __init__(self, *, in_dim: int, num_classes: int, cfg: TdmConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_dim = cfg.class_dim
        H = cfg.class_dim
        self.expand = MaskedConv1D(in_dim, H * num_classes, cfg.kernel_size, bias=False)
        self.cooccur = TransformerBlock(H, cfg.num_heads, hidden_dim=H, path_pdrop=cfg.path_pdrop)
        self.temporal = TransformerBlock(H, cfg.num_heads, hidden_dim=H, path_pdrop=cfg.path_pdrop)
        self.squeeze = MaskedConv1D(H * num_classes, in_dim, cfg.kernel_size, bias=False)

    def expand_level(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``B x D x T`` -> ``B x C x H x T`` (ReLU applied)."""
        e, _ = self.expand(x, mask)
        return F.relu(e).view(x.shape[0], self.num_classes, self.class_dim, x.shape[-1])

    def mix_level(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``B x C x H x T`` expanded features -> ``B x D x T``."""
        B, C, H, T = e.shape
        temporal, _ = self.temporal(
            e.reshape(B * C, H, T), e.reshape(B * C, H, T), mask.repeat_interleave(C, dim=0)
        )  # BC x H x T
        co = e.permute(0, 3, 2, 1).reshape(B * T, H, C)  # BT x H x C
        co_mask = torch.ones(B * T, 1, C, dtype=torch.bool, device=e.device)
        co, _ = self.cooccur(co, co, co_mask)
        co = co * mask.reshape(B * T, 1, 1).to(co.dtype)  # padded time steps -> 0
        out = temporal.view(B, C, H, T) + co.view(B, T, H, C).permute(0, 3, 2, 1)
        out, _ = self.squeeze(out.reshape(B, C * H, T), mask)
        return out

    def forward(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.mix_level(self.expand_level(x, m), m) for x, m in zip(feats, masks)]
