"""Inference for dense detectors: decode, per-class Soft-NMS, grid -> seconds. Pure torch, no extension.

Mirrors UnAV's inference: per level keep scores > ``pre_nms_thresh`` and the top
``pre_nms_topk``, decode ``t -+ offset * stride``, drop segments no longer than
``duration_thresh`` grid rows, run Gaussian Soft-NMS per class (``w = exp(-iou^2 / sigma)``,
drop below ``min_score``, keep ``max_seg_num`` per class) and keep ``max_seg_num`` per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PostprocessConfig:
    """Inference options (UnAV config values).

    Attributes:
        pre_nms_thresh: keep (row, class) scores strictly above this.
        pre_nms_topk: per level, keep at most this many candidates.
        duration_thresh: drop decoded segments of length <= this (grid rows).
        nms_method: "soft" (Gaussian), "linear", "hard" or "none".
        nms_sigma: Gaussian Soft-NMS sigma (weight ``exp(-iou^2 / sigma)``).
        iou_threshold: IoU threshold of "hard" and "linear" NMS (unused by "soft").
        min_score: candidates decayed below this are discarded.
        max_seg_num: kept per class after NMS and per video at the end.
        multiclass: run NMS per class (True) or class-agnostic.
    """

    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    duration_thresh: float = 0.05
    nms_method: str = "soft"
    nms_sigma: float = 0.4
    iou_threshold: float = 0.7
    min_score: float = 0.001
    max_seg_num: int = 100
    multiclass: bool = True

    def __post_init__(self) -> None:
        if self.nms_method not in ("soft", "linear", "hard", "none"):
            raise ValueError(f"postprocess.nms_method must be soft|linear|hard|none, got {self.nms_method!r}")


def soft_nms_1d(
    segs: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: str = "soft",
    sigma: float = 0.4,
    iou_threshold: float = 0.7,
    min_score: float = 0.001,
    max_per_group: int = 100,
    multiclass: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft-NMS on 1-D segments, all classes at once (one padded row per class).

    Each step picks the highest current score in every class row, then decays the rest of the
    row by its IoU with the pick (IoU uses lengths ``end - start + 1e-6`` like the reference
    kernel). Candidates below ``min_score`` (initially or after decay) are dropped; a row stops
    after ``max_per_group`` picks. Ties pick the lowest index.

    Args:
        segs: ``N x 2`` [start, end]; scores: ``N``; labels: ``N`` class ids.
        method: "soft" (Gaussian), "linear" (``1 - iou`` above ``iou_threshold``) or "hard".
        sigma, iou_threshold, min_score, max_per_group: see :class:`PostprocessConfig`.
        multiclass: suppress only within a class; False treats all as one group.

    Returns:
        Kept ``segs``, decayed ``scores`` and ``labels``, sorted by score descending.
    """
    keep0 = scores >= min_score
    segs, scores, labels = segs[keep0].float(), scores[keep0].float(), labels[keep0]
    if segs.shape[0] == 0:
        return segs.new_zeros(0, 2), scores.new_zeros(0), labels.new_zeros(0)
    group = labels if multiclass else torch.zeros_like(labels)
    uniq, inverse = torch.unique(group, return_inverse=True)
    K = uniq.numel()
    counts = torch.bincount(inverse, minlength=K)
    M = int(counts.max())
    # slot of every candidate inside its group row
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(inverse)
    slot[order] = torch.arange(inverse.numel(), device=segs.device) - starts[inverse[order]]
    x1 = segs.new_zeros(K, M)
    x2 = segs.new_zeros(K, M)
    sc = segs.new_zeros(K, M)
    idx = torch.full((K, M), -1, dtype=torch.long, device=segs.device)
    alive = torch.zeros(K, M, dtype=torch.bool, device=segs.device)
    x1[inverse, slot], x2[inverse, slot], sc[inverse, slot] = segs[:, 0], segs[:, 1], scores
    idx[inverse, slot] = torch.arange(segs.shape[0], device=segs.device)
    alive[inverse, slot] = True
    area = x2 - x1 + 1e-6
    rows = torch.arange(K, device=segs.device)
    picked_idx, picked_score = [], []
    for _ in range(min(max_per_group, M)):
        active = alive.any(1)
        if not bool(active.any()):
            break
        best = torch.where(alive, sc, torch.full_like(sc, -1.0)).argmax(1)  # K
        r = rows[active]
        b = best[active]
        picked_idx.append(idx[r, b])
        picked_score.append(sc[r, b])
        alive[r, b] = False
        bx1, bx2, barea = x1[r, b][:, None], x2[r, b][:, None], area[r, b][:, None]
        inter = (torch.minimum(bx2, x2[r]) - torch.maximum(bx1, x1[r])).clamp(min=0)
        iou = inter / (barea + area[r] - inter)
        if method == "soft":
            w = torch.exp(-(iou * iou) / sigma)
        elif method == "linear":
            w = torch.where(iou >= iou_threshold, 1 - iou, torch.ones_like(iou))
        elif method == "hard":
            w = (iou < iou_threshold).to(iou.dtype)
        else:
            raise ValueError(f"unknown NMS method {method!r}")
        sc[r] = sc[r] * w
        alive[r] = alive[r] & (sc[r] >= min_score)
    kept = torch.cat(picked_idx)
    kept_scores = torch.cat(picked_score)
    srt = torch.argsort(kept_scores, descending=True, stable=True)
    kept, kept_scores = kept[srt], kept_scores[srt]
    return segs[kept], kept_scores, labels[kept]


