"""Generate the synthetic audio-visual benchmark: real mp4 files plus UnAV-100 / AVE annotations.

Each video is a timeline of *occurrences* of class signatures (see :mod:`.signatures`):

* labelled audio-visual events: the class's object is visible AND its sound is audible
  over ``[start_s, end_s)``;
* unlabelled distractors: a visual-only occurrence (object, no sound) or an audio-only one
  (sound, no object) of a class that has no event in that video, so a single modality
  cannot tell events from distractors;
* events of different classes may overlap in time (two objects at different places, two
  sounds mixed).

Event durations are drawn from a mixture (config fields): short 0.4-1.5 s, medium 1.5-8 s,
long 8 s to half the video, and whole-video events.

AVE-like sets can add *extra background videos* (``background_videos``), the synthetic
counterpart of AVE's 178 ``*_noisy.h5`` videos used by weak supervision: 10-s clips without
any labelled event, whose only content is distractors drawn exactly like those of the
annotated videos (visual-only and audio-only occurrences, any class). They are written next to
the annotated videos (``videos/<id>.mp4``), appear in no annotation row, and their ids are
listed, in order, in ``background_videos.txt``.

Encoding: H.264 (libx264, yuv420p) and AAC mono 16 kHz in mp4 via PyAV. Audio frames carry
explicit timestamps so the muxer records the AAC encoder delay and decoders drop the priming
samples: decoded audio lines up with the video to the sample (it ends with up to 1,023
near-silent padding samples of the last AAC frame). Files are written to a temp name
and renamed, so an interrupted run never leaves a truncated mp4 under a final name; a rerun
regenerates every file (deterministically, so the result is identical) and first deletes the
hidden temp files (``videos/.*.tmp.mp4``) an interrupted run may have left.
"""

from __future__ import annotations

import fractions
import json
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avel.datasets.annotations import AnnotationSet, Sample, Segment
from avel.datasets.fileio import atomic_write
from avel.datasets.synth.signatures import (
    ClassSignature,
    fade,
    make_signatures,
    motion_offset,
    render_sound,
    shape_mask,
)


