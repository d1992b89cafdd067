"""AGVA baseline (Tian et al., "Audio-visual event localization in unconstrained videos", ECCV'18).

Port of ``att_Net`` (``models.py`` fully supervised, ``models_weakly.py`` weakly supervised) of
YapengTian/AVE-ECCV18: audio-guided visual attention over the 49 regions, one Bi-LSTM per modality
(raw 128-d audio, attended 512-d visual), concatenation, ReLU, ``L1`` (-> 64), ReLU, ``L2`` (-> C).

* fully: per-segment softmax trained with ``MultiLabelSoftMarginLoss`` against one-hot labels,
  as in ``supervised_main.py`` (the reference applies the soft-margin loss to softmax outputs).
* weakly: per-segment scores max-pooled over time, softmax, ``MultiLabelSoftMarginLoss`` against
  video-level labels (``weak_supervised_main.py``); segments are predicted by the arg-max of the
  per-segment scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avel.models.ave.blocks import (
    AudioGuidedVisualAttention,
    AveModel,
    BiLstm,
    check_ave_batch,
    check_setting,
    resolved,
    segment_targets,
    weak_video_targets,
)


@dataclass
class AgvaConfig:
    """AGVA baseline configuration (defaults: AVE-ECCV18 code).

    Args:
        setting: ``"fully"`` or ``"weakly"``.
        visual_dim: region feature size (512, VGG-19 pool5); filled from the store.
        audio_dim: audio feature size (128, VGGish); filled from the store.
        num_classes: classes incl. background (29 on AVE).
        background_id: background class index (None: ``num_classes - 1``).
        num_regions: spatial regions (49 = 7 x 7).
        attention_dim: AGVA projection size (``hidden_size`` = 512).
        lstm_hidden: Bi-LSTM hidden size per direction (``hidden_dim`` = 128).
        classifier_hidden: width of ``L1`` (64).
        weak_targets: weak label construction, see :func:`weak_video_targets`.

    Training (Adam 1e-3, batch 64, 300 epochs fully / 250 weakly, x0.1 every 15,000 iterations)
    is not a model field: ``configs/ave/agva_{fully,weakly}.yaml`` hold it in their ``optim``
    section, the one place training reads it from.
    """

    setting: str = "fully"
    visual_dim: int = 512
    audio_dim: int = 128
    num_classes: int = 29
    background_id: int | None = None
    num_regions: int = 49
    attention_dim: int = 512
    lstm_hidden: int = 128
    classifier_hidden: int = 64
    weak_targets: str = "reference"

    def __post_init__(self) -> None:
        check_setting(self.setting, ("fully", "weakly"), "AGVA")
        if self.background_id is None:
            self.background_id = self.num_classes - 1


class AgvaNet(AveModel):
    """AGVA + Bi-LSTM + two-layer classifier (see module docstring).

    Args:
        config: :class:`AgvaConfig`.
    """

    config: AgvaConfig

    def __init__(self, config: AgvaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.attention = AudioGuidedVisualAttention(
            visual_dim=c.visual_dim, audio_dim=c.audio_dim, hidden_dim=c.attention_dim, num_regions=c.num_regions
        )
        self.lstm_audio = BiLstm(in_dim=c.audio_dim, hidden_dim=c.lstm_hidden)
        self.lstm_video = BiLstm(in_dim=c.visual_dim, hidden_dim=c.lstm_hidden)
        self.L1 = nn.Linear(4 * c.lstm_hidden, c.classifier_hidden)
        self.L2 = nn.Linear(c.classifier_hidden, c.num_classes)
        nn.init.xavier_uniform_(self.L1.weight)
        nn.init.xavier_uniform_(self.L2.weight)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``segment_scores`` ``B x T x C`` (pre-softmax), ``attention`` ``B x T x S``; weakly also
        ``video_scores`` ``B x C`` (max over time).

        Args:
            batch: AVE batch (``visual``, ``audio``; see :mod:`avel.models.ave.blocks`).
        """
        visual, audio = check_ave_batch(batch, visual_dim=self.config.visual_dim, audio_dim=self.config.audio_dim)
        attended, alpha, _ = self.attention(visual, audio)  # B x T x Dv, B x T x S
        fused = torch.cat([self.lstm_audio(audio), self.lstm_video(attended)], dim=-1)  # B x T x 4h
        scores = self.L2(F.relu(self.L1(F.relu(fused))))  # B x T x C
        out = {"segment_scores": scores, "attention": alpha}
        if self.config.setting == "weakly":
            out["video_scores"] = scores.max(dim=1).values  # B x C
        return out

    def losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"total", "classification"}``: soft-margin loss on softmax outputs (reference training).

        Args:
            outputs: :meth:`forward` outputs.
            batch: fully: ``segment_labels`` ``B x T``; weakly: ``video_labels`` ``B x C``.
        """
        c = self.config
        if c.setting == "fully":
            probs = torch.softmax(outputs["segment_scores"], dim=-1)  # B x T x C
            target = F.one_hot(segment_targets(batch, num_classes=c.num_classes), c.num_classes).float()
            loss = F.multilabel_soft_margin_loss(probs.flatten(0, 1), target.flatten(0, 1))
        else:
            probs = torch.softmax(outputs["video_scores"], dim=-1)  # B x C
            target = weak_video_targets(
                batch, background_id=resolved(c.background_id, "background_id"), mode=c.weak_targets
            )
            loss = F.multilabel_soft_margin_loss(probs, target)
        return {"total": loss, "classification": loss.detach()}

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """Segment class ids ``B x T`` (arg-max of the per-segment scores; ``batch`` unused)."""
        return self.predict_segments(outputs["segment_scores"])
