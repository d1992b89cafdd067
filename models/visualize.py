"""Figures for dense localization: per-video timelines and audio-visual similarity matrices.

* :func:`plot_timeline`: one lane per class, ground-truth segments above the top-scoring
  predictions of that class (one sub-row each, best on top, opacity = score), in seconds.
* :func:`plot_cross_similarity`: cosine similarity of every visual row with every audio row of one
  video (``T_v x T_a``), the matrix LoCo shows to illustrate audio-visual temporal correlation.

Both render with the non-interactive Agg backend and write a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TimelinePlotConfig:
    """Options of :func:`plot_timeline`.

    Attributes:
        top_k_per_class: predictions kept per class (highest scores).
        min_score: predictions below this score are not drawn.
        max_classes: at most this many class lanes: every ground-truth class, then the classes of
            the highest-scoring predictions.
        width_in: figure width (inches); the height grows with the number of lanes.
        dpi: PNG resolution.
    """

    top_k_per_class: int = 3
    min_score: float = 0.0
    max_classes: int = 8
    width_in: float = 10.0
    dpi: int = 100


@dataclass
class SimilarityPlotConfig:
    """Options of :func:`plot_cross_similarity`.

    Attributes:
        cmap: matplotlib colour map.
        size_in: figure side (inches).
        dpi: PNG resolution.
    """

    cmap: str = "viridis"
    size_in: float = 6.0
    dpi: int = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _table(rows: Any, width: int, name: str) -> np.ndarray:
    arr = np.asarray(rows if rows is not None else [], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{name}: expected an N x {width} table, got shape {arr.shape}")
    return arr


def select_timeline_predictions(
    predictions: Any, *, ground_truth: Any = None, config: TimelinePlotConfig | None = None
) -> tuple[list[int], np.ndarray]:
    """The class lanes and predictions :func:`plot_timeline` draws.

    Args:
        predictions: ``P x 4`` rows ``(start_s, end_s, label_id, score)``.
        ground_truth: ``G x 3`` rows ``(start_s, end_s, label_id)`` or None.
        config: see :class:`TimelinePlotConfig`.

    Returns:
        ``(class ids in lane order, kept prediction rows K x 4)``.
    """
    cfg = config or TimelinePlotConfig()
    pr = _table(predictions, 4, "predictions")
    gt = _table(ground_truth, 3, "ground_truth")
    pr = pr[pr[:, 3] >= cfg.min_score]
    pr = pr[np.lexsort((-pr[:, 3], pr[:, 2]))]  # by class, score descending
    keep = np.zeros(len(pr), dtype=bool)
    for c in np.unique(pr[:, 2]):
        keep[np.flatnonzero(pr[:, 2] == c)[: cfg.top_k_per_class]] = True
    pr = pr[keep]
    lanes = list(dict.fromkeys(int(c) for c in gt[:, 2]))
    for c in pr[np.argsort(-pr[:, 3], kind="stable"), 2]:
        if int(c) not in lanes:
            lanes.append(int(c))
    lanes = lanes[: cfg.max_classes]
    return lanes, pr[np.isin(pr[:, 2], lanes)]


def plot_timeline(
    out_path: str | os.PathLike,
    *,
    ground_truth: Any,
    predictions: Any,
    classes: Sequence[str] | None = None,
    duration_s: float | None = None,
    title: str | None = None,
    config: TimelinePlotConfig | None = None,
) -> Path:
    """Draw one video's ground truth against its top predictions per class, write a PNG.

    Args:
        out_path: PNG file to write (parent folders are created).
        ground_truth: ``G x 3`` rows ``(start_s, end_s, label_id)`` (may be empty).
        predictions: ``P x 4`` rows ``(start_s, end_s, label_id, score)`` (may be empty).
        classes: ``classes[label_id]`` lane names; ids are shown when None.
        duration_s: x-axis end; default the latest segment end.
        title: figure title (e.g. the video id).
        config: see :class:`TimelinePlotConfig`.

    Returns:
        The written path.
    """
    cfg = config or TimelinePlotConfig()
    gt = _table(ground_truth, 3, "ground_truth")
    lanes, pr = select_timeline_predictions(predictions, ground_truth=gt, config=cfg)
    end = duration_s if duration_s is not None else max([1.0, *gt[:, 1].tolist(), *pr[:, 1].tolist()])
    plt = _pyplot()
    n = max(len(lanes), 1)
    fig, ax = plt.subplots(figsize=(cfg.width_in, 0.9 + 0.6 * n))
    try:
        for row, c in enumerate(lanes):
            y = n - 1 - row
            g = gt[gt[:, 2] == c]
            ax.broken_barh(
                [(s, e - s) for s, e in g[:, :2]],
                (y + 0.52, 0.36),
                color="tab:green",
                label="ground truth" if row == 0 else None,
            )
            mine = pr[pr[:, 2] == c]  # score descending: one sub-row each, best on top
            h = 0.4 / max(len(mine), 1)
            for i, (s, e, _, score) in enumerate(mine):
                y0 = y + 0.08 + (len(mine) - 1 - i) * h
                ax.broken_barh([(s, e - s)], (y0, 0.9 * h), color="tab:blue", alpha=float(np.clip(score, 0.15, 1.0)))
                ax.text(s, y0 + 0.45 * h, f"{score:.2f}", fontsize=6, va="center")
        ax.barh([], [], color="tab:blue", label="prediction (opacity = score)")
        ax.set_yticks([n - 1 - r + 0.5 for r in range(len(lanes))])
        ax.set_yticklabels([(classes[c] if classes is not None and c < len(classes) else str(c)) for c in lanes])
        ax.set_ylim(0, n)
        ax.set_xlim(0, end)
        ax.set_xlabel("time (s)")
        if title:
            ax.set_title(title)
        # outside the axes, right of the lanes: inside it covered the top lane's ground-truth bar
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7, frameon=False)
        fig.tight_layout()
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=cfg.dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def cross_similarity(visual: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Cosine similarity of every visual row with every audio row.

    Args:
        visual: ``T_v x D``.
        audio: ``T_a x D`` (same ``D``: features of a shared embedding space, e.g. ONE-PEACE).

    Returns:
        ``T_v x T_a`` similarities in [-1, 1]; rows of zero norm give 0.
    """
    v = np.asarray(visual, dtype=np.float64)
    a = np.asarray(audio, dtype=np.float64)
    if v.ndim != 2 or a.ndim != 2:
        raise ValueError(f"expected 2-D features (T x D), got visual {v.shape} and audio {a.shape}")
    if v.shape[1] != a.shape[1]:
        raise ValueError(
            f"visual and audio feature dims differ ({v.shape[1]} vs {a.shape[1]}): cosine similarity "
            "needs features of one embedding space (e.g. ONE-PEACE visual/audio streams)"
        )
    vn = np.linalg.norm(v, axis=1, keepdims=True)
    an = np.linalg.norm(a, axis=1, keepdims=True)
    v = np.divide(v, vn, out=np.zeros_like(v), where=vn > 0)
    a = np.divide(a, an, out=np.zeros_like(a), where=an > 0)
    return v @ a.T  # T_v x T_a


