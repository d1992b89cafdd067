"""Audio-visual long-term correlation network (AVLC; Guo, Zhao, Gao, "Look longer to see better").

No public code exists; this follows the paper ("Look longer to see better: Audio-visual event
localization by exploiting long-term correlation"):

* TSGA (eqs. 1-6): ``V_fd = ReLU(W_vd mean_S(V))``, ``V_ft = ReLU(W_vt V_fd)`` (``d -> T``), the same for
  audio; ``T_m = softmax(V_ft + A_ft)`` (``T x T``) mixes the AGVA spatial maps ``S_map`` (``T x S``) of
  all segments: ``V_d = softmax_S(T_m S_map) V``.
* Bi-LSTM per modality (AGVA: hidden 128 per direction).
* PTRF (eqs. 7-13): ``C_at = ReLU(W_at A_in)``, ``C_vt = ReLU(W_vt V_in)`` (``c = 2 x`` event classes),
  ``C_vh = BN(tanh(W_ft C_vt))``, ``theta = softmax(C_at C_vh^T)``, gated ``theta * 1[theta >= eps]``;
  ``V_paf = W_vp V_in + theta W_ap A_in``, ``A_paf = W_ap A_in + theta^T V_paf``, ``F = V_paf + A_paf``.
* Classifier: two fully connected layers per segment (fully, cross-entropy); weakly: average pooling
  over time, softmax and BCE against video labels (following PSP / CMRAN).

Choices where the paper is silent (config fields): ``S_map`` are AGVA's pre-softmax scores (a
softmax of mixed probabilities would be nearly flat), TSGA hidden size 512 (AGVA's), classifier
hidden 64 (AGVA/PSP ``L1``), weakly threshold = per-video mean of ``C_at C_vt^T`` as written in
section IV-B (``"branch_product"``; ``"logits"`` uses the matrix fed to the softmax, ``C_at C_vh^T``),
epochs 300 (PSP). Without PTRF (table II rows 1 and 3) ``F = V_in + A_in``.
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
class AvlcConfig:
    """AVLC configuration (defaults: paper section IV-B; open details in the module docstring).

    Args:
        setting: ``"fully"`` or ``"weakly"``.
        visual_dim / audio_dim: input feature sizes (512 / 128); filled from the store.
        num_classes: classes incl. background ``C_cate`` (29 on AVE).
        background_id: background class index (None: ``num_classes - 1``).
        num_segments: ``T`` (10 on AVE); TSGA's ``W_vt, W_at`` map to it.
        num_regions: spatial regions ``S`` (49).
        spatial: ``"tsga"`` or ``"agva"`` (table II ablation).
        use_ptrf: False = table II rows without PTRF (``F = V_in + A_in``).
        attention_dim: AGVA projection size (512).
        tsga_hidden: TSGA hidden size ``d`` (eqs. 1, 3).
        smap_source: ``"scores"`` (pre-softmax AGVA maps) or ``"probs"`` (post-softmax).
        lstm_hidden: Bi-LSTM hidden per direction (128); ``d_in = 2 * lstm_hidden``.
        ptrf_channels: ``c`` (None: twice the event classes, ``2 * (num_classes - 1)``).
        threshold: ``"fixed"`` (``epsilon``) or ``"mean"`` (per-video mean rule); None = fixed for
            fully, mean for weakly (table III).
        epsilon: fixed threshold (0.0599, table III).
        mean_source: matrix averaged by the mean rule: ``"branch_product"`` (``C_at C_vt^T``) or ``"logits"``.
        dropout: dropout on PTRF's linear layers (0.2).
        classifier_hidden: hidden width of the two-layer classifier.
        weak_targets: weak label construction, see :func:`avel.models.ave.blocks.weak_video_targets`.

    Training (Adam 1e-3, batch 128, 300 epochs) is not a model field:
    ``configs/ave/avlc_{fully,weakly}.yaml`` hold it in their ``optim`` section, the one place
    training reads it from.
    """

    setting: str = "fully"
    visual_dim: int = 512
    audio_dim: int = 128
    num_classes: int = 29
    background_id: int | None = None
    num_segments: int = 10
    num_regions: int = 49
    spatial: str = "tsga"
    use_ptrf: bool = True
    attention_dim: int = 512
    tsga_hidden: int = 512
    smap_source: str = "scores"
    lstm_hidden: int = 128
    ptrf_channels: int | None = None
    threshold: str | None = None
    epsilon: float = 0.0599
    mean_source: str = "branch_product"
    dropout: float = 0.2
    classifier_hidden: int = 64
    weak_targets: str = "reference"

    def __post_init__(self) -> None:
        check_setting(self.setting, ("fully", "weakly"), "AVLC")
        if self.background_id is None:
            self.background_id = self.num_classes - 1
        if self.spatial not in ("tsga", "agva"):
            raise ValueError(f"AVLC spatial must be 'tsga' or 'agva', got {self.spatial!r}")
        if self.smap_source not in ("scores", "probs"):
            raise ValueError(f"AVLC smap_source must be 'scores' or 'probs', got {self.smap_source!r}")
        if self.threshold is None:
            self.threshold = "fixed" if self.setting == "fully" else "mean"
        if self.threshold not in ("fixed", "mean"):
            raise ValueError(f"AVLC threshold must be 'fixed' or 'mean', got {self.threshold!r}")
        if self.mean_source not in ("branch_product", "logits"):
            raise ValueError(f"AVLC mean_source must be 'branch_product' or 'logits', got {self.mean_source!r}")
        if self.ptrf_channels is None:
            self.ptrf_channels = 2 * (self.num_classes - 1)


class TimeSpatialGuidedAttention(nn.Module):
    """TSGA (eqs. 1-6): temporal selection over the AGVA attention maps of all segments.

    Args:
        visual_dim / audio_dim: input sizes.
        hidden_dim: ``d`` of ``W_vd, W_ad``.
        num_segments: ``T`` (output size of ``W_vt, W_at``).
        attention_dim / num_regions: AGVA parameters.
        smap_source: ``"scores"`` or ``"probs"`` (see :class:`AvlcConfig`).
    """

    def __init__(
        self,
        *,
        visual_dim: int,
        audio_dim: int,
        hidden_dim: int,
        num_segments: int,
        attention_dim: int,
        num_regions: int,
        smap_source: str = "scores",
    ) -> None:
        super().__init__()
        self.num_segments, self.smap_source = num_segments, smap_source
        self.agva = AudioGuidedVisualAttention(
            visual_dim=visual_dim, audio_dim=audio_dim, hidden_dim=attention_dim, num_regions=num_regions
        )
        self.w_vd, self.w_vt = nn.Linear(visual_dim, hidden_dim), nn.Linear(hidden_dim, num_segments)
        self.w_ad, self.w_at = nn.Linear(audio_dim, hidden_dim), nn.Linear(hidden_dim, num_segments)

    def temporal_weights(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``T_m`` (eq. 5): ``B x T x T``, rows sum to 1."""
        v_ft = F.relu(self.w_vt(F.relu(self.w_vd(visual.mean(dim=2)))))  # B x T x T
        a_ft = F.relu(self.w_at(F.relu(self.w_ad(audio))))  # B x T x T
        return torch.softmax(v_ft + a_ft, dim=-1)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(V_d B x T x Dv, final map B x T x S, T_m B x T x T)`` from ``B x T x S x Dv``, ``B x T x Da``."""
        if visual.shape[1] != self.num_segments:
            raise ValueError(f"TSGA built for T = {self.num_segments} segments, got {visual.shape[1]}")
        scores = self.agva.scores(visual, audio)  # B x T x S
        s_map = scores if self.smap_source == "scores" else torch.softmax(scores, dim=-1)
        t_m = self.temporal_weights(visual, audio)
        weights = torch.softmax(t_m @ s_map, dim=-1)  # B x T x S (eq. 6)
        return torch.einsum("bts,btsd->btd", weights, visual), weights, t_m


def ptrf_gate(theta: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """``theta * 1[theta >= threshold]``; ``threshold`` scalar or per-video ``B x 1 x 1``."""
    return theta * (theta >= threshold).to(theta.dtype)


class PositiveTimeResidualFusion(nn.Module):
    """PTRF (eqs. 7-13): thresholded temporal correlation and cross-modal residual fusion.

    Args:
        dim: ``d_in`` of ``V_in, A_in``.
        channels: ``c`` of the correlation branches.
        threshold: ``"fixed"`` or ``"mean"``.
        epsilon: fixed threshold.
        mean_source: ``"branch_product"`` or ``"logits"``.
        dropout: dropout on the linear layers.
    """

    def __init__(
        self, *, dim: int, channels: int, threshold: str, epsilon: float, mean_source: str, dropout: float
    ) -> None:
        super().__init__()
        self.threshold, self.epsilon, self.mean_source = threshold, epsilon, mean_source
        self.w_at, self.w_vt = nn.Linear(dim, channels), nn.Linear(dim, channels)
        self.w_ft = nn.Linear(channels, channels)
        self.bn = nn.BatchNorm1d(channels)
        self.w_vp, self.w_ap = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def correlation(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(theta before gating, logits C_at C_vh^T, C_at C_vt^T)``, each ``B x T x T``."""
        c_at = self.drop(F.relu(self.w_at(a)))  # B x T x c (eq. 7)
        c_vt = self.drop(F.relu(self.w_vt(v)))  # B x T x c (eq. 8)
        c_vh = self.bn(torch.tanh(self.drop(self.w_ft(c_vt))).transpose(1, 2)).transpose(1, 2)  # eq. 9
        logits = c_at @ c_vh.transpose(1, 2)
        return torch.softmax(logits, dim=-1), logits, c_at @ c_vt.transpose(1, 2)

    def threshold_value(self, logits: torch.Tensor, product: torch.Tensor) -> torch.Tensor | float:
        if self.threshold == "fixed":
            return self.epsilon
        source = product if self.mean_source == "branch_product" else logits
        return source.mean(dim=(1, 2), keepdim=True)  # B x 1 x 1

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(F_paf B x T x d, gated theta B x T x T)`` from ``V_in, A_in`` (``B x T x d``)."""
        theta, logits, product = self.correlation(v, a)
        theta = ptrf_gate(theta, self.threshold_value(logits, product))  # eq. 10 + gate
        a_p = self.drop(self.w_ap(a))
        v_paf = self.drop(self.w_vp(v)) + theta @ a_p  # eq. 11
        a_paf = a_p + theta.transpose(1, 2) @ v_paf  # eq. 12
        return v_paf + a_paf, theta  # eq. 13


class AvlcNet(AveModel):
    """AVLC (TSGA + Bi-LSTM + PTRF + localization classifier).

    Args:
        config: :class:`AvlcConfig`.
    """

    config: AvlcConfig

    def __init__(self, config: AvlcConfig) -> None:
        super().__init__()
        self.config = c = config
        self.spatial: TimeSpatialGuidedAttention | AudioGuidedVisualAttention
        if c.spatial == "tsga":
            self.spatial = TimeSpatialGuidedAttention(
                visual_dim=c.visual_dim,
                audio_dim=c.audio_dim,
                hidden_dim=c.tsga_hidden,
                num_segments=c.num_segments,
                attention_dim=c.attention_dim,
                num_regions=c.num_regions,
                smap_source=c.smap_source,
            )
        else:
            self.spatial = AudioGuidedVisualAttention(
                visual_dim=c.visual_dim, audio_dim=c.audio_dim, hidden_dim=c.attention_dim, num_regions=c.num_regions
            )
        self.lstm_v = BiLstm(in_dim=c.visual_dim, hidden_dim=c.lstm_hidden)
        self.lstm_a = BiLstm(in_dim=c.audio_dim, hidden_dim=c.lstm_hidden)
        d_in = 2 * c.lstm_hidden
        if c.use_ptrf:
            self.ptrf = PositiveTimeResidualFusion(
                dim=d_in,
                channels=resolved(c.ptrf_channels, "ptrf_channels"),
                threshold=resolved(c.threshold, "threshold"),
                epsilon=c.epsilon,
                mean_source=c.mean_source,
                dropout=c.dropout,
            )
        self.classifier = nn.Sequential(
            nn.Linear(d_in, c.classifier_hidden), nn.ReLU(), nn.Linear(c.classifier_hidden, c.num_classes)
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``segment_scores`` ``B x T x C``, ``attention`` ``B x T x S`` (final spatial weights),
        ``temporal_weights`` ``B x T x T`` (TSGA ``T_m``), ``correlation`` ``B x T x T`` (gated
        ``theta``); weakly also ``video_scores`` ``B x C`` (average over time).

        Args:
            batch: AVE batch (``visual``, ``audio``; see :mod:`avel.models.ave.blocks`).
        """
        c = self.config
        visual, audio = check_ave_batch(batch, visual_dim=c.visual_dim, audio_dim=c.audio_dim)
        out: dict[str, torch.Tensor] = {}
        if c.spatial == "tsga":
            attended, out["attention"], out["temporal_weights"] = self.spatial(visual, audio)
        else:
            attended, out["attention"], _ = self.spatial(visual, audio)
        v_in, a_in = self.lstm_v(attended), self.lstm_a(audio)  # B x T x d_in
        if c.use_ptrf:
            fused, out["correlation"] = self.ptrf(v_in, a_in)
        else:
            fused = v_in + a_in
        scores = self.classifier(fused)  # B x T x C
        out["segment_scores"] = scores
        if c.setting == "weakly":
            out["video_scores"] = scores.mean(dim=1)  # B x C (average pooling)
        return out

    def losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"total", "classification"}``: cross-entropy per segment (fully) or BCE between the
        softmax of the pooled scores and the normalized video labels (weakly).

        Args:
            outputs: :meth:`forward` outputs.
            batch: fully: ``segment_labels`` ``B x T``; weakly: ``video_labels`` ``B x C``.
        """
        c = self.config
        if c.setting == "fully":
            labels = segment_targets(batch, num_classes=c.num_classes)
            loss = F.cross_entropy(outputs["segment_scores"].flatten(0, 1), labels.flatten())
        else:
            target = weak_video_targets(
                batch, background_id=resolved(c.background_id, "background_id"), mode=c.weak_targets
            )
            target = target / target.sum(-1, keepdim=True).clamp(min=1.0)
            probs = torch.softmax(outputs["video_scores"], dim=-1)
            loss = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target)
        return {"total": loss, "classification": loss.detach()}

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """Segment class ids ``B x T`` (arg-max of the per-segment scores; ``batch`` unused)."""
        return self.predict_segments(outputs["segment_scores"])
