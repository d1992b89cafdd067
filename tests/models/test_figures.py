"""Per-video figure, timeline legend placement and the run report."""

from __future__ import annotations

import json

import matplotlib.figure
import numpy as np
import pytest

from avel.models.figures import plot_video, write_run_report
from avel.models.visualize import plot_timeline


@pytest.fixture
def saved_figures(monkeypatch):
    """Figures as they are saved (the plotting functions close them afterwards)."""
    figs = []
    real = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kw):
        figs.append(self)
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figs


def _boxes(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return renderer, [ax.get_window_extent(renderer) for ax in fig.axes]


def test_timeline_legend_does_not_cover_the_lanes(tmp_path, saved_figures):
    plot_timeline(
        tmp_path / "t.png", ground_truth=[(0, 10, 0)], predictions=[(0, 10, 0, 0.9)], classes=["dog"], duration_s=10
    )
    [fig] = saved_figures
    renderer, [axes_box] = _boxes(fig)
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert not legend.overlaps(axes_box)  # the full-width ground-truth bar spans the axes


def test_video_figure_has_gt_detections_and_similarity_panels(tmp_path, saved_figures):
    out = plot_video(
        tmp_path / "v.png",
        video_id="vid",
        classes=["dog", "bell", "car"],
        ground_truth=[(1, 4, 0)],
        predictions=[(1, 4, 0, 0.8), (5, 6, 2, 0.3), (0, 1, 1, 0.01)],
        duration_s=8,
        top_k=5,
        min_score=0.05,
        similarity=np.linspace(-1, 1, 20),
    )
    assert out.stat().st_size > 2000
    [fig] = saved_figures
    assert len(fig.axes) == 3
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts == ["dog 0.80", "car 0.30"]  # score order, below-threshold one dropped
    renderer, boxes = _boxes(fig)
    legend = fig.legends[0].get_window_extent(renderer)
    assert not any(legend.overlaps(b) for b in boxes)


def test_run_report(tmp_path):
    (tmp_path / "log.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"epoch": 1, "train_total": 2.0, "val_score": 0.1},
                {"epoch": 2, "train_total": 1.5, "val_score": 0.2},
            ]
        )
    )
    (tmp_path / "summary.json").write_text(json.dumps({"best_epoch": 2}))
    page = write_run_report(tmp_path, per_class_ap={"dog": 0.5, "bell": 0.25})
    text = page.read_text()
    assert "curves.png" in text and "per_class_ap.png" in text and "best_epoch" in text
    assert (tmp_path / "report" / "per_class_ap.png").stat().st_size > 1000