def decode_video(
    cls_logits: list[torch.Tensor],
    offsets: list[torch.Tensor],
    masks: list[torch.Tensor],
    strides: list[int],
    cfg: PostprocessConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates of one video in grid units before NMS.

    Args:
        cls_logits: per level ``T_l x C``.
        offsets: per level ``T_l x C x 2`` (class-aware) or ``T_l x 2``, in stride units.
        masks: per level ``T_l`` bool.
        strides: per level stride; point ``i`` of level ``l`` sits at grid ``i * strides[l]``.
        cfg: :class:`PostprocessConfig`.

    Returns:
        ``segs N x 2`` (grid), ``scores N``, ``labels N``.
    """
    all_segs, all_scores, all_labels = [], [], []
    for logits, off, mask, stride in zip(cls_logits, offsets, masks, strides):
        C = logits.shape[-1]
        prob = (torch.sigmoid(logits.float()) * mask[:, None]).flatten()  # T_l*C
        cand = torch.nonzero(prob > cfg.pre_nms_thresh, as_tuple=True)[0]
        cand_prob = prob[cand]
        k = min(cfg.pre_nms_topk, cand.numel())
        cand_prob, order = cand_prob.sort(descending=True)
        cand_prob, cand = cand_prob[:k], cand[order[:k]]
        pt = torch.div(cand, C, rounding_mode="floor")
        cls = cand % C
        o = off.float().reshape(-1, 2)[cand] if off.dim() == 3 else off.float()[pt]  # k x 2
        t = pt.to(torch.float32) * stride
        segs = torch.stack([t - o[:, 0] * stride, t + o[:, 1] * stride], -1)
        keep = (segs[:, 1] - segs[:, 0]) > cfg.duration_thresh
        all_segs.append(segs[keep])
        all_scores.append(cand_prob[keep])
        all_labels.append(cls[keep])
    return torch.cat(all_segs), torch.cat(all_scores), torch.cat(all_labels)


def grid_to_seconds(segs: torch.Tensor, *, step_s: float, window_s: float, duration_s: float) -> torch.Tensor:
    """Grid rows -> seconds: ``t_s = g * step_s + 0.5 * window_s`` clamped to ``[0, duration_s]``."""
    return (segs * step_s + 0.5 * window_s).clamp(min=0.0, max=duration_s)


@torch.no_grad()
def postprocess_batch(
    cls_logits: list[torch.Tensor],
    offsets: list[torch.Tensor],
    masks: list[torch.Tensor],
    strides: list[int],
    batch: dict,
    cfg: PostprocessConfig,
) -> list[list[tuple[float, float, int, float]]]:
    """Detections per sample as ``(start_s, end_s, label_id, score)`` sorted by score.

    Level tensors carry the batch axis first (``B x T_l x ...``); the batch supplies
    ``step_s``, ``window_s`` and ``durations_s`` (``B`` each) for the grid -> seconds map.
    """
    results = []
    for b in range(cls_logits[0].shape[0]):
        segs, scores, labels = decode_video(
            [x[b] for x in cls_logits], [x[b] for x in offsets], [x[b] for x in masks], strides, cfg
        )
        segs, scores, labels = segs.cpu(), scores.cpu(), labels.cpu()
        if cfg.nms_method != "none":
            segs, scores, labels = soft_nms_1d(
                segs,
                scores,
                labels,
                method=cfg.nms_method,
                sigma=cfg.nms_sigma,
                iou_threshold=cfg.iou_threshold,
                min_score=cfg.min_score,
                max_per_group=cfg.max_seg_num,
                multiclass=cfg.multiclass,
            )
        else:
            order = scores.argsort(descending=True)
            segs, scores, labels = segs[order], scores[order], labels[order]
        segs, scores, labels = segs[: cfg.max_seg_num], scores[: cfg.max_seg_num], labels[: cfg.max_seg_num]
        segs_s = grid_to_seconds(
            segs,
            step_s=float(batch["step_s"][b]),
            window_s=float(batch["window_s"][b]),
            duration_s=float(batch["durations_s"][b]),
        )
        results.append(
            [
                (float(s), float(e), int(c), float(p))
                for (s, e), c, p in zip(segs_s.tolist(), labels.tolist(), scores.tolist())
            ]
        )
    return results
