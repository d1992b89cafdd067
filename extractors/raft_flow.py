"""RAFT optical flow for the I3D flow stream (torchvision ``raft_large``).

Reference behaviour (v-iashin/video_features ``extract_i3d.py`` with ``flow_type=raft``): frames
are resized to short side 256 and flow is computed at that full resolution between consecutive
frames (``window + 1`` frames -> ``window`` flows), after padding H and W to multiples of 8 with
replicate padding split ``pad // 2`` before / rest after (``InputPadder``). The padded flow is
*not* unpadded there before the 224 centre crop; :class:`RaftFlowConfig.unpad` chooses (default
False = reference behaviour; the two differ by at most one pixel of crop offset when the pad of a
side is odd). The princeton-vl RAFT takes [0, 255] images and maps them to [-1, 1]; torchvision
takes [-1, 1] directly, so we feed ``2 x / 255 - 1``. The flow of the last update is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.optical_flow import raft as tv_raft

from avel.extractors.preprocess import pad_to_multiple, scale_to_pm1

RAFT_CHECKPOINT = "raft_large_C_T_SKHT_V1-0b8c9e55.pth"


@dataclass(frozen=True)
class RaftFlowConfig:
    """RAFT settings.

    Args:
        num_flow_updates: GRU refinement iterations (video_features uses 20).
        width_divisor: 1 = torchvision ``raft_large`` (faithful); >1 divides every channel width
            (tiny preset, random weights only).
        unpad: crop the padding off the flow before it is used (False = video_features).
    """

    num_flow_updates: int = 20
    width_divisor: int = 1
    unpad: bool = False


def build_raft(cfg: RaftFlowConfig) -> nn.Module:
    """torchvision ``raft_large(weights=None)``, or the same architecture with narrower layers."""
    if cfg.width_divisor == 1:
        return tv_raft.raft_large(weights=None, progress=False)
    d = cfg.width_divisor
    enc = tuple(max(c // d, 4) for c in (64, 64, 96, 128, 256))
    hidden = enc[-1] // 2
    return tv_raft._raft(
        weights=None, progress=False,
        feature_encoder_layers=enc, feature_encoder_block=tv_raft.ResidualBlock,
        feature_encoder_norm_layer=nn.InstanceNorm2d,
        context_encoder_layers=enc, context_encoder_block=tv_raft.ResidualBlock,
        context_encoder_norm_layer=nn.BatchNorm2d,
        corr_block_num_levels=4, corr_block_radius=4,
        motion_encoder_corr_layers=(256 // d, 192 // d), motion_encoder_flow_layers=(128 // d, 64 // d),
        motion_encoder_out_channels=hidden,
        recurrent_block_hidden_state_size=hidden,
        recurrent_block_kernel_size=((1, 5), (5, 1)), recurrent_block_padding=((0, 2), (2, 0)),
        flow_head_hidden_size=256 // d, use_mask_predictor=True,
    )


class RaftFlow(nn.Module):
    """Flow between consecutive frames of windows.

    Input ``B x (L + 1) x 3 x H x W`` float in [0, 255]; output ``B x L x 2 x H' x W'`` flow in
    pixels (``H' x W'`` = padded size unless ``unpad``).
    """

    def __init__(self, cfg: RaftFlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.raft = build_raft(cfg)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, l1, c, h, w = frames.shape
        x, (left, right, top, bottom) = pad_to_multiple(scale_to_pm1(frames.reshape(b * l1, c, h, w)), 8)
        x = x.reshape(b, l1, c, *x.shape[-2:])
        img1 = x[:, :-1].reshape(-1, c, *x.shape[-2:])  # B*L x 3 x H' x W'
        img2 = x[:, 1:].reshape(-1, c, *x.shape[-2:])
        flow = self.raft(img1, img2, num_flow_updates=self.cfg.num_flow_updates)[-1]  # B*L x 2 x H' x W'
        if self.cfg.unpad:
            flow = flow[..., top:flow.shape[-2] - bottom, left:flow.shape[-1] - right]
        return flow.reshape(b, l1 - 1, 2, *flow.shape[-2:])