@dataclass
class SynthConfig:
    """Generator settings (saved in ``synth.json``).

    Args:
        kind: ``"unav100"`` (dense, many events per video) or ``"ave"`` (10-s clips, one
            event per annotation row).
        videos: number of videos.
        seed: everything (annotations, pixels, samples) is a function of the seed.
        num_classes: event classes (AVE adds background).
        min_duration_s / max_duration_s: video length range (AVE: fixed 10 s).
        size: frame side in pixels (square frames).
        fps: video frame rate.
        sample_rate: audio rate (AAC, mono).
        events_min / events_max: labelled events per UnAV-like video.
        p_short, p_medium, p_long, p_whole: event duration mixture.
        visual_distractors_max / audio_distractors_max: unlabelled single-modality
            occurrences per video (uniform 0..max).
        second_row_fraction: AVE-like: share of videos with a second annotation row (another
            class), like the real AVE duplicates.
        background_videos: AVE-like: extra event-free videos (distractors only) for weak
            supervision, like AVE's noisy videos; ids ``bg<seed><index>``, in no split.
        split: train / validation / test fractions.
        event_snr_db: sound level over the background noise.
        crf: x264 constant rate factor (libx264 preset ultrafast). 23 keeps most of the
            background grain at ~1 MB per 20-s 128x128 video; 20 doubles the size, 26 smooths
            the grain away.
    """

    kind: str = "unav100"
    videos: int = 300
    seed: int = 0
    num_classes: int = 10
    min_duration_s: float = 10.0
    max_duration_s: float = 30.0
    size: int = 128
    fps: int = 25
    sample_rate: int = 16000
    events_min: int = 1
    events_max: int = 4
    p_short: float = 0.2
    p_medium: float = 0.45
    p_long: float = 0.25
    p_whole: float = 0.1
    visual_distractors_max: int = 2
    audio_distractors_max: int = 2
    second_row_fraction: float = 0.05
    background_videos: int = 0
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    event_snr_db: float = 14.0
    crf: int = 23

    def __post_init__(self) -> None:
        if self.kind not in ("unav100", "ave"):
            raise ValueError(f"kind must be 'unav100' or 'ave', got {self.kind!r}")
        if self.videos < 1:
            raise ValueError("videos must be >= 1")
        if not 0 < self.min_duration_s <= self.max_duration_s:
            raise ValueError("need 0 < min_duration_s <= max_duration_s")
        if abs(sum(self.split) - 1) > 1e-6 or min(self.split) < 0:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {self.split}")
        max_classes = 28 if self.kind == "ave" else 36
        if not 1 <= self.num_classes <= max_classes:
            raise ValueError(f"num_classes must be in 1..{max_classes} for kind {self.kind!r}, got {self.num_classes}")
        if not 1 <= self.events_min <= self.events_max:
            raise ValueError(f"need 1 <= events_min <= events_max, got {self.events_min}, {self.events_max}")
        probs = (self.p_short, self.p_medium, self.p_long, self.p_whole)
        if min(probs) < 0 or sum(probs) <= 0:
            raise ValueError(f"p_short, p_medium, p_long, p_whole must be >= 0 with a positive sum, got {probs}")
        if self.visual_distractors_max < 0 or self.audio_distractors_max < 0:
            raise ValueError("visual_distractors_max and audio_distractors_max must be >= 0")
        if self.background_videos < 0 or (self.background_videos and self.kind != "ave"):
            raise ValueError(
                f"background_videos must be >= 0 and needs kind 'ave', got {self.background_videos} "
                f"for kind {self.kind!r}"
            )
        if not 0 <= self.second_row_fraction <= 1:
            raise ValueError(f"second_row_fraction must be in [0, 1], got {self.second_row_fraction}")
        if self.size < 16 or self.size % 2:
            raise ValueError(f"size must be an even number of pixels >= 16 (yuv420p), got {self.size}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        if self.fps < 1 or self.sample_rate < 8000:
            raise ValueError(f"need fps >= 1 and sample_rate >= 8000, got {self.fps}, {self.sample_rate}")


@dataclass
class Occurrence:
    """One appearance of a class signature in a video."""

    class_index: int
    start_s: float
    end_s: float
    visual: bool
    audio: bool
    labelled: bool
    x: float = 0.5  # centre, fraction of the frame
    y: float = 0.5
    radius: float = 0.12  # fraction of the frame side


@dataclass
class VideoPlan:
    video_id: str
    duration_s: float
    subset: str
    occurrences: list[Occurrence] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Timelines
# ---------------------------------------------------------------------------------------
def _event_duration(cfg: SynthConfig, rng: np.random.Generator, video_s: float) -> float:
    kind = rng.choice(
        4,
        p=np.array([cfg.p_short, cfg.p_medium, cfg.p_long, cfg.p_whole])
        / (cfg.p_short + cfg.p_medium + cfg.p_long + cfg.p_whole),
    )
    if kind == 0:
        return float(rng.uniform(0.4, 1.5))
    if kind == 1:
        return float(rng.uniform(1.5, max(1.5, min(8.0, video_s))))  # caller clips to the video
    if kind == 2:
        return float(rng.uniform(min(8.0, video_s / 2), max(video_s / 2, min(8.0, video_s / 2) + 0.1)))
    return video_s


def _place(rng: np.random.Generator, taken: list[tuple[float, float]]) -> tuple[float, float]:
    """A position away from objects already on screen (best of a few draws)."""
    best, best_d = (0.5, 0.5), -1.0
    for _ in range(8):
        p = (float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.25, 0.75)))
        d = min((math.hypot(p[0] - q[0], p[1] - q[1]) for q in taken), default=1.0)
        if d > best_d:
            best, best_d = p, d
    return best


def _occ(rng, c, start, end, visual, audio, labelled, taken) -> Occurrence:
    x, y = _place(rng, taken)
    taken.append((x, y))
    return Occurrence(
        int(c), round(start, 3), round(end, 3), visual, audio, labelled, x, y, float(rng.uniform(0.09, 0.14))
    )


