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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

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
    # imported here: torchvision's package import costs ~1.5 s of start-up (its ops import
    # torch._dynamo), paid only by the streams that build RAFT
    from torchvision.models.optical_flow import raft as tv_raft

    if cfg.width_divisor == 1:
        return tv_raft.raft_large(weights=None, progress=False)
    d = cfg.width_divisor
    enc = tuple(max(c // d, 4) for c in (64, 64, 96, 128, 256))
    hidden = enc[-1] // 2
    return tv_raft._raft(
        weights=None,
        progress=False,
        feature_encoder_layers=enc,
        feature_encoder_block=tv_raft.ResidualBlock,
        feature_encoder_norm_layer=nn.InstanceNorm2d,
        context_encoder_layers=enc,
        context_encoder_block=tv_raft.ResidualBlock,
        context_encoder_norm_layer=nn.BatchNorm2d,
        corr_block_num_levels=4,
        corr_block_radius=4,
        motion_encoder_corr_layers=(256 // d, 192 // d),
        motion_encoder_flow_layers=(128 // d, 64 // d),
        motion_encoder_out_channels=hidden,
        recurrent_block_hidden_state_size=hidden,
        recurrent_block_kernel_size=((1, 5), (5, 1)),
        recurrent_block_padding=((0, 2), (2, 0)),
        flow_head_hidden_size=256 // d,
        use_mask_predictor=True,
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
        """Every pair of every window in one RAFT call."""
        b, l1 = frames.shape[:2]
        flow = self.flow(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1))  # B*L x 2 x H' x W'
        return flow.reshape(b, l1 - 1, *flow.shape[1:])

    def flow(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``N x 3 x H x W`` [0, 255] frame pairs -> ``N x 2 x H' x W'`` flow from ``first`` to ``second``."""
        n = first.shape[0]
        x, (left, right, top, bottom) = pad_to_multiple(scale_to_pm1(torch.cat([first, second])), 8)
        flow = self.raft(x[:n], x[n:], num_flow_updates=self.cfg.num_flow_updates)[-1]
        if self.cfg.unpad:
            flow = flow[..., top : flow.shape[-2] - bottom, left : flow.shape[-1] - right]
        return flow

    def pair_flows(self, frames: torch.Tensor, pairs: torch.Tensor, *, pair_batch: int) -> torch.Tensor:
        """Flow of selected pairs, ``pair_batch`` pairs per RAFT call.

        Args:
            frames: ``B x (L + 1) x 3 x H x W`` float in [0, 255].
            pairs: ``P x 2`` long ``(window, t)``: the pair is frames ``t`` and ``t + 1`` of that window.
            pair_batch: pairs per call; every call has exactly this many (the last one is padded
                with copies of its last pair, whose flows are dropped), so on the CPU a pair's
                flow does not depend on which pairs share its call. ``0``: all pairs in one call.

        Returns ``P x 2 x H' x W'``.
        """
        n = int(pairs.shape[0])
        step = pair_batch if pair_batch > 0 else n
        out = []
        for a in range(0, n, step):
            sel = pairs[a : a + step]
            k = int(sel.shape[0])
            if k < step:
                sel = torch.cat([sel, sel[-1:].expand(step - k, 2)])
            w, t = sel[:, 0], sel[:, 1]
            out.append(self.flow(frames[w, t], frames[w, t + 1])[:k])
        return torch.cat(out)


def distinct_pairs(windows: torch.Tensor, shifts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct consecutive-frame pairs of a batch of overlapping windows.

    Windows of one video cut every ``stride`` frames share ``window - stride`` frame pairs with
    the window before them (I3D's 24/8 plan: 16 of 24), and a window repeated as padding shares
    all of them. Window ``i`` reuses window ``i - 1``'s pairs when its first frames equal that
    window's frames from ``s`` on, for the first ``s`` in ``shifts`` that matches (compared
    exactly, pixel for pixel, on the device: windows of different videos never match).

    Args:
        windows: ``B x (L + 1) x ...`` frames (any dtype; uint8 before any conversion is cheapest).
        shifts: frame offsets to try, e.g. ``(stride, 0)``.

    Returns:
        ``pairs`` ``P x 2`` long ``(window, t)`` of each distinct pair (frames ``t``, ``t + 1``), and
        ``index`` ``B x L`` long: pair ``t`` of window ``b`` is ``pairs[index[b, t]]``.
    """
    b, l1 = windows.shape[:2]
    length = l1 - 1
    index = torch.empty(b, length, dtype=torch.long)
    pairs: list[tuple[int, int]] = []
    for i in range(b):
        start = 0
        if i > 0:
            for s in shifts:
                if 0 <= s < l1 and torch.equal(windows[i, : l1 - s], windows[i - 1, s:]):
                    index[i, : length - s] = index[i - 1, s:]
                    start = length - s
                    break
        for t in range(start, length):
            index[i, t] = len(pairs)
            pairs.append((i, t))
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2), index
