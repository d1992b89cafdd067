"""``avel plot``: per-video timeline figures (and audio-visual similarity figures from a store)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import click

from avel.cli.options import annotations_option, int_option, out_dir_option, predictions_option, split_option


def _file_stem(video_id: str) -> str:
    from avel.datasets.interop import is_safe_video_id

    return video_id if is_safe_video_id(video_id) else quote(video_id, safe="")


def _similarity_strip(store, vid: str, visual_stream: str, audio_stream: str):
    """Per-row cosine similarity of aligned visual / audio rows and the row centres (s), or (None, None)."""
    import numpy as np

    from avel.models.visualize import cross_similarity

    try:
        v, a = store[vid][visual_stream], store[vid][audio_stream]
        n = min(len(v), len(a))
        sim = np.diag(cross_similarity(v.reshape(len(v), -1)[:n], a.reshape(len(a), -1)[:n]))
    except (KeyError, ValueError):
        return None, None
    start, end = store.times(vid, visual_stream)
    return sim, ((np.asarray(start) + np.asarray(end)) / 2)[:n]


@click.command("plot")
@predictions_option(required=True)
@annotations_option()
@out_dir_option("Output folder for the PNG files.", dest="out_dir")
@click.option(
    "--videos",
    "video_ids",
    multiple=True,
    help="Video id to plot; repeat the option for several (default: the first --limit videos of --split).",
)
@split_option("Split whose videos are plotted when --videos is not given.")
@int_option("--limit", default=20, min=1, help="Number of videos plotted when --videos is not given.")
@int_option("--top-k", default=3, min=1, help="Predictions drawn per class (highest scores).")
@click.option("--min-score", default=0.0, show_default=True, type=float, help="Predictions below are not drawn.")
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Feature store: also draw the visual x audio cosine similarity of each video.",
)
@click.option("--visual-stream", help="Visual stream of --store (features of a space shared with audio).")
@click.option("--audio-stream", help="Audio stream of --store.")
def plot(
    predictions_path: Path,
    annotations_path: Path,
    out_dir: Path,
    video_ids: tuple[str, ...],
    split: str,
    limit: int,
    top_k: int,
    min_score: float,
    store_path: Path | None,
    visual_stream: str | None,
    audio_stream: str | None,
) -> None:
    """Write, for each video, OUT/<video_id>.video.png (one figure: ground truth, the top 2 x --top-k
    detections with scores and, with --store, the per-row audio-visual similarity strip),
    OUT/<video_id>.timeline.png (ground truth vs top predictions per class lane) and, with --store,
    OUT/<video_id>.similarity.png (cosine similarity of every visual row with every audio row).

    Exit code 0 when every figure was written, 1 when some video could not be plotted (each is
    reported), 2 on usage errors, 3 when the annotations, predictions or store cannot be read.
    """
    from avel.datasets.unav100 import load_unav100
    from avel.models.figures import plot_video
    from avel.models.metrics.results_io import read_results
    from avel.models.visualize import TimelinePlotConfig, plot_cross_similarity, plot_timeline

    if store_path is not None and not (visual_stream and audio_stream):
        raise click.UsageError("--store needs --visual-stream and --audio-stream")
    if store_path is None and (visual_stream or audio_stream):
        raise click.UsageError("--visual-stream / --audio-stream need --store")
    annotations = load_unav100(annotations_path)
    results = read_results(predictions_path, classes=annotations.classes)
    samples = {s.video_id: s for s in annotations.samples}
    if not video_ids:
        video_ids = tuple(s.video_id for s in annotations.subset(split))[:limit]
    store = None
    if store_path is not None:
        from avel.datasets.store import FeatureStore, StoreError

        store = FeatureStore(store_path)
    cfg = TimelinePlotConfig(top_k_per_class=top_k, min_score=min_score)
    problems, written = [], 0
    for vid in video_ids:
        sample = samples.get(vid)
        if sample is None and vid not in results.predictions:
            problems.append(f"{vid}: not in {annotations_path} nor in {predictions_path}")
            continue
        gt = [(g.start_s, g.end_s, g.label_id) for g in sample.segments] if sample else []
        stem = out_dir / _file_stem(vid)
        plot_timeline(
            stem.with_name(stem.name + ".timeline.png"),
            ground_truth=gt,
            predictions=results.predictions.get(vid, []),
            classes=annotations.classes,
            duration_s=sample.duration_s if sample else None,
            title=vid,
            config=cfg,
        )
        written += 1
        strip, strip_times = None, None
        if store is not None and visual_stream and audio_stream:  # both given with --store (checked above)
            strip, strip_times = _similarity_strip(store, vid, visual_stream, audio_stream)
        plot_video(
            stem.with_name(stem.name + ".video.png"),
            video_id=vid,
            ground_truth=gt,
            predictions=results.predictions.get(vid, []),
            classes=annotations.classes,
            duration_s=sample.duration_s if sample else None,
            top_k=top_k * 2,
            min_score=min_score,
            similarity=strip,
            similarity_times_s=strip_times,
        )
        written += 1
        if store is not None and visual_stream and audio_stream:  # both given with --store (checked above)
            try:
                visual = store[vid][visual_stream]
                audio = store[vid][audio_stream]
                plot_cross_similarity(
                    visual.reshape(len(visual), -1),
                    audio.reshape(len(audio), -1),
                    stem.with_name(stem.name + ".similarity.png"),
                    visual_times_s=store.times(vid, visual_stream),
                    audio_times_s=store.times(vid, audio_stream),
                    title=f"{vid}: {visual_stream} x {audio_stream}",
                )
                written += 1
            except (KeyError, ValueError, StoreError) as e:
                problems.append(f"{vid}: similarity figure: {e}")
    for p in problems:
        click.echo(f"error: {p}", err=True)
    click.echo(f"wrote {written} figure(s) to {out_dir}")
    sys.exit(1 if problems else 0)
