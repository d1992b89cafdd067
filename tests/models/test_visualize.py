"""Timeline and similarity figures: what is selected, what is computed, that a PNG is written."""

import numpy as np
import pytest

from avel.models.visualize import (
    TimelinePlotConfig,
    cross_similarity,
    plot_cross_similarity,
    plot_timeline,
    select_timeline_predictions,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_timeline_selection_top_k_lanes_and_min_score():
    gt = [(0, 5, 3)]
    preds = [
        (0, 5, 3, 0.2),
        (0, 4, 3, 0.9),
        (1, 5, 3, 0.5),  # class 3: keep 0.9, 0.5
        (2, 3, 7, 0.95),
        (2, 3, 8, 0.05),
    ]  # class 8 below min_score
    lanes, kept = select_timeline_predictions(
        preds, ground_truth=gt, config=TimelinePlotConfig(top_k_per_class=2, min_score=0.1)
    )
    assert lanes == [3, 7]  # ground-truth classes first, then by best score
    assert sorted(kept[:, 3].tolist()) == [0.5, 0.9, 0.95]
    lanes, _ = select_timeline_predictions(preds, ground_truth=gt, config=TimelinePlotConfig(max_classes=1))
    assert lanes == [3]


def test_plot_timeline_writes_png(tmp_path):
    out = plot_timeline(
        tmp_path / "a" / "v.png",
        ground_truth=[(0, 5, 0), (6, 9, 1)],
        predictions=[(0.5, 5, 0, 0.8), (6, 8, 1, 0.3)],
        classes=["dog", "car"],
        duration_s=10,
        title="v",
    )
    assert out.read_bytes()[:8] == PNG
    empty = plot_timeline(tmp_path / "e.png", ground_truth=[], predictions=[])
    assert empty.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="predictions: expected an N x 4"):
        plot_timeline(tmp_path / "x.png", ground_truth=[], predictions=[(0, 1, 2)])


def test_cross_similarity_values():
    v = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    a = np.array([[3.0, 0.0], [1.0, 1.0]])
    sim = cross_similarity(v, a)
    np.testing.assert_allclose(sim, [[1, 2**-0.5], [0, 2**-0.5], [0, 0]])
    with pytest.raises(ValueError, match="dims differ \\(2 vs 3\\)"):
        cross_similarity(v, np.ones((2, 3)))


def test_plot_cross_similarity_with_times(tmp_path):
    rng = np.random.default_rng(0)
    v, a = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    times_v = (np.arange(6) * 0.32, np.arange(6) * 0.32 + 0.96)
    sim = plot_cross_similarity(v, a, tmp_path / "s.png", visual_times_s=times_v, title="v")
    assert sim.shape == (6, 5) and (tmp_path / "s.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="must have 5 entries"):
        plot_cross_similarity(v, a, tmp_path / "t.png", audio_times_s=times_v)
