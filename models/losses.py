"""Dense detection losses: sigmoid focal loss, 1-D DIoU / GIoU on centre offsets, EMA normaliser."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> torch.Tensor:
    """RetinaNet focal loss on logits (Lin et al. 2017), computed in float32.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)``; ``alpha < 0`` disables the alpha weighting.
    """
    logits, targets = logits.float(), targets.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _offset_terms(pred: torch.Tensor, target: torch.Tensor, eps: float):
    pred, target = pred.float(), target.float()
    if (pred < 0).any() or (target < 0).any():
        raise ValueError("1-D IoU losses need non-negative (left, right) offsets")
    lp, rp = pred[..., 0], pred[..., 1]
    lg, rg = target[..., 0], target[..., 1]
    inter = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = (lp + rp) + (lg + rg) - inter
    iou = inter / union.clamp(min=eps)
    enclose = torch.maximum(lp, lg) + torch.maximum(rp, rg)
    return lp, rp, lg, rg, iou, enclose


def diou_loss_1d(
    pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "none", eps: float = 1e-8
) -> torch.Tensor:
    """Distance-IoU loss for segments given as offsets ``(left, right)`` from a shared point.

    ``1 - IoU + (centre distance / enclosing length)^2``; inputs ``... x 2``, non-negative.
    """
    lp, rp, lg, rg, iou, enclose = _offset_terms(pred, target, eps)
    rho = 0.5 * (rp - lp - rg + lg)
    return _reduce(1.0 - iou + (rho / enclose.clamp(min=eps)) ** 2, reduction)


def giou_loss_1d(
    pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "none", eps: float = 1e-8
) -> torch.Tensor:
    """Generalized-IoU loss ``1 - IoU + (enclosing - union) / enclosing`` on 1-D offsets."""
    lp, rp, lg, rg, iou, enclose = _offset_terms(pred, target, eps)
    inter = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = (lp + rp) + (lg + rg) - inter
    return _reduce(1.0 - iou + (enclose - union) / enclose.clamp(min=eps), reduction)


class EmaNormalizer(nn.Module):
    """Exponential moving average of the number of positive points (loss normaliser).

    ``n <- momentum * n + (1 - momentum) * max(num_pos, 1)``; kept as a buffer so checkpoints
    restore it.

    Under data-parallel training (torch.distributed initialized, world size > 1) ``update``
    all-reduces the counts, so the EMA follows the positives of the GLOBAL batch exactly as in
    single-process training, and returns it times this rank's share of the global batch: a
    rank's ``loss_sum / normaliser`` is then a mean over its local samples, which the trainer's
    gradient averaging turns into the single-process ``global_loss_sum / n``. Every rank must
    then call ``update`` once per step.

    Args:
        init_value: initial value (UnAV/ActionFormer: 250).
        momentum: EMA momentum (0.9).
    """

    value: torch.Tensor  # float64 scalar buffer

    def __init__(self, *, init_value: float = 250.0, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("value", torch.tensor(float(init_value), dtype=torch.float64))

    @torch.no_grad()
    def update(self, num_pos: int, *, batch_size: int | None = None) -> float:
        """Fold in a training batch's ``num_pos`` positives; returns the normaliser.

        Args:
            num_pos: positive points of this process's batch.
            batch_size: samples in this process's batch (data parallelism: its share of the
                global batch; None: an even split is assumed).
        """
        share = 1.0
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        ):
            world_size = torch.distributed.get_world_size()
            counts = torch.tensor(
                [float(num_pos), float(batch_size or 0)], dtype=torch.float64, device=self.value.device
            )
            torch.distributed.all_reduce(counts)
            num_pos = int(counts[0])
            share = batch_size / float(counts[1]) if batch_size else 1.0 / world_size
        self.value.mul_(self.momentum).add_((1 - self.momentum) * max(int(num_pos), 1))
        return float(self.value) * share

    def forward(self) -> float:
        return float(self.value)


@dataclass
class LossConfig:
    """Dense detection loss options.

    Attributes:
        focal_alpha: focal loss alpha (0.25).
        focal_gamma: focal loss gamma (2).
        reg_loss: "diou" (UnAV code, also used by CCNet's code) or "giou" (named in the CCNet paper).
        reg_weight: weight of the regression loss; <= 0 selects ActionFormer's automatic balancing
            ``cls_loss.detach() / max(reg_loss, 0.01)``. UnAV configs use 1.
        init_loss_norm: initial value of the EMA of #positives (250).
        loss_norm_momentum: its momentum (0.9).
        label_smoothing: ``target * (1 - eps) + eps / (C + 1)`` on classification targets (0).
    """

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    reg_loss: str = "diou"
    reg_weight: float = 1.0
    init_loss_norm: float = 250.0
    loss_norm_momentum: float = 0.9
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.reg_loss not in ("diou", "giou"):
            raise ValueError(f"loss.reg_loss must be 'diou' or 'giou', got {self.reg_loss!r}")


REG_LOSSES = {"diou": diou_loss_1d, "giou": giou_loss_1d}
