"""DenseDetector: the shared skeleton of anchor-free dense audio-visual event detectors.

Structure (each piece replaceable by a subclass): ``features()`` (encoders -> neck/pyramid ->
optional refinement, implemented by the subclass) -> :class:`ClassificationHead` /
:class:`RegressionHead` -> label assignment + focal / IoU losses -> post-processing.

Model protocol used by the trainer::

    outputs = model(batch)                 # dict of per-level tensors
    losses = model.losses(outputs, batch)  # {"total": scalar, "cls": ..., "reg": ..., ...}
    preds = model.predict(outputs, batch)  # per sample [(start_s, end_s, label_id, score), ...]

Batch keys (``avel.datasets.torch_dataset.DenseFeatureDataset.collate``): ``visual`` B x T x Dv,
``audio`` B x T x Da, ``mask`` B x T (True = valid), ``segments`` list of N_i x 2 (grid units),
``labels`` list of N_i, ``durations_s`` / ``step_s`` / ``window_s`` (B).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from avel.models.heads import ClassificationHead, HeadConfig, RegressionHead
from avel.models.label_assignment import AssignerConfig, assign_targets, make_points
from avel.models.losses import REG_LOSSES, EmaNormalizer, LossConfig, sigmoid_focal_loss
from avel.models.postprocess import PostprocessConfig, postprocess_batch


@dataclass
class DenseDetectorConfig:
    """Fields every dense detector shares. The four data-dependent ones have no default: the
    trainer fills them from the store manifest, the annotations and the data config.

    Attributes:
        visual_dim: visual feature dim (store manifest), e.g. 2048 for I3D rgb+flow.
        audio_dim: audio feature dim (store manifest), e.g. 128 for VGGish.
        num_classes: C (annotations).
        max_seq_len: training sequence length T; must be divisible by the largest stride.
        head: :class:`HeadConfig`.
        assigner: :class:`AssignerConfig` (its regression_ranges fix the number of levels).
        loss: :class:`LossConfig`.
        postprocess: :class:`PostprocessConfig`.
    """

    visual_dim: int
    audio_dim: int
    num_classes: int
    max_seq_len: int
    head: HeadConfig = field(default_factory=HeadConfig)
    assigner: AssignerConfig = field(default_factory=AssignerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


def _require(batch: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"batch is missing key(s) {missing}; got keys {sorted(batch)}")


class DenseDetector(nn.Module):
    """Base class. Subclasses build their trunk and implement :meth:`features`.

    Args:
        cfg: :class:`DenseDetectorConfig` (or a subclass of it).
        feat_dim: channels of the pyramid features fed to the heads.
    """

    def __init__(self, cfg: DenseDetectorConfig, *, feat_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.strides = cfg.assigner.strides
        if cfg.max_seq_len % self.strides[-1] != 0:
            raise ValueError(
                f"max_seq_len {cfg.max_seq_len} must be divisible by the largest stride {self.strides[-1]}"
            )
        if cfg.head.class_aware != cfg.assigner.class_aware:
            raise ValueError("head.class_aware and assigner.class_aware must agree")
        self.cls_head = ClassificationHead(in_dim=feat_dim, num_classes=cfg.num_classes, cfg=cfg.head)
        self.reg_head = RegressionHead(
            in_dim=feat_dim, num_classes=cfg.num_classes, num_levels=len(self.strides), cfg=cfg.head
        )
        self.loss_normalizer = EmaNormalizer(init_value=cfg.loss.init_loss_norm, momentum=cfg.loss.loss_norm_momentum)

    # -- to implement ------------------------------------------------------------------------
    def features(
        self, visual: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``visual B x Dv x T``, ``audio B x Da x T``, ``mask B x 1 x T`` -> per-level
        ``B x feat_dim x T_l`` features and ``B x 1 x T_l`` masks (``T_l = T / stride_l``).

        May return a third item, a dict of extra tensors (e.g. encoder features for an auxiliary
        loss); it is merged into the outputs of :meth:`forward` for :meth:`extra_losses`."""
        raise NotImplementedError

    def extra_losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Additional weighted loss terms added to ``total`` (e.g. LoCo's correspondence loss)."""
        return {}

    # -- shared -------------------------------------------------------------------------------
    def padded_length(self, T: int) -> int:
        """Length the input is zero-padded to: max_seq_len, or (eval only) the next multiple of
        the largest stride above it."""
        if T <= self.cfg.max_seq_len:
            return self.cfg.max_seq_len
        if self.training:
            raise ValueError(f"training sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}")
        s = self.strides[-1]
        return (T + s - 1) // s * s

    def forward(self, batch: dict) -> dict:
        _require(batch, "visual", "audio", "mask")
        visual, audio, mask = batch["visual"], batch["audio"], batch["mask"]
        if visual.shape[:2] != audio.shape[:2] or visual.shape[:2] != mask.shape:
            raise ValueError(
                f"visual {tuple(visual.shape)}, audio {tuple(audio.shape)} and mask {tuple(mask.shape)} "
                "must share B x T"
            )
        for name, x, dim in (("visual", visual, self.cfg.visual_dim), ("audio", audio, self.cfg.audio_dim)):
            if x.shape[-1] != dim:
                raise ValueError(f"batch['{name}'] has feature dim {x.shape[-1]}, model expects {dim}")
        T = visual.shape[1]
        pad = self.padded_length(T) - T
        # B x T x D -> B x D x T, zero padded
        visual = F.pad(visual.transpose(1, 2), (0, pad))
        audio = F.pad(audio.transpose(1, 2), (0, pad))
        mask = F.pad(mask.bool(), (0, pad), value=False)[:, None]  # B x 1 x T'
        visual = visual * mask.to(visual.dtype)
        audio = audio * mask.to(audio.dtype)
        result = self.features(visual, audio, mask)
        feats, masks = result[0], result[1]
        extras: dict[str, torch.Tensor] = result[2] if len(result) > 2 else {}
        if len(feats) != len(self.strides):
            raise RuntimeError(
                f"{type(self).__name__}.features returned {len(feats)} levels, expected {len(self.strides)}"
            )
        return {
            "cls_logits": self.cls_head(feats, masks),  # L x [B x T_l x C]
            "offsets": self.reg_head(feats, masks),  # L x [B x T_l x C x 2] (class-aware)
            "masks": [m[:, 0] for m in masks],  # L x [B x T_l]
            "feats": feats,
            **extras,
        }

    def targets(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked targets ``B x P x C`` and ``B x P x C x 2`` (or ``B x P x 2``), P = sum T_l."""
        _require(batch, "segments", "labels")
        lengths = [m.shape[1] for m in outputs["masks"]]
        device = outputs["masks"][0].device
        points = make_points(lengths, self.cfg.assigner, device=device)
        cls_t, reg_t = [], []
        for segs, labels in zip(batch["segments"], batch["labels"]):
            c, r = assign_targets(
                points,
                segs.to(device).float(),
                labels.to(device),
                num_classes=self.cfg.num_classes,
                cfg=self.cfg.assigner,
            )
            cls_t.append(c)
            reg_t.append(r)
        return torch.stack(cls_t), torch.stack(reg_t)

    def losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Focal + IoU losses normalised by the EMA of #positive points (updated in train mode)."""
        lc = self.cfg.loss
        gt_cls, gt_reg = self.targets(outputs, batch)
        valid = torch.cat(outputs["masks"], dim=1)  # B x P
        logits = torch.cat(outputs["cls_logits"], dim=1)  # B x P x C
        offsets = torch.cat(outputs["offsets"], dim=1)  # B x P x C x 2 | B x P x 2
        pos = (gt_cls.sum(-1) > 0) & valid  # B x P
        num_pos = int(pos.sum())
        norm = (
            self.loss_normalizer.update(num_pos, batch_size=valid.shape[0]) if self.training else self.loss_normalizer()
        )
        target = gt_cls[valid]
        if lc.label_smoothing > 0:
            target = target * (1 - lc.label_smoothing) + lc.label_smoothing / (self.cfg.num_classes + 1)
        cls_loss = (
            sigmoid_focal_loss(logits[valid], target, alpha=lc.focal_alpha, gamma=lc.focal_gamma, reduction="sum")
            / norm
        )
        if self.cfg.head.class_aware:
            sel = pos[..., None] & (gt_cls > 0)  # B x P x C: positive (point, class) pairs
            pred_r, gt_r = offsets[sel], gt_reg[sel]
        else:
            pred_r, gt_r = offsets[pos], gt_reg[pos]
        if pred_r.shape[0] == 0:
            reg_loss = offsets.sum() * 0.0
        else:
            reg_loss = REG_LOSSES[lc.reg_loss](pred_r, gt_r, reduction="sum") / norm
        weight = lc.reg_weight if lc.reg_weight > 0 else cls_loss.detach() / max(float(reg_loss), 0.01)
        out = {"cls": cls_loss, "reg": reg_loss}
        total = cls_loss + weight * reg_loss
        for name, value in self.extra_losses(outputs, batch).items():
            out[name] = value
            total = total + value
        out["total"] = total
        return out

    @torch.no_grad()
    def predict(self, outputs: dict, batch: dict) -> list[list[tuple[float, float, int, float]]]:
        """Per sample detections ``(start_s, end_s, label_id, score)`` after Soft-NMS."""
        _require(batch, "step_s", "window_s", "durations_s")
        return postprocess_batch(
            outputs["cls_logits"], outputs["offsets"], outputs["masks"], self.strides, batch, self.cfg.postprocess
        )

    def example_batch(self, *, batch_size: int = 1, seq_len: int | None = None) -> dict:
        """A random batch following the dense data contract (all rows valid, no segments)."""
        T = seq_len or self.cfg.max_seq_len
        device = next(self.parameters()).device
        return {
            "sample_ids": [f"s{i}" for i in range(batch_size)],
            "video_ids": [f"v{i}" for i in range(batch_size)],
            "visual": torch.randn(batch_size, T, self.cfg.visual_dim, device=device),
            "audio": torch.randn(batch_size, T, self.cfg.audio_dim, device=device),
            "mask": torch.ones(batch_size, T, dtype=torch.bool, device=device),
            "segments": [torch.zeros(0, 2, device=device) for _ in range(batch_size)],
            "labels": [torch.zeros(0, dtype=torch.long, device=device) for _ in range(batch_size)],
            "durations_s": torch.full((batch_size,), T * 0.32, device=device),
            "step_s": torch.full((batch_size,), 0.32, device=device),
            "window_s": torch.full((batch_size,), 0.96, device=device),
        }
