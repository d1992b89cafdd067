"""CCNet (Zhou et al., AAAI 2025): CMCC pyramid (cross-modal interaction + temporal consistency
gates) -> MTGC (coarse-to-fine + TDM, fine-to-coarse) -> UnAV heads, losses and post-processing.

Differences from the public code, on purpose: sequence lengths come from ``max_seq_len`` (the
code fixes 256) and nothing is tied to a CUDA device; the TDM masks padded rows per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from avel.models.blocks import MaskedConv1D, TransformerBlock
from avel.models.dense.base import DenseDetector, DenseDetectorConfig
from avel.models.dense.unav import unav_trunk
from avel.models.encoders import EncoderConfig
from avel.models.necks import PyramidConfig
from avel.models.tdm import TdmConfig, TemporalDependencyModule


@dataclass
class CmccPyramidConfig(PyramidConfig):
    """:class:`PyramidConfig` with CCNet's defaults (CMI and TCG on), so partial YAML overrides
    keep the gates."""

    temporal_consistency_gate: bool = True


@dataclass
class MtgcConfig:
    """Multi-temporal granularity collaboration options (ablations of CCNet tables 2 and 4).

    Attributes:
        c2f: coarse-to-fine block: ``U^k = ReLU(Linear_time(Z^{k+1}))`` (``T_{k+1} -> T_k``),
            ``G^k = MHA(q=U^k, kv=Z^k)`` with the residual from ``Z^k``; one block shared by levels.
        f2c: fine-to-coarse block: ``O^m = G^m + MHA(q=G^m, kv=MaxPool(O^{m-1}))`` (with the pooled
            residual inside the block, as in the code); one block per level.
        order: "c2f_f2c" (paper) or "f2c_c2f" (table 4). For "f2c_c2f" we apply F2C to the
            CMCC outputs, then C2F to its outputs, then the TDM (the paper does not say where
            the TDM goes in that variant).
        c2f_num_heads: heads of the C2F attention (code: 4).
        f2c_num_heads: heads of the F2C attention (code: 1).
        pool_kernel: F2C max-pool kernel (stride 2, padding kernel // 2).
        path_pdrop: drop-path rate of the C2F / F2C / channel-attention blocks (code: 0.1).
        channel_attention: the public code's extra expansion branch inside the TDM (not in the
            paper): conv to ``tdm.class_dim`` channels, a transformer over those channels with
            width ``T_l``, a Linear ``T_l -> T_l * C``, added to the TDM expansion. On by
            default to match the released model.
    """

    c2f: bool = True
    f2c: bool = True
    order: str = "c2f_f2c"
    c2f_num_heads: int = 4
    f2c_num_heads: int = 1
    pool_kernel: int = 3
    path_pdrop: float = 0.1
    channel_attention: bool = True

    def __post_init__(self) -> None:
        if self.order not in ("c2f_f2c", "f2c_c2f"):
            raise ValueError(f"mtgc.order must be 'c2f_f2c' or 'f2c_c2f', got {self.order!r}")


@dataclass
class CcnetConfig(DenseDetectorConfig):
    """CCNet configuration (defaults: public CCNet config, max_seq_len 256).

    Attributes:
        encoder: unimodal encoders (2 convs + 2 self-attention blocks, abs PE).
        pyramid: CMCC pyramid; ``cross_modal_interaction`` / ``temporal_consistency_gate`` are
            the CMI / TCG switches of table 3.
        tdm: temporal dependency modelling inside MTGC.
        use_tdm: keep the TDM (the "CMCC only" row of table 2 keeps it: MTGC replaces nothing else).
        mtgc: :class:`MtgcConfig` (C2F / F2C switches of table 2, order of table 4).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pyramid: CmccPyramidConfig = field(default_factory=CmccPyramidConfig)
    tdm: TdmConfig = field(default_factory=TdmConfig)
    use_tdm: bool = True
    mtgc: MtgcConfig = field(default_factory=MtgcConfig)


