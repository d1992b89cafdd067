"""Cross-modal pyramid transformer (UnAV CMPT), optionally with CCNet's temporal consistency gates.

Level 0 keeps full resolution; each further level halves it with strided attention blocks
(depthwise strided conv on q/k/v, max-pool skip). Per level the visual and audio outputs are
concatenated ``[V; A]`` into ``B x 2D x T_l``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from avel.models.blocks import TemporalGate, TransformerBlock


@dataclass
class PyramidConfig:
    """Pyramid options.

    Attributes:
        num_levels: pyramid levels including the full-resolution one (UnAV/CCNet: 6, strides 1..32).
        scale_factor: downsampling between levels (2).
        num_heads: attention heads (4).
        cross_modal_interaction: queries come from the other modality (UnAV CMI / CCNet "CMI").
            False uses the modality's own features as queries (self-attention with the same
            downsampling): our reading of CCNet table 3 row "CMI ✗".
        temporal_consistency_gate: CCNet TCG: each modality's output is multiplied by
            ``1 + g`` where ``g`` (``B x 1 x T_l``) comes from self-attention on the other
            modality's input to the level.
        attn_pdrop, proj_pdrop, path_pdrop: dropouts (UnAV: 0, 0, 0.1).
    """

    num_levels: int = 6
    scale_factor: int = 2
    num_heads: int = 4
    cross_modal_interaction: bool = True
    temporal_consistency_gate: bool = False
    attn_pdrop: float = 0.0
    proj_pdrop: float = 0.0
    path_pdrop: float = 0.1


class CrossModalPyramid(nn.Module):
    """``(V, A, mask)`` with ``V, A: B x D x T`` -> per-level ``B x 2D x T_l`` and ``B x 1 x T_l`` masks.

    The residual of every attention block comes from the modality being updated (keys/values),
    queries from the other modality, as in the reference ``TransformerBlock(x_V, x_A)`` calls.

    Args:
        dim: D of each modality.
        cfg: :class:`PyramidConfig`.
    """

    def __init__(self, *, dim: int, cfg: PyramidConfig) -> None:
        super().__init__()
        self.cfg = cfg
        strides = [1] + [cfg.scale_factor] * (cfg.num_levels - 1)
        block = functools.partial(
            TransformerBlock,
            dim,
            cfg.num_heads,
            attn_pdrop=cfg.attn_pdrop,
            proj_pdrop=cfg.proj_pdrop,
            path_pdrop=cfg.path_pdrop,
        )
        self.visual_blocks = nn.ModuleList(block(stride=s) for s in strides)
        self.audio_blocks = nn.ModuleList(block(stride=s) for s in strides)
        if cfg.temporal_consistency_gate:
            gkw = dict(attn_pdrop=cfg.attn_pdrop, proj_pdrop=cfg.proj_pdrop)
            self.gates_from_audio = nn.ModuleList(TemporalGate(dim, cfg.num_heads, stride=s, **gkw) for s in strides)
            self.gates_from_visual = nn.ModuleList(TemporalGate(dim, cfg.num_heads, stride=s, **gkw) for s in strides)

    @property
    def strides(self) -> list[int]:
        return [self.cfg.scale_factor**i for i in range(self.cfg.num_levels)]

    def forward(
        self, v: torch.Tensor, a: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cmi = self.cfg.cross_modal_interaction
        feats, masks = [], []
        for level in range(self.cfg.num_levels):
            v_new, new_mask = self.visual_blocks[level](v, a if cmi else v, mask)
            a_new, _ = self.audio_blocks[level](a, v if cmi else a, mask)
            if self.cfg.temporal_consistency_gate:
                g_a = self.gates_from_audio[level](a, mask)  # B x 1 x T_l, audio guides visual
                g_v = self.gates_from_visual[level](v, mask)
                v_new = v_new + v_new * g_a
                a_new = a_new + a_new * g_v
            v, a, mask = v_new, a_new, new_mask
            feats.append(torch.cat([v, a], dim=1))  # B x 2D x T_l
            masks.append(mask)
        return feats, masks
