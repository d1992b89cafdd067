"""Dense event localization mAP: the ActivityNet / UnAV detection protocol, vectorized in numpy.

Protocol (ActivityNet ``Evaluation/eval_detection.py`` as adapted by UnAV ``libs/utils/metrics.py``):

* Ground truth: per video, segments ``(start_s, end_s, label_id)``. Within a video, a segment whose
  label equals, and whose start and end lie within ``duplicate_tol_s`` (1e-3 s) of, an earlier
  *kept* segment is dropped (UnAV ``remove_duplicate_annotations``; ActivityNet keeps duplicates:
  pass ``duplicate_tol_s=None``).
* Classes entering the mean: exactly the classes with at least one ground-truth segment in the
  evaluated videos. A class with ground truth but no prediction has AP 0 and counts in the mean;
  predictions of a class without ground truth are ignored (reported in
  :attr:`DetectionResult.num_predictions_ignored`).
* Per class, predictions are ranked by score, descending. For each prediction in rank order and for
  each tIoU threshold independently, the ground-truth segments of the same video and class are tried
  in descending tIoU: the first one that is not yet matched at that threshold and whose tIoU is
  ``>= threshold`` (a tIoU exactly at the threshold matches) becomes matched and the prediction is a
  true positive; otherwise the prediction is a false positive. Predictions in a video without ground
  truth of their class (including videos with no ground truth at all, e.g. outside ``subset``) are
  false positives.
* AP per class and threshold: precision/recall over the ranked list (recall denominator = number
  of deduplicated ground-truth segments of the class), VOC 2011 all-points interpolation: recall
  padded to ``[0, r, 1]``, precision to ``[0, p, 0]``, precision made monotone non-increasing from
  the right, AP = sum over recall steps of step width x interpolated precision.
* mAP per threshold = mean AP over the evaluated classes; average mAP = mean over thresholds.

Ties (choices, deterministic where the reference is not):

* Equal scores: the references sort with ``scores.argsort()[::-1]`` (numpy's default, unstable
  quicksort: the order among equal scores is implementation-defined; for 16 or fewer predictions
  it is reversed input order). Here the ranking is a *stable* descending sort
  (``argsort(-score, kind="stable")``): equal scores keep their input order (video order of
  ``predictions``, then row order). Results are identical to the reference whenever scores are
  distinct.
* Equal tIoU of one prediction with several ground-truth segments: the segment listed later (higher
  index in the video's deduplicated ground truth of that class) is tried first, which is what the
  reference's ``tiou.argsort()[::-1]`` does for the small per-video candidate lists.
* A zero-length prediction and a zero-length ground-truth segment at the same place have union 0;
  their tIoU is defined as 0 here (the reference computes NaN and, by accident of its comparison,
  counts a match).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_TIOU_THRESHOLDS = np.linspace(0.1, 0.9, 9)


class DetectionInputError(ValueError):
    """Ground truth or predictions are malformed; the message names the video and row."""


@dataclass
class DetectionResult:
    """Outcome of :func:`evaluate_detection`.

    Attributes:
        tiou_thresholds: ``K`` thresholds, in the order given.
        map_per_threshold: ``K`` mAP values (fractions in [0, 1], not percent).
        average_map: mean of ``map_per_threshold``.
        class_ids: ``C`` evaluated class ids (classes with ground truth), ascending.
        ap: ``C x K`` average precision per evaluated class and threshold.
        num_gt: ``C`` deduplicated ground-truth segments per evaluated class.
        num_predictions: ``C`` predictions per evaluated class.
        num_videos: videos with ground truth that were evaluated.
        num_gt_total: deduplicated ground-truth segments over all evaluated classes.
        num_gt_duplicates: ground-truth segments dropped as duplicates.
        num_predictions_total: predictions read (all videos, all classes).
        num_predictions_ignored: predictions of classes without ground truth (not scored).
        num_predictions_no_gt_video: predictions in videos without any ground truth (false positives).
        extra: free-form annotations added by callers (not filled here).
    """

    tiou_thresholds: np.ndarray
    map_per_threshold: np.ndarray
    average_map: float
    class_ids: np.ndarray
    ap: np.ndarray
    num_gt: np.ndarray
    num_predictions: np.ndarray
    num_videos: int
    num_gt_total: int
    num_gt_duplicates: int
    num_predictions_total: int
    num_predictions_ignored: int
    num_predictions_no_gt_video: int
    extra: dict = field(default_factory=dict)

    def map_at(self, tiou: float) -> float:
        """mAP at threshold ``tiou`` (must be one of :attr:`tiou_thresholds`, to 1e-9)."""
        hit = np.flatnonzero(np.abs(self.tiou_thresholds - tiou) < 1e-9)
        if hit.size == 0:
            raise KeyError(f"tIoU {tiou} was not evaluated; thresholds are {self.tiou_thresholds.tolist()}")
        return float(self.map_per_threshold[hit[0]])

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready summary: mAP per threshold (keys ``"mAP@0.50"``), average, per-class APs, counts.

        Args:
            class_names: optional ``classes[label_id]`` list used to name the per-class rows.
        """
        per_class = []
        for row, cid in enumerate(self.class_ids.tolist()):
            entry: dict[str, Any] = {"label_id": int(cid)}
            if class_names is not None:
                entry["label"] = class_names[cid]
            entry.update(
                {
                    "num_gt": int(self.num_gt[row]),
                    "num_predictions": int(self.num_predictions[row]),
                    "ap": [float(x) for x in self.ap[row]],
                    "average_ap": float(self.ap[row].mean()) if self.ap.shape[1] else 0.0,
                }
            )
            per_class.append(entry)
        out: dict[str, Any] = {f"mAP@{t:.2f}": float(m) for t, m in zip(self.tiou_thresholds, self.map_per_threshold)}
        out.update(
            {
                "average_mAP": float(self.average_map),
                "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
                "num_classes": int(self.class_ids.size),
                "num_videos": self.num_videos,
                "num_gt": self.num_gt_total,
                "num_gt_duplicates": self.num_gt_duplicates,
                "num_predictions": self.num_predictions_total,
                "num_predictions_ignored": self.num_predictions_ignored,
                "num_predictions_no_gt_video": self.num_predictions_no_gt_video,
                "per_class": per_class,
            }
        )
        return out

    def format_summary(self) -> str:
        """Human-readable mAP table (percent), one line per threshold plus the average."""
        lines = [f"tIoU {t:.2f}: mAP {100 * m:6.2f}" for t, m in zip(self.tiou_thresholds, self.map_per_threshold)]
        lines.append(
            f"average mAP: {100 * self.average_map:.2f} over {self.class_ids.size} classes, "
            f"{self.num_videos} videos, {self.num_gt_total} ground-truth segments, "
            f"{self.num_predictions_total} predictions"
        )
        return "\n".join(lines)

    def format_per_class(self, class_names: Sequence[str] | None = None) -> str:
        """Per-class AP table (percent): id, name, #gt, #pred, AP per threshold, mean."""
        head = (
            "  id  "
            + f"{'class':<28}"
            + "   #gt  #pred "
            + " ".join(f"{t:5.2f}" for t in self.tiou_thresholds)
            + "   avg"
        )
        rows = [head]
        for r, cid in enumerate(self.class_ids.tolist()):
            name = class_names[cid] if class_names is not None else ""
            aps = " ".join(f"{100 * a:5.1f}" for a in self.ap[r])
            rows.append(
                f"{cid:4d}  {name[:28]:<28} {int(self.num_gt[r]):5d} {int(self.num_predictions[r]):6d} "
                f"{aps} {100 * self.ap[r].mean():5.1f}"
            )
        return "\n".join(rows)