def plot_cross_similarity(
    visual: np.ndarray,
    audio: np.ndarray,
    out_path: str | os.PathLike,
    *,
    visual_times_s: tuple[np.ndarray, np.ndarray] | None = None,
    audio_times_s: tuple[np.ndarray, np.ndarray] | None = None,
    title: str | None = None,
    config: SimilarityPlotConfig | None = None,
) -> np.ndarray:
    """Plot the ``T_v x T_a`` cosine similarity matrix of one video's unimodal features as a PNG.

    Args:
        visual: ``T_v x D`` visual features.
        audio: ``T_a x D`` audio features.
        out_path: PNG file to write.
        visual_times_s: optional ``(start_s, end_s)`` arrays of the visual rows; axes are then in
            seconds (row centres), otherwise in row indices.
        audio_times_s: same for the audio rows.
        title: figure title.
        config: see :class:`SimilarityPlotConfig`.

    Returns:
        The similarity matrix (``T_v x T_a``).
    """
    cfg = config or SimilarityPlotConfig()
    sim = cross_similarity(visual, audio)

    def extent(times, n):
        if times is None:
            return -0.5, n - 0.5, "row"
        start, end = (np.asarray(t, dtype=np.float64) for t in times)
        if start.shape != (n,) or end.shape != (n,):
            raise ValueError(f"row times must have {n} entries, got {start.shape} and {end.shape}")
        centre = (start + end) / 2
        half = (centre[1] - centre[0]) / 2 if n > 1 else (end[0] - start[0]) / 2
        return centre[0] - half, centre[-1] + half, "time (s)"

    x0, x1, xl = extent(audio_times_s, sim.shape[1])
    y0, y1, yl = extent(visual_times_s, sim.shape[0])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(cfg.size_in, cfg.size_in))
    try:
        im = ax.imshow(
            sim,
            origin="lower",
            aspect="auto",
            cmap=cfg.cmap,
            vmin=-1,
            vmax=1,
            extent=(x0, x1, y0, y1),
            interpolation="nearest",
        )
        ax.set_xlabel(f"audio {xl}")
        ax.set_ylabel(f"visual {yl}")
        if title:
            ax.set_title(title)
        fig.colorbar(im, ax=ax, label="cosine similarity")
        fig.tight_layout()
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=cfg.dpi)
    finally:
        plt.close(fig)
    return sim
