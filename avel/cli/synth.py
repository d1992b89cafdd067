"""``avel synth``: write the synthetic audio-visual benchmark (real mp4 + annotations)."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from avel.cli.options import apply, int_option, out_dir_option

_options = apply(
    out_dir_option("Output directory (videos/, annotations, synth.json)."),
    int_option("--videos", default=300, min=1, help="Number of videos (split ~60/20/20 into train/validation/test)."),
    int_option("--seed", default=0, help="Same seed, same annotations, pixels and samples."),
    int_option("--classes", "num_classes", default=10, min=1, max=36, help="Event classes (AVE-like: at most 28)."),
    int_option("--size", default=128, min=16, help="Frame side in pixels (even: H.264 yuv420p)."),
    int_option("--fps", default=25, min=1, help="Video frame rate."),
    int_option(
        "--crf", default=23, min=0, max=51, help="x264 constant rate factor (lower: better quality, bigger files)."
    ),
    int_option("--workers", default=1, min=1, help="Processes rendering and encoding videos."),
)
"""The options of every ``avel synth`` command; all but ``--out`` and ``--workers`` are
:class:`~avel.datasets.synth.SynthConfig` fields."""


def _config(**fields):
    """A validated :class:`SynthConfig`; invalid settings are a usage error (exit 2)."""
    from avel.datasets.synth import SynthConfig

    try:
        return SynthConfig(**fields)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _run(cfg, out: Path, workers: int) -> None:
    from avel.datasets.synth import generate

    total = cfg.videos + cfg.background_videos
    with tqdm(total=total, desc=f"synth {cfg.kind}", unit="video", disable=None) as bar:
        ann = generate(cfg, out, workers=workers, progress=lambda n: bar.update(n - bar.n))
    subsets = {s: len(ann.subset(s)) for s in ("train", "validation", "test")}
    extra = f" + {cfg.background_videos} background videos (background_videos.txt)" if cfg.background_videos else ""
    click.echo(
        f"wrote {cfg.videos} videos{extra}, {len(ann)} annotation rows/videos ({subsets}), "
        f"{ann.num_classes} classes to {out}"
    )


@click.group("synth")
def synth() -> None:
    """Generate the synthetic benchmark in the UnAV-100 or AVE format."""


@synth.command("unav100")
@_options
@click.option("--min-duration-s", default=10.0, show_default=True, type=float, help="Shortest video (s).")
@click.option("--max-duration-s", default=30.0, show_default=True, type=float, help="Longest video (s).")
def synth_unav100(out: Path, workers: int, **fields) -> None:
    """UnAV-100-like: 10-30 s videos with 1-4 (possibly overlapping) events plus distractors."""
    cfg = _config(kind="unav100", **fields)
    _run(cfg, out, workers)


@synth.command("ave")
@_options
@int_option(
    "--background-videos",
    default=0,
    min=0,
    help="Extra event-free 10-s videos (distractors only) for weak supervision, like AVE's noisy "
    "videos: written to videos/, listed in background_videos.txt, in no split.",
)
def synth_ave(out: Path, workers: int, **fields) -> None:
    """AVE-like: 10-s clips, one annotated event per row (integer seconds), distractors."""
    cfg = _config(kind="ave", min_duration_s=10.0, max_duration_s=10.0, **fields)
    _run(cfg, out, workers)
