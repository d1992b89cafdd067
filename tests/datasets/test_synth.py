"""The synthetic benchmark writes real, decodable mp4 files whose content matches the annotations."""

from __future__ import annotations

import hashlib
import json

import decord
import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.ave import load_ave
from avel.datasets.synth import SynthConfig, generate
from avel.datasets.unav100 import load_unav100

TINY = dict(videos=4, size=64, min_duration_s=3.0, max_duration_s=6.0, num_classes=4)


@pytest.fixture(scope="module")
def unav_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_unav")
    generate(SynthConfig(kind="unav100", seed=3, **TINY), out)
    return out


def _band_power(x: np.ndarray, sr: int, f: float) -> float:
    """Mean power per sample within +-20% of ``f``."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return float(spec[np.abs(freqs - f) < 0.2 * f].sum() / len(x))


def test_videos_decode_with_expected_frames_and_audio(unav_dir):
    meta = json.loads((unav_dir / "synth.json").read_text())
    ann = load_unav100(unav_dir / "unav100_annotations.json")
    assert len(ann) == 4 and ann.num_classes == 4
    for s in ann:
        path = unav_dir / "videos" / f"{s.video_id}.mp4"
        vr = decord.VideoReader(str(path))
        assert len(vr) == round(s.duration_s * 25)
        assert vr[0].shape == (64, 64, 3)
        audio = decord.AudioReader(str(path), sample_rate=16000, mono=True)[:].asnumpy()[0]
        # AAC works in 1024-sample frames: the last one is decoded with its (silent) padding
        assert 0 <= len(audio) - round(s.duration_s * 16000) < 1024
        assert np.abs(audio[round(s.duration_s * 16000) :]).max(initial=0) < 0.01
        assert meta["videos"][s.video_id]["duration_s"] == s.duration_s


def test_sound_and_object_present_exactly_where_annotated(unav_dir):
    meta = json.loads((unav_dir / "synth.json").read_text())
    sigs = meta["classes"]
    checked_in = checked_out = 0
    for vid, info in meta["videos"].items():
        path = str(unav_dir / "videos" / f"{vid}.mp4")
        audio = decord.AudioReader(path, sample_rate=16000, mono=True)[:].asnumpy()[0]
        vr = decord.VideoReader(path)
        occ = info["occurrences"]
        for o in occ:
            if not o["labelled"] or o["end_s"] - o["start_s"] < 0.5:
                continue
            sig = sigs[o["class_index"]]
            mid = (o["start_s"] + o["end_s"]) / 2
            a = int((mid - 0.2) * 16000)
            inside = _band_power(audio[a : a + 6400], 16000, sig["freq_hz"])
            checked_in += 1
            # the class's band is >5x louder inside the event than where its sound is off
            # (other classes' sounds lie in other bands)
            quiet = [
                t
                for t in np.arange(0.0, info["duration_s"] - 0.4, 0.2)
                if not any(
                    p["audio"] and p["class_index"] == o["class_index"] and p["start_s"] - 0.3 <= t <= p["end_s"] + 0.1
                    for p in occ
                )
            ]
            for t in quiet[:2]:
                b = int(t * 16000)
                assert inside > 5 * _band_power(audio[b : b + 6400], 16000, sig["freq_hz"]), (vid, o, t)
                checked_out += 1
            # the object's colour covers pixels inside the event
            frame = vr[int(mid * 25)].asnumpy().astype(int)
            close = np.abs(frame - np.array(sig["color_rgb"])).sum(-1) < 60
            assert close.sum() > 30, (vid, o)
    assert checked_in >= 3 and checked_out >= 1


def test_no_object_colour_where_nothing_is_visible(tmp_path):
    # one short event per video, no visual distractors: most frames show only the background
    cfg = SynthConfig(
        kind="unav100",
        seed=6,
        videos=2,
        size=64,
        min_duration_s=4.0,
        max_duration_s=4.0,
        num_classes=6,
        events_max=1,
        p_short=1.0,
        p_medium=0.0,
        p_long=0.0,
        p_whole=0.0,
        visual_distractors_max=0,
    )
    generate(cfg, tmp_path)
    unav_dir = tmp_path
    meta = json.loads((unav_dir / "synth.json").read_text())
    colours = np.array([c["color_rgb"] for c in meta["classes"]])  # K x 3
    checked = 0
    for vid, info in meta["videos"].items():
        vr = decord.VideoReader(str(unav_dir / "videos" / f"{vid}.mp4"))
        for k in range(0, len(vr), 10):
            t = k / 25
            if any(o["visual"] and o["start_s"] - 0.1 <= t <= o["end_s"] + 0.1 for o in info["occurrences"]):
                continue
            frame = vr[k].asnumpy().astype(int)  # H x W x 3
            dist = np.abs(frame[:, :, None, :] - colours[None, None]).sum(-1)  # H x W x K
            assert (dist < 60).sum() < 5, (vid, t)
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("kind", ["unav100", "ave"])
def test_occurrences_fit_short_and_long_videos(kind):
    from avel.datasets.synth import plan_dataset

    for d in (0.3, 1.0, 1.6, 40.0) if kind == "unav100" else (10.0,):
        cfg = SynthConfig(kind=kind, videos=30, seed=1, min_duration_s=d, max_duration_s=d)
        _, plans = plan_dataset(cfg)
        assert all(0 <= o.start_s < o.end_s <= p.duration_s + 1e-9 for p in plans for o in p.occurrences), d
        assert all(cfg.events_min <= sum(o.labelled for o in p.occurrences) for p in plans)
        assert {p.subset for p in plans} == {"train", "validation", "test"}


def test_deterministic_for_a_seed(tmp_path, unav_dir):
    generate(SynthConfig(kind="unav100", seed=3, **TINY), tmp_path / "again")
    a = (unav_dir / "unav100_annotations.json").read_bytes()
    assert (tmp_path / "again" / "unav100_annotations.json").read_bytes() == a
    vid = load_unav100(unav_dir / "unav100_annotations.json").samples[0].video_id

    def digest(root):
        vr = decord.VideoReader(str(root / "videos" / f"{vid}.mp4"))
        au = decord.AudioReader(str(root / "videos" / f"{vid}.mp4"), sample_rate=16000, mono=True)
        return hashlib.sha256(
            vr.get_batch(list(range(0, len(vr), 7))).asnumpy().tobytes() + au[:].asnumpy().tobytes()
        ).hexdigest()

    assert digest(tmp_path / "again") == digest(unav_dir)
    generate(SynthConfig(kind="unav100", seed=4, **TINY), tmp_path / "other")
    assert (tmp_path / "other" / "unav100_annotations.json").read_bytes() != a


def test_events_distractors_and_ids(tmp_path):
    cfg = SynthConfig(kind="unav100", seed=0, videos=40, num_classes=10)
    from avel.datasets.synth import plan_dataset

    sigs, plans = plan_dataset(cfg)
    occ = [o for p in plans for o in p.occurrences]
    events = [o for o in occ if o.labelled]
    assert any(not o.audio for o in occ) and any(not o.visual for o in occ)  # single-modality distractors
    assert all(o.visual and o.audio for o in events)
    lengths = [o.end_s - o.start_s for o in events]
    assert min(lengths) < 1.0 and any(
        abs(o.end_s - o.start_s - p.duration_s) < 1e-6 for p in plans for o in p.occurrences if o.labelled
    )
    overlapping = sum(
        1
        for p in plans
        for a in p.occurrences
        for b in p.occurrences
        if a is not b and a.labelled and b.labelled and a.start_s < b.end_s and b.start_s < a.end_s
    )
    assert overlapping > 0
    for p in plans:  # distractors never share a class with an event of the same video
        ev = {o.class_index for o in p.occurrences if o.labelled}
        assert not any(o.class_index in ev for o in p.occurrences if not o.labelled)
    assert any(p.video_id.startswith("-") for p in plans) and any(p.video_id.startswith("_") for p in plans)


def test_ave_format_via_cli(tmp_path):
    res = CliRunner().invoke(
        cli, ["synth", "ave", "--out", str(tmp_path), "--videos", "6", "--seed", "1", "--classes", "3", "--size", "64"]
    )
    assert res.exit_code == 0, res.output
    ann = load_ave(tmp_path / "Annotations.txt")
    assert len(ann.video_ids()) == 6 and ann.background_id == ann.num_classes
    meta = json.loads((tmp_path / "synth.json").read_text())
    assert meta["label_ids"] == {c: ann.classes.index(c) for c in meta["label_ids"] if c in ann.classes}
    for s in ann:
        (seg,) = s.segments
        assert float(seg.start_s).is_integer() and float(seg.end_s).is_integer() and 0 <= seg.start_s < seg.end_s <= 10
    vr = decord.VideoReader(str(tmp_path / "videos" / f"{ann.samples[0].video_id}.mp4"))
    assert len(vr) == 250
    assert (tmp_path / "Annotations.txt").read_text().startswith("Category&VideoID&Quality&StartTime&EndTime")


def test_label_ids_not_alphabetical_and_names_unique(unav_dir):
    ann = load_unav100(unav_dir / "unav100_annotations.json")
    assert ann.classes != sorted(ann.classes) and len(set(ann.classes)) == len(ann.classes)
    from avel.datasets.synth.signatures import make_signatures

    for n in (10, 28, 36):
        sigs = make_signatures(n, seed=0)
        assert len({s.name for s in sigs}) == n
        assert len({(s.timbre, s.freq_hz) for s in sigs}) == n and len({s.color_rgb for s in sigs}) == n


def test_ave_second_rows_are_other_classes_and_load_back(tmp_path):
    from avel.datasets.ave import write_ave
    from avel.datasets.synth import plan_dataset
    from avel.datasets.synth.generate import annotation_set

    cfg = SynthConfig(kind="ave", seed=2, videos=10, num_classes=5, second_row_fraction=1.0)
    sigs, plans = plan_dataset(cfg)
    ann = annotation_set(cfg, sigs, plans)
    write_ave(ann, tmp_path)
    back = load_ave(tmp_path / "Annotations.txt")
    assert len(back) == 20 and len(back.video_ids()) == 10
    for vid in back.video_ids():
        rows = [s for s in back if s.video_id == vid]
        assert len(rows) == 2 and rows[0].segments[0].label != rows[1].segments[0].label
    assert [(s.video_id, s.segments[0].label, s.segments[0].start_s, s.segments[0].end_s) for s in back] == [
        (s.video_id, s.segments[0].label, s.segments[0].start_s, s.segments[0].end_s) for s in ann
    ]


def test_stale_temp_files_removed_and_no_temp_left(tmp_path):
    stale = tmp_path / "videos" / ".old.mp4.123.tmp.mp4"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"truncated")
    generate(
        SynthConfig(kind="unav100", seed=5, videos=1, size=32, min_duration_s=1.0, max_duration_s=1.0, num_classes=2),
        tmp_path,
    )
    files = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert len(files) == 1 and files[0].endswith(".mp4") and not files[0].startswith(".")


@pytest.mark.parametrize(
    "args, message",
    [
        (["ave", "--classes", "30"], "1..28"),
        (["unav100", "--size", "63"], "even"),
        (["unav100", "--min-duration-s", "5", "--max-duration-s", "2"], "min_duration_s"),
    ],
)
def test_cli_bad_settings_are_usage_errors(tmp_path, args, message):
    res = CliRunner().invoke(cli, ["synth", *args, "--out", str(tmp_path / "o"), "--videos", "1"])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "o").exists()


def test_workers_give_identical_videos(tmp_path):
    cfg = SynthConfig(kind="ave", seed=8, videos=3, size=32, num_classes=3)
    generate(cfg, tmp_path / "one")
    generate(cfg, tmp_path / "two", workers=2)
    assert (tmp_path / "one" / "Annotations.txt").read_text() == (tmp_path / "two" / "Annotations.txt").read_text()
    for path in sorted((tmp_path / "one" / "videos").iterdir()):
        a = decord.VideoReader(str(path)).get_batch([0, 120, 249]).asnumpy()
        b = decord.VideoReader(str(tmp_path / "two" / "videos" / path.name)).get_batch([0, 120, 249]).asnumpy()
        assert np.array_equal(a, b), path.name


def test_decoded_audio_is_sample_aligned_with_the_render(unav_dir):
    from avel.datasets.synth import plan_dataset
    from avel.datasets.synth.generate import render_audio

    cfg = SynthConfig(kind="unav100", seed=3, **TINY)
    sigs, plans = plan_dataset(cfg)
    plan = plans[0]
    ref = render_audio(plan, sigs, cfg)  # what was encoded
    got = decord.AudioReader(str(unav_dir / "videos" / f"{plan.video_id}.mp4"), sample_rate=16000, mono=True)[
        :
    ].asnumpy()[0]
    n = len(ref) - 2000
    corr = {lag: np.corrcoef(ref[1000:n], got[1000 + lag : n + lag])[0, 1] for lag in (-2, -1, 0, 1, 2)}
    assert max(corr, key=corr.get) == 0 and corr[0] > 0.99, corr


def test_ave_background_videos_are_event_free_and_listed(tmp_path):
    from avel.datasets.synth import plan_dataset

    base = SynthConfig(kind="ave", seed=4, videos=20, num_classes=5)
    with_bg = SynthConfig(kind="ave", seed=4, videos=20, num_classes=5, background_videos=30)
    plans, plans_bg = plan_dataset(base)[1], plan_dataset(with_bg)[1]
    assert plans_bg[:20] == plans  # the annotated videos do not change
    background = plans_bg[20:]
    assert [p.video_id for p in background] == [f"bg004{j:05d}" for j in range(30)]
    assert all(p.subset == "background" and p.duration_s == 10.0 for p in background)
    occ = [o for p in background for o in p.occurrences]
    assert not any(o.labelled for o in occ) and all(0 <= o.start_s < o.end_s <= 10.0 for o in occ)
    assert any(o.visual and not o.audio for o in occ) and any(o.audio and not o.visual for o in occ)
    with pytest.raises(ValueError, match="background_videos"):
        SynthConfig(kind="unav100", background_videos=1)

    res = CliRunner().invoke(
        cli,
        [
            "synth",
            "ave",
            "--out",
            str(tmp_path),
            "--videos",
            "2",
            "--seed",
            "4",
            "--classes",
            "3",
            "--size",
            "32",
            "--background-videos",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    ids = (tmp_path / "background_videos.txt").read_text().split()
    assert ids == ["bg00400000", "bg00400001"]
    ann = load_ave(tmp_path / "Annotations.txt")
    assert not set(ids) & set(ann.video_ids()) and len(ann.video_ids()) == 2
    meta = json.loads((tmp_path / "synth.json").read_text())
    for vid in ids:
        assert meta["videos"][vid]["subset"] == "background"
        assert len(decord.VideoReader(str(tmp_path / "videos" / f"{vid}.mp4"))) == 250