def _distractors(
    cfg: SynthConfig, rng: np.random.Generator, event_classes: np.ndarray, taken: list[tuple[float, float]], span
) -> list[Occurrence]:
    """Unlabelled visual-only then audio-only occurrences of classes without an event in the
    video; ``span()`` draws each one's (start_s, end_s)."""
    others = [c for c in range(cfg.num_classes) if c not in set(event_classes.tolist())]
    out = []
    for modality, n_max in (("visual", cfg.visual_distractors_max), ("audio", cfg.audio_distractors_max)):
        for _ in range(int(rng.integers(0, n_max + 1))):
            if not others:
                break
            c = int(rng.choice(others))
            start, end = span()
            out.append(_occ(rng, c, start, end, modality == "visual", modality == "audio", False, taken))
    return out


def plan_unav_video(cfg: SynthConfig, rng: np.random.Generator, video_id: str, subset: str) -> VideoPlan:
    duration = round(float(rng.uniform(cfg.min_duration_s, cfg.max_duration_s)), 2)
    n_events = int(rng.integers(cfg.events_min, cfg.events_max + 1))
    classes = rng.choice(cfg.num_classes, size=min(n_events, cfg.num_classes), replace=False)
    taken: list[tuple[float, float]] = []
    occs = []
    for c in classes:
        length = min(_event_duration(cfg, rng, duration), duration)
        start = 0.0 if length >= duration else float(rng.uniform(0, duration - length))
        occs.append(_occ(rng, c, start, start + length, True, True, True, taken))

    def span() -> tuple[float, float]:
        length = min(float(rng.uniform(0.5, 6.0)), duration)
        start = float(rng.uniform(0, duration - length))
        return start, start + length

    occs += _distractors(cfg, rng, classes, taken, span)
    return VideoPlan(video_id, duration, subset, occs)


def plan_ave_video(cfg: SynthConfig, rng: np.random.Generator, video_id: str, subset: str) -> VideoPlan:
    duration = 10.0
    n_rows = 2 if rng.uniform() < cfg.second_row_fraction and cfg.num_classes > 1 else 1
    classes = rng.choice(cfg.num_classes, size=n_rows, replace=False)
    taken: list[tuple[float, float]] = []
    occs = []
    for c in classes:
        start = int(rng.integers(0, 10))
        end = int(rng.integers(start + 1, 11))
        if rng.uniform() < cfg.p_whole * 3:
            start, end = 0, 10
        occs.append(_occ(rng, c, float(start), float(end), True, True, True, taken))
    occs += _distractors(cfg, rng, classes, taken, lambda: _ave_distractor_span(rng))
    return VideoPlan(video_id, duration, subset, occs)


def _ave_distractor_span(rng: np.random.Generator) -> tuple[float, float]:
    start = float(rng.uniform(0, 8))
    return start, float(min(10.0, start + rng.uniform(1.0, 4.0)))


def plan_ave_background_video(cfg: SynthConfig, rng: np.random.Generator, video_id: str) -> VideoPlan:
    """An extra background clip (10 s): no labelled event, distractors of any class drawn as in
    :func:`plan_ave_video` (same counts and spans), so it looks like the background segments of
    the annotated videos. Subset ``"background"`` (in no split)."""
    occs = _distractors(cfg, rng, np.zeros(0, np.int64), [], lambda: _ave_distractor_span(rng))
    return VideoPlan(video_id, 10.0, "background", occs)


