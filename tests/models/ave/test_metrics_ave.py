"""AVE metrics: segment accuracy and CML exact-window accuracy (AVE-ECCV18 cmm_test protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avel.models.metrics.ave import (
    cml_accuracy,
    cml_predict_starts,
    cml_query_window,
    cml_windows_accuracy,
    event_mask_from_labels,
    per_class_accuracy,
    segment_accuracy,
)

BG = 28


def test_segment_accuracy_counts_background_as_a_class():
    labels = torch.full((2, 10), BG)
    assert segment_accuracy(torch.full((2, 10), BG), labels) == 1.0
    pred = labels.clone()
    pred[0, :3] = 4  # 3 wrong background segments out of 20
    assert segment_accuracy(pred, labels) == pytest.approx(17 / 20)
    labels[1, 5:] = 7
    pred = torch.full((2, 10), BG)  # predicting all background misses the 5 event segments
    assert segment_accuracy(pred, labels) == pytest.approx(15 / 20)


def test_segment_accuracy_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        segment_accuracy(np.zeros((2, 10)), np.zeros((2, 9)))


def test_per_class_accuracy_nan_for_absent_classes():
    labels = np.array([[0, 0, 1, BG]])
    pred = np.array([[0, 1, 1, 0]])
    acc = per_class_accuracy(pred, labels, num_classes=29)
    assert acc[0] == 0.5 and acc[1] == 1.0 and acc[BG] == 0.0 and np.isnan(acc[2])


def _diagonal_distances(offset: int, t: int = 10) -> np.ndarray:
    """D[v, a] = 0 where v = a + offset, 1 elsewhere."""
    d = np.ones((t, t))
    for a in range(t):
        if 0 <= a + offset < t:
            d[a + offset, a] = 0.0
    return d


def test_cml_exact_window_is_correct_and_off_by_one_is_wrong():
    mask = np.zeros(10, bool)
    mask[3:6] = True
    assert cml_query_window(_diagonal_distances(0), mask, direction="a2v") == 3
    assert cml_query_window(_diagonal_distances(0), mask, direction="v2a") == 3
    # visual shifted by one segment: the audio query lands one later in the visual track,
    # the visual query one earlier in the audio track
    assert cml_query_window(_diagonal_distances(1), mask, direction="a2v") == 4
    assert cml_query_window(_diagonal_distances(1), mask, direction="v2a") == 2
    res = cml_accuracy(np.stack([_diagonal_distances(0), _diagonal_distances(1)]), np.stack([mask, mask]))
    assert (res.a2v, res.v2a, res.num_videos, res.num_excluded) == (0.5, 0.5, 2, 0)


def test_cml_excludes_full_length_and_empty_events():
    partial = np.zeros(10, bool)
    partial[0:2] = True
    masks = np.stack([np.ones(10, bool), partial, np.zeros(10, bool)])
    d = np.stack([_diagonal_distances(5), _diagonal_distances(0), _diagonal_distances(3)])
    assert cml_query_window(d[0], masks[0], direction="a2v") is None
    res = cml_accuracy(d, masks)
    assert (res.a2v, res.v2a, res.average, res.num_videos, res.num_excluded) == (1.0, 1.0, 1.0, 1, 2)
    with pytest.raises(ValueError, match="excluded"):
        cml_accuracy(d[:1], masks[:1])


def test_cml_window_at_the_end_and_ties_take_first():
    mask = np.zeros(10, bool)
    mask[7:] = True
    assert cml_query_window(_diagonal_distances(0), mask, direction="a2v") == 7
    assert cml_query_window(np.zeros((10, 10)), mask, direction="a2v") == 0


def test_cml_windows_accuracy_and_event_masks():
    labels = torch.full((3, 10), BG)
    labels[0, 2:4] = 1
    labels[1, :] = 2  # full length: excluded whatever the prediction
    labels[2, 5:9] = 3
    masks = event_mask_from_labels(labels, background_id=BG)
    assert cml_windows_accuracy(np.array([2, 0, 4]), masks) == 0.5
    assert cml_windows_accuracy(np.array([2, -1, 5]), masks) == 1.0


def test_cml_predict_starts_marks_excluded_videos():
    mask = np.zeros(10, bool)
    mask[3:6] = True
    masks = np.stack([mask, np.ones(10, bool)])
    starts = cml_predict_starts(np.stack([_diagonal_distances(1), _diagonal_distances(0)]), masks)
    assert starts["a2v"].tolist() == [4, -1] and starts["v2a"].tolist() == [2, -1]
    assert cml_windows_accuracy(starts["a2v"], masks) == 0.0