def segment_tiou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Temporal IoU between every prediction and every ground-truth segment.

    Args:
        pred: ``P x 2`` ``[start, end]``.
        gt: ``G x 2`` ``[start, end]``.

    Returns:
        ``P x G`` tIoU; 0 where the union is 0.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    inter = (np.minimum(pred[:, None, 1], gt[None, :, 1]) - np.maximum(pred[:, None, 0], gt[None, :, 0])).clip(0)
    union = (pred[:, None, 1] - pred[:, None, 0]) + (gt[None, :, 1] - gt[None, :, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 all-points interpolated AP of one ranked list.

    Args:
        precision: ``N`` precision after each ranked prediction.
        recall: ``N`` recall after each ranked prediction (non-decreasing).
    """
    mprec = np.concatenate(([0.0], precision, [0.0]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _rows(table: Any, *, width: int, video_id: str, what: str) -> np.ndarray:
    """``table`` (rows of ``width`` numbers) as an ``N x width`` float64 array, checked."""
    try:
        arr = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DetectionInputError(f"{what} of video {video_id!r}: expected rows of {width} numbers ({exc})") from None
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim != 2 or arr.shape[1] != width:
        raise DetectionInputError(f"{what} of video {video_id!r}: expected an N x {width} table, got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DetectionInputError(f"{what} of video {video_id!r}, row {int(np.flatnonzero(bad)[0])}: non-finite value")
    neg = arr[:, 1] < arr[:, 0]
    if neg.any():
        r = int(np.flatnonzero(neg)[0])
        raise DetectionInputError(f"{what} of video {video_id!r}, row {r}: end {arr[r, 1]} < start {arr[r, 0]}")
    lab = arr[:, 2]
    if (lab != np.round(lab)).any() or (lab < 0).any():
        r = int(np.flatnonzero((lab != np.round(lab)) | (lab < 0))[0])
        raise DetectionInputError(
            f"{what} of video {video_id!r}, row {r}: label_id {lab[r]} is not a non-negative integer"
        )
    return arr


def _dedup(gt: np.ndarray, tol: float) -> np.ndarray:
    """Keep-mask of one video's ``G x 3`` ground truth: drop rows duplicating an earlier kept row."""
    keep = np.ones(len(gt), dtype=bool)
    for i in range(1, len(gt)):
        prev = gt[:i][keep[:i]]
        dup = (np.abs(prev[:, 0] - gt[i, 0]) <= tol) & (np.abs(prev[:, 1] - gt[i, 1]) <= tol) & (prev[:, 2] == gt[i, 2])
        keep[i] = not dup.any()
    return keep


def _flatten(
    tables: Mapping[str, Any], video_ids: Sequence[str], *, width: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of every video in ``video_ids`` stacked: (``N x width`` float64, ``N`` video index).

    Checked in bulk; on a problem the video's table is re-checked alone by :func:`_rows`, whose
    error names the video and row.
    """
    arrays = []
    for vid in video_ids:
        try:
            arr = np.asarray(tables[vid], dtype=np.float64)
        except (TypeError, ValueError):
            arr = _rows(tables[vid], width=width, video_id=vid, what=what)
        if arr.size == 0:
            arr = np.zeros((0, width))
        elif arr.ndim != 2 or arr.shape[1] != width:
            arr = _rows(tables[vid], width=width, video_id=vid, what=what)
        arrays.append(arr)
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    rows = np.concatenate(arrays) if arrays else np.zeros((0, width))
    vidx = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    lab = rows[:, 2]
    bad = (~np.isfinite(rows).all(axis=1)) | (rows[:, 1] < rows[:, 0]) | (lab != np.round(lab)) | (lab < 0)
    if bad.any():
        vid = video_ids[int(vidx[np.flatnonzero(bad)[0]])]
        _rows(tables[vid], width=width, video_id=vid, what=what)  # raises, naming the row
    return rows, vidx


def _dedup_all(gt: np.ndarray, gt_v: np.ndarray, tol: float) -> np.ndarray:
    """Keep-mask over all videos' ground truth (:func:`_dedup` per video, run only where needed).

    A duplicate pair has the same (video, label) and starts within ``tol``; sorted by (video, label,
    start), such a pair is joined by a chain of neighbours with start steps <= ``tol``, so videos
    without such a neighbour pair have no duplicate and skip the per-video loop.
    """
    keep = np.ones(len(gt), dtype=bool)
    if len(gt) < 2:
        return keep
    order = np.lexsort((gt[:, 0], gt[:, 2], gt_v))
    g, v = gt[order], gt_v[order]
    near = (v[1:] == v[:-1]) & (g[1:, 2] == g[:-1, 2]) & (np.abs(g[1:, 0] - g[:-1, 0]) <= tol)
    for video in np.unique(v[1:][near]):
        rows = np.flatnonzero(gt_v == video)
        keep[rows] = _dedup(gt[rows], tol)
    return keep


def _group_steps(keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal ``keys`` in input order (``keys`` need not be sorted)."""
    n = len(keys)
    by_group = np.argsort(keys, kind="stable")  # groups contiguous, input order kept inside
    gk = keys[by_group]
    starts = np.r_[0, np.flatnonzero(np.diff(gk) != 0) + 1] if n else np.zeros(0, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    first[starts] = starts
    first = np.maximum.accumulate(first) if n else first
    steps = np.empty(n, dtype=np.int64)
    steps[by_group] = np.arange(n) - first
    return steps


def _match(gt: np.ndarray, gt_key: np.ndarray, pr: np.ndarray, pr_key: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """True positives (``K x P`` bool) of ranked predictions against ground truth of the same key.

    Args:
        gt: ``G x 3`` ground truth; ``gt_key``: ``G`` (video, class) key of each row.
        pr: ``P x 4`` predictions in rank order (class, then score descending); ``pr_key``: ``P`` keys.
        thr: ``K`` tIoU thresholds.
    """
    K, P = len(thr), len(pr)
    tp = np.zeros((K, P), dtype=bool)
    gt_sort = np.argsort(gt_key, kind="stable")  # keeps within-group GT order
    keys_sorted = gt_key[gt_sort]
    lo = np.searchsorted(keys_sorted, pr_key, side="left")
    n_cand = np.searchsorted(keys_sorted, pr_key, side="right") - lo
    live = np.flatnonzero(n_cand > 0)  # Q predictions with candidates; the others are false positives
    if live.size == 0:
        return tp
    lo, n_cand, box = lo[live], n_cand[live], pr[live, :2]
    G = int(n_cand.max())
    slot = np.arange(G)
    valid = slot[None, :] < n_cand[:, None]  # Q x G
    cand = gt_sort[np.minimum(lo[:, None] + slot[None, :], len(gt_sort) - 1)]  # Q x G global GT index
    g0, g1 = gt[cand, 0], gt[cand, 1]
    inter = (np.minimum(box[:, 1:2], g1) - np.maximum(box[:, 0:1], g0)).clip(0)
    union = (box[:, 1:2] - box[:, 0:1]) + (g1 - g0) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        tiou = np.where(valid & (union > 0), inter / np.where(union > 0, union, 1.0), 0.0)
    tiou[~valid] = -np.inf
    # candidates in descending tIoU, ties: later ground truth first (stable sort of the reversed row)
    rank = G - 1 - np.argsort(-tiou[:, ::-1], axis=1, kind="stable")
    cand = np.take_along_axis(cand, rank, axis=1)
    tiou = np.take_along_axis(tiou, rank, axis=1)
    cand[tiou == -np.inf] = len(gt)  # padding: a sink column of `locked`
    # step r matches the r-th ranked prediction of every (video, class) group at once: groups never
    # share ground truth, so a step has no conflicts, and rank order within a group is kept
    steps = _group_steps(pr_key[live])
    order = np.argsort(steps, kind="stable")
    bounds = np.searchsorted(steps[order], np.arange(int(steps.max()) + 2))
    locked = np.zeros((K, len(gt) + 1), dtype=bool)
    above = tiou[None, :, :] >= thr[:, None, None]  # K x Q x G
    for r in range(len(bounds) - 1):
        sel = order[bounds[r] : bounds[r + 1]]
        c = cand[sel]  # S x G
        ok = above[:, sel] & ~locked[:, c]  # K x S x G
        j = ok.argmax(axis=2)  # K x S: first free candidate above the threshold
        hit = np.take_along_axis(ok, j[:, :, None], axis=2)[:, :, 0]
        tp[:, live[sel]] = hit
        kk, ss = np.nonzero(hit)
        locked[kk, c[ss, j[kk, ss]]] = True
    return tp


def _average_precision(tp: np.ndarray, cls_row: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
    """``K x C`` interpolated AP from ``K x P`` true positives grouped by class row (``P`` ascending)."""
    K, C = tp.shape[0], len(num_gt)
    ap = np.zeros((K, C))
    bounds = np.searchsorted(cls_row, np.arange(C + 1))
    for row in range(C):
        a, b = bounds[row], bounds[row + 1]
        if a == b:
            continue
        tp_cum = np.cumsum(tp[:, a:b], axis=1, dtype=np.float64)  # K x Pc
        fp_cum = np.cumsum(~tp[:, a:b], axis=1, dtype=np.float64)
        recall = tp_cum / float(num_gt[row])
        precision = tp_cum / (tp_cum + fp_cum)
        for k in range(K):
            ap[k, row] = interpolated_ap(precision[k], recall[k])
    return ap


def _thresholds(tiou_thresholds: Iterable[float]) -> np.ndarray:
    """The ``K`` tIoU thresholds as float64; empty or non-finite ones are a ``ValueError``."""
    thr = np.asarray(list(tiou_thresholds), dtype=np.float64).reshape(-1)  # K
    if thr.size == 0 or not np.isfinite(thr).all():
        raise ValueError(f"tiou_thresholds must be a non-empty list of finite numbers, got {thr.tolist()}")
    return thr


def _ground_truth_table(
    ground_truth: Mapping[str, Any], videos: list[str], duplicate_tol_s: float | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat ground truth of ``videos``: segments ``G x 3``, video index ``G`` (position in
    ``videos``), and how many duplicates were dropped (none when ``duplicate_tol_s`` is None)."""
    gt, gt_v = _flatten(ground_truth, videos, width=3, what="ground truth")  # G x 3, G
    if duplicate_tol_s is None:
        return gt, gt_v, 0
    keep = _dedup_all(gt, gt_v, duplicate_tol_s)
    return gt[keep], gt_v[keep], int((~keep).sum())


def _prediction_table(predictions: Mapping[str, Any], gt_videos: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat predictions: rows ``P x 4``, video index ``P`` (a ground-truth video keeps its index
    in ``gt_videos``; videos unknown to the ground truth get fresh indices after them), and the
    size of the video index space (a spare index past the last keeps it non-empty)."""
    video_index = {v: i for i, v in enumerate(gt_videos)}
    pr_videos = list(predictions)
    pr, pr_row_video = _flatten(predictions, pr_videos, width=4, what="predictions")  # P x 4, P
    n_known = len(gt_videos)
    extra = np.cumsum([v not in video_index for v in pr_videos], dtype=np.int64)
    video_of = np.array([video_index.get(v, n_known - 1 + int(e)) for v, e in zip(pr_videos, extra)], dtype=np.int64)
    pr_v = video_of[pr_row_video] if len(pr_videos) else np.zeros(0, dtype=np.int64)
    return pr, pr_v, n_known + int(extra[-1] if len(extra) else 0) + 1


def _check_labels(num_classes: int | None, *, gt_c: np.ndarray, pr_c: np.ndarray) -> None:
    """A label_id ``>= num_classes`` (when given) is a :class:`DetectionInputError`."""
    if num_classes is None:
        return
    for name, labels in (("ground truth", gt_c), ("predictions", pr_c)):
        if labels.size and labels.max() >= num_classes:
            raise DetectionInputError(f"{name}: label_id {int(labels.max())} >= num_classes {num_classes}")


def _rank(pr: np.ndarray, pr_v: np.ndarray, pr_c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions (rows, video index, class) ordered by class, then score descending (stable:
    ties keep input order)."""
    order = np.lexsort((-pr[:, 3], pr_c))
    return pr[order], pr_v[order], pr_c[order]


def _class_tables(
    tp: np.ndarray, class_ids: np.ndarray, *, gt_c: np.ndarray, pr_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluated class: ground-truth count ``C``, prediction count ``C`` and AP ``K x C``
    from the true-positive table ``tp`` (``K x P``, predictions ranked by :func:`_rank`)."""
    C = class_ids.size
    num_gt = np.bincount(np.searchsorted(class_ids, gt_c), minlength=C) if C else np.zeros(0, int)
    cls_row = np.searchsorted(class_ids, pr_c)
    num_pred = np.bincount(cls_row, minlength=C) if C else np.zeros(0, int)
    return num_gt, num_pred, _average_precision(tp, cls_row, num_gt)


def evaluate_detection(
    ground_truth: Mapping[str, Any],
    predictions: Mapping[str, Any],
    *,
    tiou_thresholds: Iterable[float] = DEFAULT_TIOU_THRESHOLDS,
    subset: Iterable[str] | None = None,
    num_classes: int | None = None,
    duplicate_tol_s: float | None = 1e-3,
) -> DetectionResult:
    """Dense localization mAP (ActivityNet / UnAV protocol; see the module docstring).

    Args:
        ground_truth: ``{video_id: rows (start_s, end_s, label_id)}``; an array ``G x 3`` or a list of
            triples per video. Videos may have no rows.
        predictions: ``{video_id: rows (start_s, end_s, label_id, score)}``; ``P x 4`` per video. Every
            prediction is scored, including those of videos absent from (or outside ``subset`` of)
            ``ground_truth``, which are false positives, as in the reference.
        tiou_thresholds: the ``K`` tIoU thresholds; default ``linspace(0.1, 0.9, 9)`` (UnAV-100).
        subset: optional video ids; only their ground truth is evaluated (e.g. the test split).
        num_classes: optional number of classes; a label_id ``>= num_classes`` is then an error.
        duplicate_tol_s: tolerance (seconds) for dropping duplicate ground truth of the same label;
            ``None`` keeps every segment (original ActivityNet behaviour).

    Returns:
        :class:`DetectionResult`.
    """
    thr = _thresholds(tiou_thresholds)  # K
    if isinstance(subset, str):
        raise TypeError("subset must be a collection of video ids, not a string")
    keep_videos = None if subset is None else set(subset)
    gt_videos = [v for v in ground_truth if keep_videos is None or v in keep_videos]
    gt, gt_v, n_dup = _ground_truth_table(ground_truth, gt_videos, duplicate_tol_s)  # G x 3, G
    pr, pr_v, n_vid_all = _prediction_table(predictions, gt_videos)  # P x 4, P
    gt_c, pr_c = gt[:, 2].astype(np.int64), pr[:, 2].astype(np.int64)
    _check_labels(num_classes, gt_c=gt_c, pr_c=pr_c)
    has_gt = np.zeros(n_vid_all, dtype=bool)
    has_gt[gt_v] = True

    class_ids = np.unique(gt_c)  # C evaluated classes
    scored = np.isin(pr_c, class_ids)
    ranked, ranked_v, ranked_c = _rank(pr[scored], pr_v[scored], pr_c[scored])
    tp = _match(gt, gt_c * n_vid_all + gt_v, ranked, ranked_c * n_vid_all + ranked_v, thr)  # K x P
    num_gt, num_pred, ap_kc = _class_tables(tp, class_ids, gt_c=gt_c, pr_c=ranked_c)  # C, C, K x C
    # mean over classes of the K x C table row by row, as the reference sums (bit-identical means)
    map_per_threshold = ap_kc.mean(axis=1) if class_ids.size else np.zeros(thr.size)
    return DetectionResult(
        tiou_thresholds=thr,
        map_per_threshold=map_per_threshold,
        average_map=float(map_per_threshold.mean()),
        class_ids=class_ids,
        ap=np.ascontiguousarray(ap_kc.T),
        num_gt=num_gt,
        num_predictions=num_pred,
        num_videos=int(len(np.unique(gt_v))),
        num_gt_total=int(len(gt)),
        num_gt_duplicates=n_dup,
        num_predictions_total=int(len(pr)),
        num_predictions_ignored=int((~scored).sum()),
        num_predictions_no_gt_video=int((~has_gt[pr_v]).sum()),
    )
