"""AVE metrics: segment accuracy (fully / weakly supervised) and cross-modal localization (CML).

Segment accuracy (AVE-ECCV18 ``compute_acc``, PSP, CMBS): the fraction of correctly classified
segments over all test videos x 10 segments, background counted as a class like any other. The
weakly supervised setting is evaluated the same way on per-segment predictions.

CML (AVE-ECCV18 ``cmm_test.py``): for each video of the match split, the event segments of one
modality (``seg``, ``l = len(seg)``) are the query. It is slid over the other modality's ``T``
segments: window ``n`` (``0 <= n <= T - l``) scores ``sum_i d(other[n + i], query[seg[i]])``; the
predicted window starts at the arg-min (first on ties) and the video counts as correct only if that
start equals ``seg[0]`` (i.e. the predicted window equals the ground-truth window exactly).
Videos whose event covers all ``T`` segments are excluded (nothing to localize), as are videos
without any event segment.

* A2V: visual localization from an audio query (audio segments are the query, slid over visual).
* V2A: audio localization from a visual query.

Distances are given as ``D[v, a]``: the distance between visual segment ``v`` and audio segment ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - defensive
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array") from exc


def segment_accuracy(predictions, labels) -> float:
    """Fraction of segments whose predicted class equals the label (background is a class).

    Args:
        predictions: integer class ids, ``N x T`` (array or tensor).
        labels: ground-truth class ids, same shape.
    """
    pred = _as_numpy(predictions, "predictions")
    gt = _as_numpy(labels, "labels")
    if pred.shape != gt.shape:
        raise ValueError(f"predictions shape {pred.shape} != labels shape {gt.shape}")
    if gt.size == 0:
        raise ValueError("segment_accuracy: no segments to evaluate")
    return float((pred == gt).mean())


def per_class_accuracy(predictions, labels, *, num_classes: int) -> np.ndarray:
    """Per-class segment accuracy (recall) ``num_classes``; NaN for classes absent from ``labels``."""
    pred = _as_numpy(predictions, "predictions").reshape(-1)
    gt = _as_numpy(labels, "labels").reshape(-1)
    if pred.shape != gt.shape:
        raise ValueError(f"predictions shape {pred.shape} != labels shape {gt.shape}")
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        sel = gt == c
        if sel.any():
            out[c] = float((pred[sel] == c).mean())
    return out


def event_mask_from_labels(segment_labels, *, background_id: int) -> np.ndarray:
    """Boolean ``N x T`` event mask (True = event segment) from segment class ids."""
    return _as_numpy(segment_labels, "segment_labels") != background_id


def cml_query_window(distances: np.ndarray, event_mask: np.ndarray, *, direction: str) -> int | None:
    """Predicted start of the query window in the searched modality for one video (None if excluded).

    Args:
        distances: ``T x T`` matrix ``D[v, a]`` (visual segment v, audio segment a).
        event_mask: ``T`` booleans, the event segments (the query).
        direction: ``"a2v"`` (audio query, searched over visual) or ``"v2a"`` (visual query, over audio).
    """
    d = np.asarray(distances, dtype=np.float64)
    mask = np.asarray(event_mask, dtype=bool)
    t = mask.shape[0]
    if d.shape != (t, t):
        raise ValueError(f"distances must be {t} x {t}, got {d.shape}")
    seg = np.flatnonzero(mask)
    length = len(seg)
    if length == 0 or length == t:
        return None
    if direction == "a2v":
        cost = d
    elif direction == "v2a":
        cost = d.T  # cost[a, v]
    else:
        raise ValueError(f"direction must be 'a2v' or 'v2a', got {direction!r}")
    scores = [sum(cost[n + i, seg[i]] for i in range(length)) for n in range(t - length + 1)]
    return int(np.argmin(np.asarray(scores)))


def cml_predict_starts(distances, event_masks) -> dict[str, np.ndarray]:
    """Predicted window starts per video and direction: ``{"a2v": N, "v2a": N}``, -1 for excluded videos.

    Args:
        distances: ``N x T x T`` distances ``D[v, a]``.
        event_masks: ``N x T`` booleans, the query (event) segments.
    """
    d = _as_numpy(distances, "distances")
    masks = _as_numpy(event_masks, "event_masks").astype(bool)
    if d.ndim != 3 or masks.shape != d.shape[:2]:
        raise ValueError(f"distances must be N x T x T and event_masks N x T, got {d.shape} and {masks.shape}")
    out = {}
    for direction in ("a2v", "v2a"):
        starts = [cml_query_window(dist, mask, direction=direction) for dist, mask in zip(d, masks)]
        out[direction] = np.array([-1 if s is None else s for s in starts], dtype=np.int64)
    return out


@dataclass(frozen=True)
class CmlResult:
    """CML accuracies.

    Attributes:
        a2v: exact-window accuracy, audio query localized in the visual track.
        v2a: exact-window accuracy, visual query localized in the audio track.
        average: mean of the two.
        num_videos: videos evaluated.
        num_excluded: videos skipped (full-length events or no event).
    """

    a2v: float
    v2a: float
    average: float
    num_videos: int
    num_excluded: int


def cml_accuracy(distances, event_masks) -> CmlResult:
    """A2V / V2A exact-match accuracy over videos.

    Args:
        distances: ``N x T x T`` distances ``D[v, a]`` per video (lower = better match).
        event_masks: ``N x T`` booleans (True = audio-visual event segment; ``labels_closs.h5``).
    """
    d = _as_numpy(distances, "distances").astype(np.float64)
    masks = _as_numpy(event_masks, "event_masks").astype(bool)
    if d.ndim != 3 or masks.ndim != 2 or d.shape[:2] != masks.shape or d.shape[1] != d.shape[2]:
        raise ValueError(f"distances must be N x T x T and event_masks N x T, got {d.shape} and {masks.shape}")
    correct = {"a2v": 0, "v2a": 0}
    evaluated = excluded = 0
    for dist, mask in zip(d, masks):
        start = int(np.flatnonzero(mask)[0]) if mask.any() else -1
        windows = {k: cml_query_window(dist, mask, direction=k) for k in correct}
        if windows["a2v"] is None:
            excluded += 1
            continue
        evaluated += 1
        for k, w in windows.items():
            correct[k] += int(w == start)
    if evaluated == 0:
        raise ValueError("cml_accuracy: every video was excluded (full-length or no event)")
    a2v, v2a = correct["a2v"] / evaluated, correct["v2a"] / evaluated
    return CmlResult(a2v=a2v, v2a=v2a, average=(a2v + v2a) / 2, num_videos=evaluated, num_excluded=excluded)


def cml_windows_accuracy(predicted_starts, event_masks) -> float:
    """Exact-window accuracy of already predicted window starts (``N``, -1 = excluded video).

    A start is correct iff it equals the first event segment of the query; excluded videos
    (full-length / no event) are skipped whatever their prediction.
    """
    starts = _as_numpy(predicted_starts, "predicted_starts").astype(np.int64)
    masks = _as_numpy(event_masks, "event_masks").astype(bool)
    if starts.shape != masks.shape[:1]:
        raise ValueError(f"predicted_starts shape {starts.shape} does not match {masks.shape[0]} videos")
    lengths = masks.sum(axis=1)
    keep = (lengths > 0) & (lengths < masks.shape[1])
    if not keep.any():
        raise ValueError("cml_windows_accuracy: every video was excluded (full-length or no event)")
    first = masks.argmax(axis=1)
    return float((starts[keep] == first[keep]).mean())