class ChannelAttentionExpansion(nn.Module):
    """The public code's channel-attention branch for one TDM expansion (see ``MtgcConfig``).

    ``B x D x T_l`` -> ``B x C x H x T_l``. The final reshape reinterprets the
    ``B x H x (T_l * C)`` Linear output as ``B x C x H x T_l`` exactly as the code's ``view`` does.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        class_dim: int,
        num_classes: int,
        level_lengths: list[int],
        kernel_size: int,
        path_pdrop: float,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_dim = class_dim
        self.press = MaskedConv1D(in_dim, class_dim, kernel_size, bias=False)
        self.channel_blocks = nn.ModuleList(
            TransformerBlock(t, 1, hidden_dim=class_dim, path_pdrop=path_pdrop) for t in level_lengths
        )
        time_linears = [nn.Linear(t, t * num_classes) for t in level_lengths]
        for lin in time_linears:
            nn.init.zeros_(lin.bias)
        self.time_linears = nn.ModuleList(time_linears)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, level: int) -> torch.Tensor:
        B, _, T = x.shape
        h, _ = self.press(x, mask)
        h = F.relu(h).transpose(1, 2)  # B x T x H: H channel tokens of width T
        ones = torch.ones(B, 1, self.class_dim, dtype=torch.bool, device=x.device)
        h, _ = self.channel_blocks[level](h, h, ones)
        h = h.transpose(1, 2).reshape(B * self.class_dim, T)
        h = F.relu(self.time_linears[level](h))  # BH x T*C
        return h.reshape(B, self.num_classes, self.class_dim, T)


class MTGC(nn.Module):
    """Multi-temporal granularity collaboration over a pyramid ``L x [B x D x T_l]``.

    Args:
        dim: D (2 x modality width).
        num_classes: C (for the TDM).
        level_lengths: ``T_l`` of every level (fixed: the C2F Linear maps time axes).
        cfg: :class:`MtgcConfig`.
        tdm_cfg: :class:`TdmConfig`, or None to skip the TDM.
    """

    def __init__(
        self, *, dim: int, num_classes: int, level_lengths: list[int], cfg: MtgcConfig, tdm_cfg: TdmConfig | None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.level_lengths = list(level_lengths)
        L = len(level_lengths)
        path_pdrop = cfg.path_pdrop
        self.tdm = TemporalDependencyModule(in_dim=dim, num_classes=num_classes, cfg=tdm_cfg) if tdm_cfg else None
        if cfg.c2f:
            c2f_linears = [nn.Linear(level_lengths[k + 1], level_lengths[k]) for k in range(L - 1)]
            for lin in c2f_linears:
                nn.init.zeros_(lin.bias)
            self.c2f_linears = nn.ModuleList(c2f_linears)
            self.c2f_block = TransformerBlock(dim, cfg.c2f_num_heads, path_pdrop=path_pdrop)
        if cfg.f2c:
            self.f2c_pool = nn.MaxPool1d(cfg.pool_kernel, stride=2, padding=cfg.pool_kernel // 2)
            self.f2c_blocks = nn.ModuleList(
                TransformerBlock(dim, cfg.f2c_num_heads, path_pdrop=path_pdrop) for _ in range(L - 1)
            )
        self.channel_att = None
        if cfg.channel_attention and tdm_cfg is not None:
            self.channel_att = ChannelAttentionExpansion(
                in_dim=dim,
                class_dim=tdm_cfg.class_dim,
                num_classes=num_classes,
                level_lengths=level_lengths,
                kernel_size=tdm_cfg.kernel_size,
                path_pdrop=path_pdrop,
            )

    def coarse_to_fine(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for k, (z, m) in enumerate(zip(feats, masks)):
            if k < len(feats) - 1:
                coarse = feats[k + 1]  # B x D x T_{k+1}
                u = F.relu(self.c2f_linears[k](coarse))  # B x D x T_k (Linear over time)
                z, _ = self.c2f_block(z, u, m)
            out.append(z)
        return out

    def fine_to_coarse(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [feats[0]]
        running = feats[0]
        for m in range(1, len(feats)):
            y, _ = self.f2c_blocks[m - 1](self.f2c_pool(running), feats[m], masks[m])
            running = feats[m] + y
            out.append(running)
        return out

    def dependency(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.tdm is None:
            return feats
        out = []
        for level, (x, m) in enumerate(zip(feats, masks)):
            e = self.tdm.expand_level(x, m)  # B x C x H x T_l
            if self.channel_att is not None:
                e = e + self.channel_att(x, m, level)
            out.append(self.tdm.mix_level(e, m))
        return out

    def forward(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        lengths = [x.shape[-1] for x in feats]
        if lengths != self.level_lengths:
            raise ValueError(f"MTGC built for level lengths {self.level_lengths}, got {lengths}")
        if self.cfg.order == "c2f_f2c":
            if self.cfg.c2f:
                feats = self.coarse_to_fine(feats, masks)
            feats = self.dependency(feats, masks)
            if self.cfg.f2c:
                feats = self.fine_to_coarse(feats, masks)
            return feats
        if self.cfg.f2c:
            feats = self.fine_to_coarse(feats, masks)
        if self.cfg.c2f:
            feats = self.coarse_to_fine(feats, masks)
        return self.dependency(feats, masks)


class CcnetDetector(DenseDetector):
    """CCNet dense audio-visual event detector.

    Args:
        cfg: :class:`CcnetConfig`. Inputs are padded to ``max_seq_len``; longer inputs are
            rejected because the C2F / channel-attention Linears act on fixed time axes.
    """

    def __init__(self, cfg: CcnetConfig) -> None:
        D = cfg.encoder.embed_dim
        super().__init__(cfg, feat_dim=2 * D)
        self.visual_encoder, self.audio_encoder, self.pyramid = unav_trunk(cfg)
        lengths = [cfg.max_seq_len // s for s in self.strides]
        self.mtgc = MTGC(
            dim=2 * D,
            num_classes=cfg.num_classes,
            level_lengths=lengths,
            cfg=cfg.mtgc,
            tdm_cfg=cfg.tdm if cfg.use_tdm else None,
        )

    def padded_length(self, T: int) -> int:
        if T > self.cfg.max_seq_len:
            raise ValueError(
                f"CCNet takes at most max_seq_len={self.cfg.max_seq_len} rows, got {T}: "
                "crop the input or rebuild the model with a larger max_seq_len"
            )
        return self.cfg.max_seq_len

    def features(self, visual: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor):
        v = self.visual_encoder(visual, mask)
        a = self.audio_encoder(audio, mask)
        feats, masks = self.pyramid(v, a, mask)
        return self.mtgc(feats, masks), masks