def plan_dataset(cfg: SynthConfig) -> tuple[list[ClassSignature], list[VideoPlan]]:
    """Class signatures and every video's timeline, deterministic for ``cfg.seed``."""
    sigs = make_signatures(cfg.num_classes, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_train = int(round(cfg.split[0] * cfg.videos))
    n_val = int(round(cfg.split[1] * cfg.videos))
    subsets = ["train"] * n_train + ["validation"] * n_val + ["test"] * (cfg.videos - n_train - n_val)
    subsets = [subsets[i] for i in rng.permutation(cfg.videos)]
    plans = []
    for i in range(cfg.videos):
        # Ids exercise the awkward cases of the real data: a leading '-' or '_' on some.
        prefix = "-" if i % 7 == 3 else ("_" if i % 11 == 5 else "")
        vid = f"{prefix}syn{cfg.seed:03d}{i:05d}"
        vrng = np.random.default_rng([cfg.seed, i])
        planner = plan_unav_video if cfg.kind == "unav100" else plan_ave_video
        plans.append(planner(cfg, vrng, vid, subsets[i]))
    for j in range(cfg.background_videos):  # after the annotated videos: their plans do not change
        plans.append(
            plan_ave_background_video(cfg, np.random.default_rng([cfg.seed, 2, j]), f"bg{cfg.seed:03d}{j:05d}")
        )
    return sigs, plans


def class_names(sigs: list[ClassSignature], seed: int) -> list[str]:
    """Class names in label_id order; ids are deliberately not alphabetical (like UnAV-100)."""
    names = [s.name for s in sigs]
    if len(names) > 2 and names == sorted(names):
        names = names[1:] + names[:1]
    return names


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------
def render_audio(plan: VideoPlan, sigs: list[ClassSignature], cfg: SynthConfig) -> np.ndarray:
    """Mono float32 waveform of the whole video."""
    sr = cfg.sample_rate
    n = int(round(plan.duration_s * sr))
    rng = np.random.default_rng([cfg.seed, 1, zlib.crc32(plan.video_id.encode())])
    white = rng.standard_normal(n).astype(np.float32)
    noise = np.convolve(white, np.ones(4, np.float32) / 4, mode="same")  # slightly coloured
    background = 0.02 * noise / (noise.std() + 1e-9)
    level = 0.02 * 10 ** (cfg.event_snr_db / 20)
    out = background
    for occ in plan.occurrences:
        if not occ.audio:
            continue
        a, b = int(round(occ.start_s * sr)), min(n, int(round(occ.end_s * sr)))
        if b <= a:
            continue
        s = render_sound(sigs[occ.class_index], b - a, sr, rng, phase_s=occ.start_s)
        out[a:b] += level * s * fade(b - a, sr)
    peak = np.abs(out).max()
    if peak > 0.99:
        out *= 0.99 / peak
    return out.astype(np.float32)


def render_frames(plan: VideoPlan, sigs: list[ClassSignature], cfg: SynthConfig):
    """Yield uint8 ``H x W x 3`` frames of the whole video."""
    size, fps = cfg.size, cfg.fps
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rng = np.random.default_rng([cfg.seed, 2, zlib.crc32(plan.video_id.encode())])
    base_hue = rng.uniform(0, 1)
    n_frames = int(round(plan.duration_s * fps))
    grain = rng.integers(-6, 7, size=(8, size, size, 1), dtype=np.int16)
    visual = [o for o in plan.occurrences if o.visual]
    for k in range(n_frames):
        t = k / fps
        phase = 2 * math.pi * (base_hue + 0.05 * t)
        g = 0.5 + 0.5 * np.sin(phase + (xx + yy) / (2.0 * size) * math.pi)
        frame = np.empty((size, size, 3), np.float32)
        frame[..., 0] = 70 + 40 * g
        frame[..., 1] = 75 + 30 * g
        frame[..., 2] = 80 + 35 * (1 - g)
        for occ in visual:
            if not occ.start_s <= t < occ.end_s:
                continue
            sig = sigs[occ.class_index]
            dx, dy, scale = motion_offset(sig.motion, t - occ.start_s, amplitude=0.15 * size)
            mask = shape_mask(sig.shape, xx, yy, occ.x * size + dx, occ.y * size + dy, occ.radius * size * scale)
            frame[mask] = sig.color_rgb
        frame = frame.astype(np.int16) + grain[k % len(grain)]
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames, audio: np.ndarray, cfg: SynthConfig) -> None:
    """Encode frames (H.264) and audio (AAC mono) into ``path`` atomically."""
    import av

    def encode(tmp: Path) -> None:
        container = av.open(str(tmp), "w")
        try:
            vs = container.add_stream("libx264", rate=cfg.fps)
            vs.width = vs.height = cfg.size
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(cfg.crf), "preset": "ultrafast"}
            vs.thread_count = 1
            a = container.add_stream("aac", rate=cfg.sample_rate)
            a.layout = "mono"
            for frame in frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in vs.encode():
                container.mux(packet)
            step = 1024
            for k in range(0, len(audio), step):
                af = av.AudioFrame.from_ndarray(audio[None, k : k + step], format="fltp", layout="mono")
                af.sample_rate = cfg.sample_rate
                af.pts, af.time_base = k, fractions.Fraction(1, cfg.sample_rate)
                for packet in a.encode(af):
                    container.mux(packet)
            for packet in a.encode():
                container.mux(packet)
        finally:
            container.close()

    atomic_write(path, encode, durable=False)  # a rerun regenerates videos


