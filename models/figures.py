"""Figures people look at: one clear figure per video and a run report.

* :func:`plot_video`: for one video, stacked panels sharing the time axis: the ground-truth
  segments (when known), the top-k detections as labelled bars (class and score written on each,
  best on top), and an audio-visual similarity strip (per-row cosine similarity of the two
  modalities' rows, when given). Legends sit outside the panels, so nothing covers the bars.
* :func:`write_run_report`: ``RUN/report/`` with ``curves.png`` (training loss and validation
  score per epoch from ``log.jsonl``), ``per_class_ap.png`` (per-class AP bars of a
  ``metrics``/results payload when available) and ``report.html`` tying them together.

Everything renders with the non-interactive Agg backend.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avel.models.visualize import _pyplot, _table


def plot_video(
    out_path: str | os.PathLike,
    *,
    video_id: str,
    predictions: Any,
    classes: Sequence[str],
    ground_truth: Any = None,
    duration_s: float | None = None,
    top_k: int = 5,
    min_score: float = 0.0,
    similarity: np.ndarray | None = None,
    similarity_times_s: np.ndarray | None = None,
    dpi: int = 110,
) -> Path:
    """One video's figure (module doc); returns the written PNG path.

    Args:
        out_path: PNG to write.
        video_id: title.
        predictions: ``P x 4`` rows ``(start_s, end_s, label_id, score)``.
        classes: class names by id.
        ground_truth: ``G x 3`` rows ``(start_s, end_s, label_id)`` or None (new videos).
        duration_s: x-axis end (default: the latest segment end).
        top_k: detections drawn (highest scores above ``min_score``).
        similarity: optional ``T`` per-row audio-visual cosine similarities.
        similarity_times_s: centres of those rows in seconds (default: evenly over the duration).
    """
    pr = _table(predictions, 4, "predictions")
    gt = _table(ground_truth, 3, "ground_truth")
    pr = pr[pr[:, 3] >= min_score]
    pr = pr[np.argsort(-pr[:, 3], kind="stable")][:top_k]
    end = duration_s or max([1.0, *gt[:, 1].tolist(), *pr[:, 1].tolist()])

    def name(c: float) -> str:
        return classes[int(c)] if 0 <= int(c) < len(classes) else str(int(c))

    lanes = list(dict.fromkeys([int(c) for c in gt[:, 2]] + [int(c) for c in pr[:, 2]]))
    colours = {c: f"C{i % 10}" for i, c in enumerate(lanes)}
    panels = [("gt", 0.9)] if ground_truth is not None else []
    panels += [("det", 0.35 * max(len(pr), 1) + 0.5)]
    if similarity is not None and len(similarity):
        panels += [("sim", 0.8)]
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(panels),
        1,
        sharex=True,
        figsize=(10, 0.9 + sum(h for _, h in panels)),
        gridspec_kw={"height_ratios": [h for _, h in panels]},
        squeeze=False,
    )
    try:
        for (kind, _), ax in zip(panels, axes[:, 0]):
            if kind == "gt":
                for s, e, c in gt:
                    ax.broken_barh([(s, e - s)], (0.15, 0.7), color=colours[int(c)])
                    ax.text(s + 0.01 * end, 0.5, name(c), va="center", fontsize=8, color="white", clip_on=True)
                ax.set_yticks([0.5])
                ax.set_yticklabels(["ground truth"])
                ax.set_ylim(0, 1)
            elif kind == "det":
                n = max(len(pr), 1)
                for i, (s, e, c, score) in enumerate(pr):
                    y = n - 1 - i
                    ax.broken_barh(
                        [(s, e - s)],
                        (y + 0.15, 0.7),
                        color=colours[int(c)],
                        alpha=float(np.clip(0.35 + 0.65 * score, 0, 1)),
                    )
                    ax.text(s + 0.01 * end, y + 0.5, f"{name(c)} {score:.2f}", va="center", fontsize=8, clip_on=True)
                ax.set_yticks([n - 1 - i + 0.5 for i in range(len(pr))])
                ax.set_yticklabels([f"#{i + 1}" for i in range(len(pr))])
                ax.set_ylim(0, n)
                ax.set_ylabel(f"top {len(pr)}", fontsize=8)
                if not len(pr):
                    ax.text(
                        0.5,
                        0.5,
                        "no detections above the score threshold",
                        transform=ax.transAxes,
                        ha="center",
                        va="center",
                        fontsize=8,
                    )
            else:
                sim = np.asarray(similarity, dtype=np.float64)
                times = (
                    np.asarray(similarity_times_s, dtype=np.float64)
                    if similarity_times_s is not None
                    else (np.arange(len(sim)) + 0.5) * end / len(sim)
                )
                ax.imshow(
                    sim[None, :],
                    aspect="auto",
                    cmap="coolwarm",
                    vmin=-1,
                    vmax=1,
                    interpolation="nearest",
                    extent=(
                        times[0] - (times[1] - times[0]) / 2 if len(times) > 1 else 0,
                        times[-1] + (times[1] - times[0]) / 2 if len(times) > 1 else end,
                        0,
                        1,
                    ),
                )
                ax.set_yticks([0.5])
                ax.set_yticklabels(["A-V cos"])
        axes[-1, 0].set_xlim(0, end)
        axes[-1, 0].set_xlabel("time (s)")
        axes[0, 0].set_title(video_id)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in lanes]
        if handles:  # below the panels: never over a bar
            fig.legend(
                handles,
                [name(c) for c in lanes],
                loc="lower center",
                ncol=min(len(lanes), 6),
                fontsize=8,
                frameon=False,
            )
        fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    finally:
        plt.close(fig)
    return out


def _read_log(run: Path) -> list[dict[str, Any]]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_run_report(
    run_dir: str | os.PathLike, *, per_class_ap: dict[str, float] | None = None, title: str | None = None
) -> Path:
    """Write ``RUN/report/{curves.png, per_class_ap.png, report.html}``; returns the HTML path.

    Args:
        run_dir: a training run directory (``log.jsonl``, ``summary.json``, ``model_card.json``).
        per_class_ap: ``{class name: AP}`` (e.g. from ``avel eval --json``'s per-class table);
            when None, the bars are omitted.
        title: page title (default: the run directory name).
    """
    run = Path(run_dir)
    out = run / "report"
    out.mkdir(parents=True, exist_ok=True)
    records = _read_log(run)
    epochs = [r for r in records if "epoch" in r and ("val_score" in r or "train_total" in r)]
    plt = _pyplot()
    images = []
    if epochs:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        try:
            x = [r["epoch"] for r in epochs if "train_total" in r]
            ax.plot(x, [r["train_total"] for r in epochs if "train_total" in r], "o-", label="training loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            val = [(r["epoch"], r["val_score"]) for r in epochs if r.get("val_score") is not None]
            if val:
                ax2 = ax.twinx()
                ax2.plot(*zip(*val), "s-", color="C1", label="validation score")
                ax2.set_ylabel("validation score")
                fig.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
            fig.tight_layout(rect=(0, 0, 1, 0.9))
            fig.savefig(out / "curves.png", dpi=100)
            images.append(("Training curves", "curves.png"))
        finally:
            plt.close(fig)
    if per_class_ap:
        names = list(per_class_ap)
        values = [per_class_ap[n] for n in names]
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 3.8))
        try:
            ax.bar(range(len(names)), values, color="C0")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
            ax.set_ylabel("AP")
            ax.set_ylim(0, 1)
            ax.axhline(float(np.mean(values)), color="C3", lw=1, label=f"mean {np.mean(values):.3f}")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            fig.tight_layout()
            fig.savefig(out / "per_class_ap.png", dpi=100)
            images.append(("Per-class AP", "per_class_ap.png"))
        finally:
            plt.close(fig)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    card = json.loads((run / "model_card.json").read_text()) if (run / "model_card.json").is_file() else {}
    streams = [
        f"{role}: {e['stream']} ({e['extractor']}, weights {str(e['weights_sha256'])[:16]})"
        for role in ("visual", "audio")
        for e in card.get("streams", {}).get(role, [])
    ]
    body = [
        f"<h1>{html.escape(title or run.name)}</h1>",
        "<h2>Streams</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in streams) + "</ul>",
        "<h2>Summary</h2><pre>" + html.escape(json.dumps(summary, indent=1, default=float)) + "</pre>",
    ]
    body += [f"<h2>{html.escape(t)}</h2><img src='{f}'>" for t, f in images]
    page = out / "report.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(title or run.name)
        + "</title></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )
    return page
