"""UnAV baseline (Geng et al., CVPR 2023): unimodal encoders -> cross-modal pyramid -> TDM -> heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from avel.models.dense.base import DenseDetector, DenseDetectorConfig
from avel.models.encoders import EncoderConfig, UnimodalEncoder
from avel.models.necks import CrossModalPyramid, PyramidConfig
from avel.models.tdm import TdmConfig, TemporalDependencyModule

if TYPE_CHECKING:
    from avel.models.dense.ccnet import CcnetConfig


@dataclass
class UnavConfig(DenseDetectorConfig):
    """UnAV configuration (defaults: the public UnAV config; max_seq_len 256 as in LoCo).

    Attributes:
        encoder: :class:`EncoderConfig` shared by both modalities (separate weights).
        pyramid: :class:`PyramidConfig` (6 levels, CMI on, no TCG).
        tdm: :class:`TdmConfig`.
        use_tdm: apply temporal dependency modelling (UnAV ``use_dependency``).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pyramid: PyramidConfig = field(default_factory=PyramidConfig)
    tdm: TdmConfig = field(default_factory=TdmConfig)
    use_tdm: bool = True


def unav_trunk(cfg: UnavConfig | CcnetConfig) -> tuple[UnimodalEncoder, UnimodalEncoder, CrossModalPyramid]:
    """The visual encoder, the audio encoder and the cross-modal pyramid of UnAV (also CCNet's), built
    in that order.

    Raises:
        ValueError: ``pyramid.num_levels`` differs from the number of ``assigner.regression_ranges``.
    """
    if cfg.pyramid.num_levels != len(cfg.assigner.regression_ranges):
        raise ValueError(
            f"pyramid.num_levels {cfg.pyramid.num_levels} != "
            f"{len(cfg.assigner.regression_ranges)} assigner.regression_ranges"
        )
    visual = UnimodalEncoder(in_dim=cfg.visual_dim, max_seq_len=cfg.max_seq_len, cfg=cfg.encoder)
    audio = UnimodalEncoder(in_dim=cfg.audio_dim, max_seq_len=cfg.max_seq_len, cfg=cfg.encoder)
    return visual, audio, CrossModalPyramid(dim=cfg.encoder.embed_dim, cfg=cfg.pyramid)


class UnavDetector(DenseDetector):
    """UnAV dense audio-visual event detector (class-aware regression, DIoU, Soft-NMS).

    Args:
        cfg: :class:`UnavConfig`.
    """

    def __init__(self, cfg: UnavConfig) -> None:
        D = cfg.encoder.embed_dim
        super().__init__(cfg, feat_dim=2 * D)
        self.visual_encoder, self.audio_encoder, self.pyramid = unav_trunk(cfg)
        self.tdm = (
            TemporalDependencyModule(in_dim=2 * D, num_classes=cfg.num_classes, cfg=cfg.tdm) if cfg.use_tdm else None
        )

    def features(self, visual: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor):
        v = self.visual_encoder(visual, mask)
        a = self.audio_encoder(audio, mask)
        feats, masks = self.pyramid(v, a, mask)
        if self.tdm is not None:
            feats = self.tdm(feats, masks)
        return feats, masks