# ---------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------
def annotation_set(cfg: SynthConfig, sigs: list[ClassSignature], plans: list[VideoPlan]) -> AnnotationSet:
    names = class_names(sigs, cfg.seed)
    label_of = {s.index: names.index(s.name) for s in sigs}
    if cfg.kind == "unav100":
        samples = []
        for p in plans:
            events = sorted((o for o in p.occurrences if o.labelled), key=lambda o: (o.start_s, o.class_index))
            segs = [Segment(o.start_s, o.end_s, sigs[o.class_index].name, label_of[o.class_index]) for o in events]
            samples.append(Sample(p.video_id, p.video_id, p.duration_s, p.subset, segs))
        return AnnotationSet("unav100", names, samples)
    # AVE files carry no label ids: readers number classes by first appearance in row order,
    # so the generator does the same (classes that never occur are appended after them).
    rows = [(p, o) for p in plans for o in p.occurrences if o.labelled]
    order = list(dict.fromkeys(sigs[o.class_index].name for _, o in rows))
    order += [n for n in names if n not in order]
    samples = []
    for row, (p, o) in enumerate(rows):
        name = sigs[o.class_index].name
        seg = Segment(o.start_s, o.end_s, name, order.index(name))
        samples.append(Sample(f"row-{row:04d}", p.video_id, 10.0, p.subset, [seg], {"row": row, "quality": "good"}))
    return AnnotationSet("ave", order, samples, background_id=len(order))


def generate(
    cfg: SynthConfig, out_dir: str | os.PathLike, *, workers: int = 1, progress: Callable[[int], object] | None = None
) -> AnnotationSet:
    """Write ``out_dir/videos/<id>.mp4``, the annotation files, ``synth.json`` and (with
    ``background_videos``) ``background_videos.txt``; ``progress`` gets the number of videos
    done (annotated plus background)."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for stale in (out / "videos").glob(".*.tmp.mp4"):  # left by an interrupted run
        stale.unlink()
    sigs, plans = plan_dataset(cfg)
    ann = annotation_set(cfg, sigs, plans)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for n, _ in enumerate(pool.imap_unordered(_render_one, [(cfg, sigs, p, out) for p in plans]), 1):
                if progress:
                    progress(n)
    else:
        for n, p in enumerate(plans, 1):
            _render_one((cfg, sigs, p, out))
            if progress:
                progress(n)
    if cfg.kind == "unav100":
        from avel.datasets.unav100 import write_unav100

        write_unav100(ann, out / "unav100_annotations.json")
    else:
        from avel.datasets.ave import write_ave

        write_ave(ann, out)
        background = [p.video_id for p in plans if p.subset == "background"]
        if background:
            (out / "background_videos.txt").write_text("".join(f"{v}\n" for v in background))
    meta = {
        "config": {**asdict(cfg), "split": list(cfg.split)},
        "classes": [s.to_dict() for s in sigs],
        "label_ids": {s.name: ann.classes.index(s.name) for s in sigs},
        "videos": {
            p.video_id: {
                "duration_s": p.duration_s,
                "subset": p.subset,
                "occurrences": [asdict(o) for o in p.occurrences],
            }
            for p in plans
        },
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=1))
    return ann


def _render_one(args) -> None:
    cfg, sigs, plan, out = args
    audio = render_audio(plan, sigs, cfg)
    write_mp4(out / "videos" / f"{plan.video_id}.mp4", render_frames(plan, sigs, cfg), audio, cfg)
